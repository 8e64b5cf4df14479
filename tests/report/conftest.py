"""A small finished run shared by the report tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from changescope.run import RunConfig, run_pipeline
from changescope.synthetic import make_aoi


def build_run(root: Path) -> Path:
    """A 192 px, 8-date synthetic AOI (seed 3) and a distance run over it; returns the run folder."""
    make_aoi(root / "aoi", seed=3, size=192, months=8)
    run_dir = root / "run"
    run_pipeline(
        root / "aoi", run_dir, RunConfig(method="distance", threshold="otsu"), progress=False
    )  # many events for the gallery
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run, fresh for each test module."""
    return build_run(tmp_path_factory.mktemp("report-run"))
