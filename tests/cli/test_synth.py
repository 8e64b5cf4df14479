"""The ``changescope synth`` command."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from typer.testing import CliRunner

from changescope.cli.app import app, main
from changescope.errors import ParameterError

runner = CliRunner()


def test_synth_writes_an_aoi(tmp_path: Path) -> None:
    out = tmp_path / "den"
    result = runner.invoke(
        app, ["synth", str(out), "--seed", "3", "--size", "64", "--months", "4", "--aoi", "aoi_0042"]
    )
    assert result.exit_code == 0, result.output
    pfsr = out / "planet" / "synth" / "0000" / "aoi_0042" / "PF-SR"
    assert sorted(p.name for p in pfsr.glob("*.tif") if not p.name.endswith(".mask.tif")) == [
        "2018-01-01.tif",
        "2018-02-01.tif",
        "2018-03-01.tif",
        "2018-04-01.tif",
    ]
    assert (pfsr / "2018-04-01.mask.tif").exists()
    assert (out / "labels" / "aoi_0042_synth" / "Labels" / "Raster" / "synth-aoi_0042").is_dir()
    events = gpd.read_parquet(out / "events" / "aoi_0042.parquet")
    assert len(events) >= 1
    assert "aoi_0042" in result.output


def test_synth_refuses_an_existing_aoi_unless_overwrite(tmp_path: Path) -> None:
    args = ["synth", str(tmp_path), "--size", "64", "--months", "2", "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code != 0
    assert isinstance(again.exception, ParameterError)
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


@pytest.mark.parametrize(("option", "value"), [("--size", "32"), ("--months", "1")])
def test_synth_bad_parameters(tmp_path: Path, option: str, value: str) -> None:
    result = runner.invoke(app, ["synth", str(tmp_path / "out"), option, value])
    assert result.exit_code != 0
    assert isinstance(result.exception, ParameterError)
    assert option.lstrip("-") in str(result.exception)


def test_main_turns_bad_parameters_into_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["synth", str(tmp_path / "out"), "--size", "10"])
    assert stop.value.code == 1
    assert "size=10" in capsys.readouterr().err


def test_synth_help_comes_from_the_docstring() -> None:
    result = runner.invoke(app, ["synth", "--help"])
    assert result.exit_code == 0
    assert "DynamicEarthNet" in result.output


def test_main_shows_usage_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        main(["synth"])
    err = capsys.readouterr().err
    assert missing.value.code == 2
    assert "Missing argument" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as bare:
        main([])
    assert bare.value.code == 2
    shown = capsys.readouterr()
    assert "synth" in shown.out + shown.err
