"""The ``changescope synth`` command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

import changescope
from changescope.cli.app import app, main
from changescope.errors import ParameterError
from changescope.io.writers import write_geotiff
from changescope.synthetic import PairNuisances, read_pair, series_from_pair
from changescope.testing import TEST_CRS, utm_transform

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


# ------------------------------------------------------------------------------------------- synth --from-pair


def _pair_files(folder: Path) -> tuple[Path, Path, Path, np.ndarray]:
    """A seeded 64x64, 4-band uint16 pair (a bright block appears) and its 0/255 change mask as files."""
    rng = np.random.default_rng(11)
    before = 800 + 2500 * gaussian_filter(rng.random((4, 64, 64)), (0, 3, 3))
    after = before.copy()
    after[:, 10:30, 34:50] = 3500
    change = np.zeros((64, 64), dtype=np.uint8)
    change[10:30, 34:50] = 255
    kw = {"crs": TEST_CRS, "transform": utm_transform(), "descriptions": ["blue", "green", "red", "nir"]}
    b = write_geotiff(folder / "before.tif", before.astype(np.uint16), **kw)
    a = write_geotiff(folder / "after.tif", after.astype(np.uint16), **kw)
    m = write_geotiff(folder / "mask.tif", change, crs=TEST_CRS, transform=utm_transform())
    return b, a, m, change > 0


def test_synth_from_pair_round_trip(tmp_path: Path) -> None:
    before, after, mask, changed = _pair_files(tmp_path)
    out = tmp_path / "series"
    args = ["synth", str(out), "--from-pair", str(before), str(after), "--mask", str(mask)]
    result = runner.invoke(app, [*args, "--dates", "8", "--change-month", "3", "--cloud-dates", "0.5", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "change on 2020-04-01" in result.output and f"{int(changed.sum())} changed pixels" in result.output
    assert len(result.output.strip().splitlines()) == 1
    ds = changescope.open(out)
    assert ds.attrs["format"] == "geotiff_folder"
    assert ds.sizes["time"] == 8 and list(ds["band"].values) == ["blue", "green", "red", "nir"]
    assert str(pd.Timestamp(ds["time"].values[0]).date()) == "2020-01-01"
    labels = np.asarray(ds["labels"].values)
    assert (labels[:3] == 0).all()
    for t in range(3, 8):
        np.testing.assert_array_equal(labels[t] == 1, changed)
    log = json.loads((out / "from_pair.json").read_text())
    assert log["before"] == str(before) and log["nuisances"]["gain"] == PairNuisances().gain
    valid = np.asarray(ds["valid"].values)
    cloudy = [t for t, d in enumerate(log["dates"]) if d["cloud_fraction"] > 0]
    assert len(cloudy) == 4 and 3 not in cloudy
    assert [t for t in range(8) if not valid[t].all()] == cloudy
    expected = series_from_pair(
        read_pair(before, after, mask),
        dates=8,
        change_month=3,
        nuisances=replace(PairNuisances(), cloud_dates=0.5),
        seed=2,
    )
    np.testing.assert_array_equal(valid, expected["valid"].values)
    np.testing.assert_array_equal(np.asarray(ds["image"].values), expected["image"].values)


def test_synth_from_pair_no_change_and_nuisance_flags(tmp_path: Path) -> None:
    before, after, mask, _ = _pair_files(tmp_path)
    out = tmp_path / "control"
    off = ["--gain", "0", "--offset", "0", "--haze", "0", "--shift", "0", "--noise", "0", "--season", "0"]
    args = ["synth", str(out), "--from-pair", str(before), str(after), "--mask", str(mask), "--no-change", "-q"]
    result = runner.invoke(app, [*args, *off, "--cloud-dates", "0", "--dates", "5", "--change-month", "2"])
    assert result.exit_code == 0, result.output
    ds = changescope.open(out)
    assert (np.asarray(ds["labels"].values) == 0).all()
    assert np.asarray(ds["valid"].values).all()
    with rasterio.open(before) as src:
        clean = src.read().astype(np.float32) * np.float32(1e-4)
    for t in range(5):
        np.testing.assert_array_equal(np.asarray(ds["image"].values[t]), clean)
    again = runner.invoke(app, [*args, "--dates", "5", "--change-month", "2"])
    assert isinstance(again.exception, ParameterError) and "--overwrite" in str(again.exception)
    assert runner.invoke(app, [*args, "--dates", "5", "--change-month", "2", "--overwrite"]).exit_code == 0
    assert len(list(out.glob("*.mask.tif"))) == 5


@pytest.mark.parametrize("case", ["missing", "grid", "no_mask", "dates", "gain"])
def test_synth_from_pair_bad_input_is_one_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    before, after, mask, _ = _pair_files(tmp_path)
    pair = [str(before), str(after)]
    extra = ["--mask", str(mask)]
    if case == "missing":
        pair[1] = str(tmp_path / "nope.tif")
    elif case == "grid":
        moved = utm_transform(x0=700_000.0)
        pair[1] = str(
            write_geotiff(tmp_path / "far.tif", np.ones((4, 64, 64), np.uint16), crs=TEST_CRS, transform=moved)
        )
    elif case == "no_mask":
        extra = []
    elif case == "dates":
        extra += ["--dates", "1"]
    else:
        extra += ["--gain", "-0.2"]
    with pytest.raises(SystemExit) as stop:
        main(["synth", str(tmp_path / "out"), "--from-pair", *pair, *extra])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 1
    assert err.startswith("error:") and "Traceback" not in err
    word = {"missing": "nope.tif", "grid": "far.tif", "no_mask": "--mask", "dates": "dates=1", "gain": "gain=-0.2"}
    assert word[case] in err
    assert not (tmp_path / "out").exists()
