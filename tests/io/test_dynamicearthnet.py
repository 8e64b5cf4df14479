from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rasterio

import changescope
from changescope.errors import (
    BandMismatchError,
    DateError,
    GridMismatchError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.io.dynamicearthnet import DEN_CLASSES, list_aois
from changescope.io.registry import detect_format
from changescope.io.writers import write_geotiff
from changescope.testing import TEST_CRS, utm_transform
from changescope.testing.den import den_image_dir, den_label_path, one_hot, write_den_root

AOI0, AOI1 = "aoi_0000", "aoi_0001"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_den_root(tmp_path / "den", seed=3)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def expected_invalid(image_file: Path) -> np.ndarray:
    """Invalid pixels computed straight from the files: sidecar nonzero or any band == 0."""
    bad = (read(image_file) == 0).any(axis=0)
    mask = image_file.with_name(image_file.stem + ".mask.tif")
    if mask.exists():
        bad |= read(mask)[0] != 0
    return bad


def dates(ds) -> list[str]:
    return [str(t)[:10] for t in ds["time"].values]


def test_detect_format_root_aoi_and_pfsr(root: Path) -> None:
    image_dir = den_image_dir(root, AOI0)
    assert detect_format(root) == "dynamicearthnet"
    assert detect_format(image_dir) == "dynamicearthnet"
    assert detect_format(image_dir.parent) == "dynamicearthnet"


def test_list_aois(root: Path) -> None:
    refs = list_aois(root)
    assert [r.aoi for r in refs] == [AOI0, AOI1]
    assert {(r.zone, r.tile, r.n_images, r.n_labels) for r in refs} == {("synth", "0000", 9, 3)}
    assert refs[0].image_dir == den_image_dir(root, AOI0)
    assert refs[0].label_dir == den_label_path(root, AOI0, "2020-01").parent


def test_root_with_several_aois_needs_aoi(root: Path) -> None:
    with pytest.raises(ParameterError, match=r"aoi=.*'aoi_0000'.*'aoi_0001'"):
        changescope.open(root)


def test_unknown_aoi_lists_valid_ids(root: Path) -> None:
    with pytest.raises(ParameterError, match=r"aoi='nope'.*'aoi_0000', 'aoi_0001'"):
        changescope.open(root, aoi="nope")


def test_root_with_one_aoi_opens_it(tmp_path: Path) -> None:
    root = write_den_root(tmp_path / "one", aois=("solo",))
    ds = changescope.open(root)
    assert ds.attrs["aoi"] == "solo"
    assert "labels" in ds


def test_bands_scale_crs_transform(root: Path) -> None:
    ds = changescope.open(root, aoi=AOI1)
    assert ds.attrs["format"] == "dynamicearthnet"
    assert ds.attrs["sensor"] == "planetfusion"
    assert list(ds["band"].values) == ["blue", "green", "red", "nir"]
    np.testing.assert_allclose(ds["scale"].values, 1e-4)
    np.testing.assert_allclose(ds["wavelength"].values, [0.49, 0.56, 0.665, 0.842])
    assert ds["image"].dtype == np.uint16
    assert ds.rio.crs.to_string() == TEST_CRS
    with rasterio.open(den_image_dir(root, AOI1) / "2020-01-01.tif") as src:
        assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(src.transform)[:6])
    assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(utm_transform(x0=500_640.0))[:6])


def test_opening_is_lazy(root: Path) -> None:
    for selection in ("label_day", "monthly_median", "all"):
        ds = changescope.open(root, aoi=AOI0, selection=selection)
        for name in ("image", "valid", "labels"):
            assert isinstance(ds[name].data, da.Array), (selection, name)


def test_label_day_picks_label_day_or_nearest_in_month(root: Path) -> None:
    ds = changescope.open(root, aoi=AOI0)
    # February has no image on the 1st: the nearest image of that month (the 3rd) stands in.
    assert dates(ds) == ["2020-01-01", "2020-02-03", "2020-03-01"]
    image_dir = den_image_dir(root, AOI0)
    for i, day in enumerate(dates(ds)):
        np.testing.assert_array_equal(ds["image"].isel(time=i).values, read(image_dir / f"{day}.tif"))
    assert ds.attrs["selection"] == "label_day"


def test_label_day_skips_months_without_images(tmp_path: Path) -> None:
    root = write_den_root(tmp_path / "gap", aois=(AOI0,), days={"2020-01": (1,), "2020-02": (5,)})
    write_geotiff(
        den_label_path(root, AOI0, "2020-03"),
        one_hot(np.zeros((64, 64), dtype=np.int16)),
        crs=TEST_CRS,
        transform=utm_transform(),
    )
    ds = changescope.open(root)
    assert dates(ds) == ["2020-01-01", "2020-02-05"]
    assert ds.attrs["months_without_images"] == ["2020-03"]


