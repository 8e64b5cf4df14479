"""One set of defaults and choices for Python and the command line; options checked before any work."""

import dataclasses
import inspect
import subprocess
import sys
from typing import get_args

import pytest
import typer

from changescope.change.score import ChangeScorer
from changescope.cli.app import app
from changescope.config import DiscoverConfig, EmbedConfig, RunConfig, ScoreConfig
from changescope.errors import ParameterError
from changescope.types import Method, RankBy, Reference, choices

CLI_ONLY = {"input", "out", "run_dir", "quiet", "no_report", "embeddings", "fdr", "threshold"}
READER_FLAGS = {"reproject", "align", "date", "city", "drop_incomplete"}


def _params(command: str) -> dict[str, object]:
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params}


@pytest.mark.parametrize(
    ("command", "stages"),
    [("run", (EmbedConfig, ScoreConfig, DiscoverConfig)), ("score", (ScoreConfig,)), ("discover", (DiscoverConfig,))],
)
def test_cli_defaults_are_the_python_defaults(command, stages):
    params = _params(command)
    python = {}
    for cls in stages:
        python.update(dataclasses.asdict(cls()))
    checked = 0
    for name, param in params.items():
        if name in CLI_ONLY or name in READER_FLAGS:
            continue
        if name in python:
            assert param.default == python[name], (command, name)
            checked += 1
        else:
            assert name in ("format", "aoi") and command == "run", f"{command} --{name} is no configuration option"
    assert checked >= 5
    assert str(params["threshold"].default) == str(ScoreConfig().threshold) if "threshold" in params else True


def test_cli_choices_come_from_the_literal_aliases():
    from typer.testing import CliRunner

    text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "250"}).output
    for alias in (Method, Reference, RankBy):
        assert "|".join(choices(alias)) in text, alias
    bad = CliRunner().invoke(app, ["run", "x", "--method", "bogus"])
    assert bad.exit_code == 2 and "bogus" in bad.output


def test_change_scorer_defaults_are_the_score_defaults():
    sig = inspect.signature(ChangeScorer)
    cfg = ScoreConfig()
    for name in ("method", "reference", "k", "n_neighbors", "metric", "context", "n_peers", "standardize"):
        assert sig.parameters[name].default == getattr(cfg, name), name


def test_run_config_routes_flat_options_and_reads_them_back():
    cfg = RunConfig(patch_size=16, method="lof", cluster="kmeans", seed=4, aoi="a")
    assert cfg.embed.patch_size == 16 and cfg.score.method == "lof" and cfg.discover.cluster == "kmeans"
    assert cfg.patch_size == 16 and cfg.seed == 4 and cfg.aoi == "a"
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert RunConfig.from_json({**cfg.flat(), "extra": {}}) == cfg
    assert cfg.replace(k=5).score.k == 5 and cfg.replace(k=5).embed == cfg.embed
    with pytest.raises(ParameterError, match="not a run option"):
        RunConfig(patch_sise=3)


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"method": "lofx"}, "--method"),
        ({"threshold": "nope"}, "--threshold"),
        ({"cluster": "dbscan"}, "--cluster"),
        ({"patch_size": 0}, "--patch-size"),
        ({"min_valid": 1.5}, "--min-valid"),
        ({"false_alarms": -1.0}, "--false-alarms"),
        ({"fdr": 0.0}, "--fdr"),
        ({"rank_weight": 2.0}, "--rank-weight"),
        ({"device": "tpu"}, "--device"),
        ({"context": "both"}, "--context"),
    ],
)
def test_bad_options_fail_at_once_naming_the_flag(options, flag):
    with pytest.raises(ParameterError) as err:
        RunConfig(**options)
    message = str(err.value)
    assert flag in message and "\n" not in message


def test_every_choice_is_a_literal():
    for alias in (Method, Reference, RankBy):
        assert choices(alias) == get_args(alias)
    with pytest.raises(TypeError):
        choices(int)


def test_import_changescope_loads_neither_torch_nor_dask():
    code = (
        "import sys, changescope, changescope.cli.app, changescope.config\n"
        "heavy = [m for m in ('torch', 'dask', 'xarray', 'rasterio', 'pandas') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert "torch" not in out and "dask" not in out, out
