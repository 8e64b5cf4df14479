import json

import dask.array as da
import numpy as np
import pandas as pd
import pytest

import changescope
from changescope.errors import (
    BandMismatchError,
    CorruptFileError,
    CRSMismatchError,
    DateError,
    DuplicateDateError,
    GridMismatchError,
    NoImagesFoundError,
    UnknownFormatError,
)
from changescope.io.writers import write_geotiff, write_series_folder
from changescope.testing import make_test_series, utm_transform, write_tiny_geotiff


def test_round_trip_through_folder(tmp_path):
    ds = make_test_series(seed=3, n_time=3, cloud_fraction=0.2, with_labels=True)
    write_series_folder(ds, tmp_path / "s")
    (tmp_path / "s" / "labels" / "classes.json").write_text(json.dumps({"0": "water", "1": "forest", "2": "urban"}))
    back = changescope.open(tmp_path / "s")
    assert back.attrs["format"] == "geotiff_folder"
    assert isinstance(back.image.data, da.Array)
    assert list(back.band.values) == ["blue", "green", "red", "nir"]
    assert back.wavelength.values[2] == pytest.approx(0.665)
    np.testing.assert_allclose(back.scale.values, 1e-4)
    np.testing.assert_array_equal(back.time.values, ds.time.values)
    np.testing.assert_array_equal(back.image.values, ds.image.values)
    np.testing.assert_array_equal(back.valid.values, ds.valid.values)
    np.testing.assert_array_equal(back.labels.values, ds.labels.values)
    assert changescope.series.class_table(back) == {0: "water", 1: "forest", 2: "urban"}
    assert back.rio.crs == ds.rio.crs
    assert back.rio.transform() == ds.rio.transform()


def test_nodata_and_names(tmp_path):
    arr = np.full((2, 8, 8), 100, np.uint16)
    arr[0, 0, 0] = 0
    write_geotiff(tmp_path / "20200105_scene.tif", arr, crs="EPSG:32633", transform=utm_transform(), nodata=0)
    write_geotiff(tmp_path / "scene_2020-02.tif", arr + 1, crs="EPSG:32633", transform=utm_transform(), nodata=0)
    ds = changescope.open(tmp_path)
    assert list(ds.band.values) == ["b1", "b2"]
    assert [str(t)[:10] for t in ds.time.values] == ["2020-01-05", "2020-02-01"]
    assert not ds.valid.values[0, 0, 0] and ds.valid.values[1, 0, 0]
    assert ds.valid.values.sum() == 2 * 64 - 1


def test_single_file_needs_a_date(tmp_path):
    f = write_tiny_geotiff(tmp_path / "scene.tif")
    with pytest.raises(DateError, match="date="):
        changescope.open(f)
    ds = changescope.open(f, date="2021-06-01")
    assert ds.sizes["time"] == 1


def test_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnknownFormatError, match="no reader recognises"):
        changescope.open(empty)
    with pytest.raises(NoImagesFoundError, match="no GeoTIFF"):
        changescope.open(empty, format="geotiff_folder")
    with pytest.raises(NoImagesFoundError, match="does not exist"):
        changescope.open(tmp_path / "missing")

    bands = tmp_path / "bands"
    write_tiny_geotiff(bands / "2020-01-01.tif", count=3)
    write_tiny_geotiff(bands / "2020-02-01.tif", count=4)
    with pytest.raises(BandMismatchError, match="2020-02-01.tif"):
        changescope.open(bands)

    crs = tmp_path / "crs"
    write_tiny_geotiff(crs / "2020-01-01.tif")
    write_tiny_geotiff(crs / "2020-02-01.tif", crs="EPSG:32632")
    with pytest.raises(CRSMismatchError, match="reproject=True"):
        changescope.open(crs)
    assert changescope.open(crs, reproject=True).sizes["time"] == 2

    grid = tmp_path / "grid"
    write_tiny_geotiff(grid / "2020-01-01.tif")
    write_tiny_geotiff(grid / "2020-02-01.tif", transform=utm_transform(x0=500_030))
    with pytest.raises(GridMismatchError, match="co-register"):
        changescope.open(grid)

    dup = tmp_path / "dup"
    write_tiny_geotiff(dup / "2020-01-01.tif")
    write_tiny_geotiff(dup / "20200101_b.tif")
    with pytest.raises(DuplicateDateError, match="2020-01-01"):
        changescope.open(dup)

    undated = tmp_path / "undated"
    write_tiny_geotiff(undated / "2020-01-01.tif")
    write_tiny_geotiff(undated / "scene.tif")
    with pytest.raises(DateError, match="scene.tif"):
        changescope.open(undated)

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "2020-01-01.tif").write_bytes(b"this is not a tiff")
    with pytest.raises(CorruptFileError, match="2020-01-01.tif"):
        changescope.open(corrupt)

    labels = tmp_path / "labels"
    write_tiny_geotiff(labels / "2020-01-01.tif")
    write_tiny_geotiff(labels / "labels" / "2020-01-01.tif", count=1, height=16)
    with pytest.raises(GridMismatchError, match="labels"):
        changescope.open(labels)


