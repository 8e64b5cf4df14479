"""The ``changescope train`` command group: ``sample-locations``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from changescope.cli.app import app, main
from changescope.errors import ParameterError
from changescope.io.writers import write_geotiff
from changescope.testing import utm_transform
from changescope.train.geosample import read_locations, sample_locations

runner = CliRunner()


@pytest.fixture
def centres(tmp_path: Path) -> Path:
    path = tmp_path / "cities.csv"
    frame = pd.DataFrame({"lon": [15.0, 16.0], "lat": [45.0, 45.5], "weight": [3.0, 1.0], "name": ["a", "b"]})
    frame.to_csv(path, index=False)
    return path


def test_sample_locations_writes_geoparquet(centres: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "locations.parquet"
    result = runner.invoke(
        app, ["train", "sample-locations", str(centres), "--n", "120", "--out", str(out), "--seed", "4"]
    )
    assert result.exit_code == 0, result.output
    gdf = read_locations(out)
    assert len(gdf) == 120 and gdf.crs == "EPSG:4326"
    assert set(gdf["centre_name"]) == {"a", "b"}
    assert gdf["dates"].iloc[0] == [f"{y}-{m:02d}-01" for y in (2018, 2022) for m in (1, 4, 7, 10)]
    expected = sample_locations(centres, 120, seed=4)
    np.testing.assert_array_equal(gdf["lon"], expected["lon"])
    assert "120 locations" in result.output and "centres used" in result.output


def test_sample_locations_date_options(centres: Path, tmp_path: Path) -> None:
    out = tmp_path / "l.parquet"
    dates = "2019-03-01,2019-09-01,2023-03-01,2023-09-01"
    result = runner.invoke(
        app, ["train", "sample-locations", str(centres), "-o", str(out), "-n", "5", "--dates", dates]
    )
    assert result.exit_code == 0, result.output
    gdf = read_locations(out)
    assert gdf["dates"].iloc[0] == dates.split(",")
    assert gdf["half"].iloc[0] == ["older", "older", "recent", "recent"]
    args = ["train", "sample-locations", str(centres), "-o", str(out), "-n", "5", "--older-year", "2016"]
    result = runner.invoke(app, [*args, "--per-year", "2"])
    assert result.exit_code == 0, result.output
    assert read_locations(out)["dates"].iloc[0] == ["2016-01-01", "2016-07-01", "2022-01-01", "2022-07-01"]
    clash = runner.invoke(app, [*args, "--dates", dates])
    assert clash.exit_code != 0 and isinstance(clash.exception, ParameterError)
    assert "--dates" in str(clash.exception)


def test_sample_locations_with_a_land_mask(centres: Path, tmp_path: Path) -> None:
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    cx, cy = to_utm.transform(15.0, 45.0)
    land = np.zeros((400, 400), dtype=np.uint8)
    land[:, 200:] = 1  # east of 15° E is land
    mask = write_geotiff(
        tmp_path / "land.tif", land, crs="EPSG:32633", transform=utm_transform(500.0, cx - 100_000, cy + 100_000)
    )
    out = tmp_path / "l.parquet"
    args = ["train", "sample-locations", str(centres), "-o", str(out), "-n", "200", "--land-mask", str(mask)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    gdf = read_locations(out)
    x, _ = to_utm.transform(gdf["lon"].to_numpy(), gdf["lat"].to_numpy())
    assert (np.asarray(x) >= cx).all()
    rejected = int(gdf["draws"].sum()) - len(gdf)
    assert rejected > 0 and f"{rejected} (off land)" in result.output


def test_missing_centres_file_exits_1_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "l.parquet"
    with pytest.raises(SystemExit) as stop:
        main(["train", "sample-locations", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.csv" in err and "not found" in err
    assert not out.exists()


def test_train_help_lists_sample_locations() -> None:
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "sample-locations" in result.output
    result = runner.invoke(app, ["train", "sample-locations", "--help"])
    assert result.exit_code == 0 and "CACo" in result.output and "--land-mask" in result.output
