"""make_aoi: the exact DynamicEarthNet layout, GeoTIFF metadata, events GeoParquet, nuisance log, overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio

from changescope.errors import ParameterError
from changescope.synthetic import AoiInfo, generate_aoi, make_aoi

SIZE, MONTHS, SEED = 96, 5, 4


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> AoiInfo:
    return make_aoi(tmp_path_factory.mktemp("synth"), seed=SEED, size=SIZE, months=MONTHS, aoi="aoi_0007")


def test_exact_layout(written: AoiInfo) -> None:
    root = written.root
    days = [f"2018-{m:02d}-01" for m in range(1, MONTHS + 1)]
    pfsr = root / "planet" / "synth" / "0000" / "aoi_0007" / "PF-SR"
    labels = root / "labels" / "aoi_0007_synth" / "Labels" / "Raster" / "synth-aoi_0007"
    expected = {pfsr / f"{d}.tif" for d in days} | {pfsr / f"{d}.mask.tif" for d in days}
    expected |= {labels / f"synth-aoi_0007-{d[:7].replace('-', '_')}_01.tif" for d in days}
    expected |= {root / "events" / name for name in ("aoi_0007.parquet", "aoi_0007.geojson", "aoi_0007_nuisances.json")}
    found = {p for p in root.rglob("*") if p.is_file()}
    assert found == expected
    assert written.layout.image_dir == pfsr and written.layout.label_dir == labels


def test_images_have_crs_transform_bands_and_nodata(written: AoiInfo) -> None:
    with rasterio.open(written.layout.image_path(pd.Timestamp("2018-02-01"))) as src:
        assert src.crs.to_epsg() == 32633
        assert src.transform.a == 3.0 and src.transform.e == -3.0
        assert src.transform.b == src.transform.d == 0.0
        assert src.count == 4 and src.dtypes == ("uint16",) * 4
        assert src.descriptions == ("blue", "green", "red", "nir")
        assert src.nodata == 0
        assert (src.width, src.height) == (SIZE, SIZE)
        assert src.tags()["SEED"] == str(SEED)
    with rasterio.open(written.layout.mask_path(pd.Timestamp("2018-02-01"))) as src:
        assert src.count == 1 and src.dtypes == ("uint8",)
        assert src.crs.to_epsg() == 32633 and src.transform == written.transform


def test_labels_on_disk_are_one_hot(written: AoiInfo) -> None:
    for date in written.dates:
        with rasterio.open(written.layout.label_path(date)) as src:
            assert src.count == 7 and src.dtypes == ("uint8",) * 7
            assert src.crs.to_epsg() == 32633 and src.transform == written.transform
            assert src.descriptions[0] == "impervious surface" and src.descriptions[6] == "snow & ice"
            bands = src.read()
        assert set(np.unique(bands).tolist()) <= {0, 255}
        assert np.all((bands == 255).sum(axis=0) == 1)


def test_files_hold_exactly_the_in_memory_arrays(written: AoiInfo) -> None:
    mem = generate_aoi(seed=SEED, size=SIZE, months=MONTHS, aoi="aoi_0007")
    for t, date in enumerate(written.dates):
        with rasterio.open(written.layout.image_path(date)) as src:
            assert np.array_equal(src.read(), mem.images[t])
        with rasterio.open(written.layout.mask_path(date)) as src:
            assert np.array_equal(src.read(1), mem.masks[t])
        with rasterio.open(written.layout.label_path(date)) as src:
            assert np.array_equal(src.read().argmax(axis=0), mem.labels[t])


def test_events_geoparquet(written: AoiInfo) -> None:
    events = gpd.read_parquet(written.layout.events_path)
    assert events.crs.to_epsg() == 32633
    assert {"event_id", "type", "month", "end_month", "geometry"} <= set(events.columns)
    assert len(events) == len(written.events) >= 5
    assert pd.api.types.is_datetime64_any_dtype(events["month"])
    assert pd.api.types.is_datetime64_any_dtype(events["end_month"])
    assert set(events.geometry.geom_type) == {"Polygon"}
    assert events.total_bounds[0] >= written.transform.c
    assert events.total_bounds[3] <= written.transform.f
    geojson = json.loads(written.layout.geojson_path.read_text())
    assert len(geojson["features"]) == len(events)


def test_nuisance_log(written: AoiInfo) -> None:
    log = json.loads(written.layout.nuisances_path.read_text())
    assert log["seed"] == SEED and log["size"] == SIZE and log["aoi"] == "aoi_0007"
    assert list(log["dates"]) == [f"{d:%Y-%m-%d}" for d in written.dates]
    for entry in log["dates"].values():
        assert {"gain", "offset", "haze", "cloud_fraction", "shift", "gap_windows"} <= set(entry)
        assert len(entry["shift"]) == 2


def test_existing_aoi_is_refused_then_overwritten(tmp_path: Path) -> None:
    make_aoi(tmp_path, seed=0, size=64, months=2)
    with pytest.raises(ParameterError, match=r"out_dir=.*already holds") as err:
        make_aoi(tmp_path, seed=1, size=64, months=2)
    assert str(tmp_path) in str(err.value)
    info = make_aoi(tmp_path, seed=1, size=64, months=3, overwrite=True)
    assert len(list(info.layout.image_dir.glob("*.mask.tif"))) == 3
    make_aoi(tmp_path, seed=2, size=64, months=2, aoi="aoi_0001")  # another AOI beside it is fine
    assert info.layout.events_path.exists()


def test_incomplete_aoi_is_replaced(tmp_path: Path) -> None:
    info = make_aoi(tmp_path, seed=0, size=64, months=3)
    info.layout.events_path.unlink()  # as if the run had been killed before the end
    again = make_aoi(tmp_path, seed=0, size=64, months=2)
    assert len(list(again.layout.label_dir.glob("*.tif"))) == 2


def test_bad_parameters_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="^size="):
        make_aoi(tmp_path / "out", size=32)
    with pytest.raises(ParameterError, match="^months="):
        make_aoi(tmp_path / "out", months=1)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="^out_dir="):
        make_aoi(tmp_path / "file", size=64, months=2)


def test_progress_is_reported(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    make_aoi(tmp_path, size=64, months=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
