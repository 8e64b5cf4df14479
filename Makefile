# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint typecheck bench clean web

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,stac,explore,s3]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/changescope demo --out demo_out

# The whole suite, slow tests included.
test: $(STAMP)
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# The quick inner loop: slow tests deselected.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check changescope tests benchmarks
	$(BIN)/ruff format --check changescope tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)  # the quick benchmarks (minutes); detection_quality, ssl_comparison, embed_memory and search_latency take longer
	$(BIN)/python benchmarks/synth_speed.py
	$(BIN)/python benchmarks/score_throughput.py
	$(BIN)/python benchmarks/peer_scaling.py

# Rebuild the web app's bundle (changescope/serve/static/, committed) from web/; needs Node 18+ and npm.
web:
	cd web && npm ci && npm run build

clean:
	rm -rf $(VENV) demo_out .mypy_cache .ruff_cache .pytest_cache