def test_opening_is_lazy_for_large_stacks(tmp_path):
    # 4 dates of 4096x4096 are opened from metadata only: nothing is computed.
    rng = np.random.default_rng(0)
    for month in range(1, 5):
        arr = rng.integers(0, 2, size=(1, 4096, 4096), dtype=np.uint8)
        write_geotiff(tmp_path / f"2020-{month:02d}-01.tif", arr, crs="EPSG:32633", transform=utm_transform())
    ds = changescope.open(tmp_path)
    assert isinstance(ds.image.data, da.Array) and isinstance(ds.valid.data, da.Array)
    assert ds.image.data.chunksize[-1] <= 1024
    assert pd.DatetimeIndex(ds.time.values).month.tolist() == [1, 2, 3, 4]


def test_dates_with_different_scale_tags_are_converted_to_reflectance(tmp_path):
    rng = np.random.default_rng(4)
    refl = rng.uniform(0.02, 0.5, (3, 4, 16, 16)).astype(np.float32)
    t = utm_transform()
    # one date uint16 reflectance x 10000 (tagged), one float32 0-1 (untagged), one uint16 with a 2e-4 scale + offset
    write_geotiff(
        tmp_path / "2021-01-01.tif",
        np.round(refl[0] * 1e4).astype(np.uint16),
        crs="EPSG:32633",
        transform=t,
        scales=[1e-4] * 4,
    )
    write_geotiff(tmp_path / "2021-02-01.tif", refl[1], crs="EPSG:32633", transform=t)
    stored = np.round((refl[2] + 0.1) / 2e-4).astype(np.uint16)
    stored[:, 0, 0] = 0
    write_geotiff(
        tmp_path / "2021-03-01.tif",
        stored,
        crs="EPSG:32633",
        transform=t,
        nodata=0,
        scales=[2e-4] * 4,
        offsets=[-0.1] * 4,
    )
    ds = changescope.open(tmp_path)
    assert "rescaled" in ds.attrs
    assert ds.image.dtype == np.float32
    np.testing.assert_allclose(ds.scale.values, 1.0)
    np.testing.assert_allclose(ds.offset.values, 0.0)
    got = changescope.series.reflectance(ds).values
    assert np.isnan(got[2, :, 0, 0]).all() and not ds.valid.values[2, 0, 0]
    got[2, :, 0, 0] = refl[2, :, 0, 0]
    np.testing.assert_allclose(got, refl, atol=2e-4)


def test_same_scale_tags_and_dtype_are_left_as_stored(tmp_path):
    arr = np.full((2, 8, 8), 1000, np.uint16)
    for d in ("2021-01-01", "2021-02-01"):
        write_geotiff(tmp_path / f"{d}.tif", arr, crs="EPSG:32633", transform=utm_transform(), scales=[1e-4] * 2)
    ds = changescope.open(tmp_path)
    assert "rescaled" not in ds.attrs and ds.image.dtype == np.uint16
    np.testing.assert_allclose(ds.scale.values, 1e-4)


def test_reproject_carries_the_mask_sidecar_along(tmp_path):
    arr = np.full((2, 32, 32), 500, np.uint16)
    write_geotiff(tmp_path / "2021-01-01.tif", arr, crs="EPSG:32633", transform=utm_transform())
    # the second date in the neighbouring zone, over the same place, with a sidecar on its own grid
    from rasterio.warp import transform as warp_xy

    xs, ys = warp_xy("EPSG:32633", "EPSG:32634", [500_000.0], [5_000_000.0])
    t34 = utm_transform(x0=float(xs[0]), y0=float(ys[0]))
    write_geotiff(tmp_path / "2021-02-01.tif", arr + 1, crs="EPSG:32634", transform=t34)
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[0, :, 16:] = 1
    write_geotiff(tmp_path / "2021-02-01.mask.tif", mask, crs="EPSG:32634", transform=t34)
    ds = changescope.open(tmp_path, reproject=True)
    valid = ds.valid.values[1]
    assert ds.valid.values[0].all()
    assert valid[:, :8].mean() > 0.5 and not valid[:, 24:].any()