def test_all_selection_has_every_day_and_labels_on_label_days(root: Path) -> None:
    ds = changescope.open(root, aoi=AOI0, selection="all")
    assert len(dates(ds)) == 9
    labelled = [d for d, lab in zip(dates(ds), ds["labels"].values, strict=True) if (lab >= 0).any()]
    assert labelled == ["2020-01-01", "2020-03-01"]  # February's label day has no image


def test_monthly_median_equals_numpy(root: Path) -> None:
    image_dir = den_image_dir(root, AOI0)
    jan = sorted(image_dir.glob("2020-01-??.tif"))
    # make the square [0:4, 0:4] invalid on every January day, and pixel (10, 10) valid on one day only
    for k, f in enumerate(jan):
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[:4, :4] = 1
        if k > 0:
            mask[10, 10] = 1
        write_geotiff(f.with_name(f.stem + ".mask.tif"), mask, crs=TEST_CRS, transform=utm_transform())
    ds = changescope.open(root, aoi=AOI0, selection="monthly_median")
    assert dates(ds) == ["2020-01-01", "2020-02-01", "2020-03-01"]
    for i, month in enumerate(("2020-01", "2020-02", "2020-03")):
        files = sorted(image_dir.glob(f"{month}-??.tif"))
        files = [f for f in files if not f.name.endswith(".mask.tif")]
        stack = np.stack([read(f).astype(np.float32) for f in files])
        bad = np.stack([expected_invalid(f) for f in files])
        stack[np.broadcast_to(bad[:, None], stack.shape)] = np.nan
        all_bad = bad.all(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            expected = np.nanmedian(stack, axis=0)
        got = ds["image"].isel(time=i).values
        np.testing.assert_allclose(got[:, ~all_bad], expected[:, ~all_bad])
        assert np.isnan(got[:, all_bad]).all()
        np.testing.assert_array_equal(ds["valid"].isel(time=i).values, ~all_bad)
    assert not ds["valid"].isel(time=0).values[:4, :4].any()
    assert ds["valid"].isel(time=0).values[10, 10]
    np.testing.assert_array_equal(ds["image"].isel(time=0).values[:, 10, 10], read(jan[0])[:, 10, 10])


def test_labels_decoded(root: Path) -> None:
    ids = np.tile(np.arange(-1, 7, dtype=np.int16), (64, 8))
    ids[5, 5] = 6
    bands = one_hot(ids)
    bands[2, 7, 0] = 128  # not 255: still unlabelled
    write_geotiff(den_label_path(root, AOI0, "2020-03"), bands, crs=TEST_CRS, transform=utm_transform())
    ds = changescope.open(root, aoi=AOI0)
    assert ds["labels"].dtype == np.int16
    assert ids[7, 0] == -1
    np.testing.assert_array_equal(ds["labels"].isel(time=2).values, ids)
    assert ds["labels"].attrs["class_ids"] == list(range(7))
    assert ds["labels"].attrs["class_names"] == list(DEN_CLASSES.values())
    assert ds["labels"].attrs["class_names"][6] == "snow & ice"
    assert ds["labels"].attrs["nodata"] == -1
    # every written label month decodes to the numpy argmax of its one-hot bands
    for i, month in enumerate(("2020-01", "2020-02")):
        oh = read(den_label_path(root, AOI0, month))
        expected = np.where(oh.max(axis=0) == 255, oh.argmax(axis=0), -1)
        np.testing.assert_array_equal(ds["labels"].isel(time=i).values, expected)
        assert (expected[:8, :8] == -1).all()


def test_valid_reflects_sidecar_masks_and_nodata(root: Path) -> None:
    ds = changescope.open(root, aoi=AOI1, selection="all")
    image_dir = den_image_dir(root, AOI1)
    n_bad = 0
    for i, day in enumerate(dates(ds)):
        bad = expected_invalid(image_dir / f"{day}.tif")
        n_bad += int(bad.sum())
        np.testing.assert_array_equal(ds["valid"].isel(time=i).values, ~bad)
    assert n_bad > 9 * 64  # every day has a masked square and a nodata pixel


def test_declared_nodata_is_used(tmp_path: Path) -> None:
    root = write_den_root(tmp_path / "nd", aois=(AOI0,), days={"2020-01": (1,)}, with_masks=False)
    f = den_image_dir(root, AOI0) / "2020-01-01.tif"
    img = read(f)
    img[:, 0, 0] = 65535
    write_geotiff(f, img, crs=TEST_CRS, transform=utm_transform(), nodata=65535)
    ds = changescope.open(root)
    valid = ds["valid"].isel(time=0).values
    assert not valid[0, 0]
    assert valid.sum() == 64 * 64 - 1


def test_open_pfsr_or_aoi_folder_finds_labels(root: Path) -> None:
    image_dir = den_image_dir(root, AOI1)
    ref = changescope.open(root, aoi=AOI1)
    for path in (image_dir, image_dir.parent):
        ds = changescope.open(path)
        assert ds.attrs["aoi"] == AOI1
        assert "labels" in ds
        np.testing.assert_array_equal(ds["labels"].values, ref["labels"].values)
    with pytest.raises(ParameterError, match="aoi='aoi_0000'"):
        changescope.open(image_dir, aoi=AOI0)


def test_layout_without_tile_level(tmp_path: Path) -> None:
    root = write_den_root(tmp_path / "notile", tile=None)
    assert [(r.tile, r.n_labels) for r in list_aois(root)] == [(None, 3), (None, 3)]
    ds = changescope.open(den_image_dir(root, AOI0, tile=None))
    assert ds.attrs["tile"] == ""
    assert dates(ds) == ["2020-01-01", "2020-02-03", "2020-03-01"]
    assert "labels" in ds


def test_aoi_without_labels_uses_image_months(tmp_path: Path) -> None:
    root = write_den_root(tmp_path / "nolab", aois=(AOI0,), with_labels=False)
    ds = changescope.open(root)
    assert "labels" not in ds
    assert dates(ds) == ["2020-01-01", "2020-02-03", "2020-03-01"]


def test_no_images_errors(tmp_path: Path) -> None:
    empty_pfsr = tmp_path / "empty" / "planet" / "synth" / "0000" / AOI0 / "PF-SR"
    empty_pfsr.mkdir(parents=True)
    with pytest.raises(NoImagesFoundError, match=r"no PF-SR images .*PF-SR"):
        changescope.open(empty_pfsr)
    (tmp_path / "bare" / "planet").mkdir(parents=True)
    with pytest.raises(NoImagesFoundError, match="no PF-SR image folder"):
        changescope.open(tmp_path / "bare")
    with pytest.raises(NoImagesFoundError, match="neither a DynamicEarthNet root"):
        changescope.open(tmp_path / "empty" / "planet", format="dynamicearthnet")


def test_unknown_selection(root: Path) -> None:
    with pytest.raises(ParameterError, match=r"selection='weekly'.*'monthly_median'"):
        changescope.open(root, aoi=AOI0, selection="weekly")


def test_label_grid_mismatch(root: Path) -> None:
    label = den_label_path(root, AOI0, "2020-02")
    shifted = utm_transform(x0=500_010.0)
    write_geotiff(label, one_hot(np.zeros((64, 64), dtype=np.int16)), crs=TEST_CRS, transform=shifted)
    with pytest.raises(GridMismatchError, match=r"label file .*2020_02_01\.tif.*image grid"):
        changescope.open(root, aoi=AOI0)
    write_geotiff(label, one_hot(np.zeros((32, 32), dtype=np.int16)), crs=TEST_CRS, transform=utm_transform())
    with pytest.raises(GridMismatchError, match=r"\(32, 32\)"):
        changescope.open(root, aoi=AOI0)


def test_label_name_without_date(root: Path) -> None:
    bad = den_label_path(root, AOI0, "2020-01").with_name("synth-aoi_0000-latest.tif")
    write_geotiff(bad, one_hot(np.zeros((64, 64), dtype=np.int16)), crs=TEST_CRS, transform=utm_transform())
    with pytest.raises(DateError, match=r"synth-aoi_0000-latest\.tif.*YYYY_MM_01"):
        changescope.open(root, aoi=AOI0)


def test_label_band_count(root: Path) -> None:
    label = den_label_path(root, AOI0, "2020-01")
    write_geotiff(label, np.zeros((6, 64, 64), dtype=np.uint8), crs=TEST_CRS, transform=utm_transform())
    with pytest.raises(BandMismatchError, match=r"2020_01_01\.tif.* 6 bands.*7 one-hot"):
        changescope.open(root, aoi=AOI0)


def test_image_band_count(root: Path) -> None:
    f = den_image_dir(root, AOI0) / "2020-01-01.tif"
    write_geotiff(f, np.ones((3, 64, 64), dtype=np.uint16), crs=TEST_CRS, transform=utm_transform())
    with pytest.raises(BandMismatchError, match=r"2020-01-01\.tif.* 3 bands"):
        changescope.open(root, aoi=AOI0)


def test_series_times_are_sorted_month_starts_for_median(root: Path) -> None:
    ds = changescope.open(root, aoi=AOI1, selection="monthly_median")
    assert pd.DatetimeIndex(ds["time"].values).is_monotonic_increasing
    assert ds["image"].dtype == np.float32
