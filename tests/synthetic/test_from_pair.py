"""Semi-real series from real pairs: ``series_from_pair`` and ``read_pair``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from scipy.ndimage import gaussian_filter

import changescope
from changescope.errors import BandMismatchError, GridMismatchError, NoImagesFoundError, ParameterError
from changescope.grid import PatchGrid
from changescope.io.writers import write_geotiff
from changescope.quality import estimate_shift
from changescope.series import class_table, make_series, reflectance
from changescope.synthetic import PairNuisances, read_pair, series_from_pair
from changescope.testing import TEST_CRS, shared_sample, utm_transform
from changescope.truth import mask_change, series_truth

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # OSCD-like masks

BANDS = ("B02", "B03", "B04", "B08", "B11")
NONE = PairNuisances.none()


def _fields(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance ``(bands, size, size)`` of a textured scene and its vegetation share."""
    rng = np.random.default_rng(seed)
    veg = gaussian_filter(rng.normal(size=(size, size)), 6)
    veg = np.clip((veg - veg.min()) / np.ptp(veg) * 1.6 - 0.3, 0, 1)
    texture = gaussian_filter(rng.normal(size=(size, size)), 1.5)
    texture /= texture.std()
    soil = np.array([0.08, 0.11, 0.14, 0.22, 0.30])[:, None, None]
    plant = np.array([0.03, 0.07, 0.03, 0.45, 0.18])[:, None, None]
    refl = soil * (1 - veg) + plant * veg + 0.015 * texture
    return np.clip(refl, 0.005, 1), veg


def make_pair(seed: int = 0, size: int = 64, *, with_mask: bool = True) -> xr.Dataset:
    """A uint16 two-date pair (scale 1e-4): a bright square appears in the after image."""
    before, _ = _fields(seed, size)
    after = before.copy()
    sl = slice(size // 4, size // 2)
    after[:, sl, sl] = np.array([0.25, 0.27, 0.28, 0.30, 0.33])[:, None, None]
    change = np.zeros((size, size), dtype=np.int8)
    change[sl, sl] = 1
    change[-4:, :8] = -1
    ds = make_series(
        np.round(np.stack([before, after]) * 1e4).astype(np.uint16),
        times=["2016-05-01", "2017-06-01"],
        bands=list(BANDS),
        crs=TEST_CRS,
        transform=utm_transform(),
        sensor="test",
    ).assign_coords(scale=("band", [1e-4] * len(BANDS)))
    if with_mask:
        ds["change"] = (("y", "x"), change)
    return ds


def _refl(pair: xr.Dataset, t: int) -> np.ndarray:
    return np.asarray(reflectance(pair).isel(time=t).values)


@pytest.fixture(scope="module")
def pair() -> xr.Dataset:
    return make_pair()


def test_shapes_dates_and_grid(pair: xr.Dataset) -> None:
    ds = series_from_pair(pair, dates=9, change_month=4, start="2021-03-01", seed=1)
    assert ds["image"].shape == (9, len(BANDS), 64, 64)
    assert ds["valid"].shape == ds["labels"].shape == (9, 64, 64)
    assert ds["image"].dtype == np.float32
    assert list(pd.DatetimeIndex(ds["time"].values)) == list(pd.date_range("2021-03-01", periods=9, freq="MS"))
    assert list(ds["band"].values) == list(BANDS)
    np.testing.assert_array_equal(ds["wavelength"].values, pair["wavelength"].values)
    assert ds.rio.crs == pair.rio.crs and ds.rio.transform() == pair.rio.transform()
    assert ds.attrs["change_date"] == "2021-07-01"
    log = json.loads(ds.attrs["from_pair"])
    assert log["change_month"] == 4 and log["seed"] == 1 and len(log["dates"]) == 9
    assert class_table(ds) == {0: "no change", 1: "change"}


def test_labels_mark_the_masked_pixels_from_the_change_date(pair: xr.Dataset) -> None:
    ds = series_from_pair(pair, dates=8, change_month=3, seed=2)
    labels = ds["labels"].values
    change = pair["change"].values
    assert (labels[:3][:, change >= 0] == 0).all()
    for t in range(3, 8):
        np.testing.assert_array_equal(labels[t][change >= 0], change[change >= 0])
    assert (labels[:, change < 0] == -1).all()


def test_truth_marks_changed_patches_at_the_change_date(pair: xr.Dataset) -> None:
    ds = series_from_pair(pair, dates=6, change_month=2, seed=0)
    grid = PatchGrid(16, height=64, width=64)
    truth = series_truth(ds, grid)
    changed = truth["changed"].values
    expected = mask_change(pair["change"].values, grid).changed
    assert expected.any()
    np.testing.assert_array_equal(changed[1], expected)  # time index 1 of the truth = date 2 vs date 1
    assert not changed[[0, 2, 3, 4]].any()


def test_no_nuisances_shows_before_then_after_exactly(pair: xr.Dataset) -> None:
    ds = series_from_pair(pair, dates=5, change_month=2, nuisances=NONE)
    img = ds["image"].values
    for t in range(5):
        np.testing.assert_array_equal(img[t], _refl(pair, 0 if t < 2 else 1))
    assert ds["valid"].values.all()


def test_no_change_gives_zero_labels_and_the_before_image(pair: xr.Dataset) -> None:
    ds = series_from_pair(pair, dates=5, change_month=2, nuisances=NONE, change=False)
    assert (ds["labels"].values == 0).all()
    assert ds.attrs["change_date"] == "none"
    for t in range(5):
        np.testing.assert_array_equal(ds["image"].values[t], _refl(pair, 0))


def test_no_change_has_the_same_nuisances(pair: xr.Dataset) -> None:
    with_change = series_from_pair(pair, seed=5)
    without = series_from_pair(pair, seed=5, change=False)
    np.testing.assert_array_equal(with_change["image"].values[:6], without["image"].values[:6])
    np.testing.assert_array_equal(with_change["valid"].values, without["valid"].values)
    assert not np.array_equal(with_change["image"].values[6:], without["image"].values[6:])


def test_clouds_are_masked_and_spare_the_change_date(pair: xr.Dataset) -> None:
    nz = replace(NONE, cloud_dates=0.5, cloud_cover=(0.1, 0.3))
    for seed in range(6):
        ds = series_from_pair(pair, dates=10, change_month=4, nuisances=nz, seed=seed)
        img, valid = ds["image"].values, ds["valid"].values
        cloudy = [t for t in range(10) if not valid[t].all()]
        assert len(cloudy) == 5
        assert 4 not in cloudy
        for t in range(10):
            clean = _refl(pair, 0 if t < 4 else 1)
            diff = np.abs(img[t] - clean).max(axis=0)
            assert (diff[valid[t]] <= 0.05 * 0.6 + 1e-6).all()  # opacity <= 0.05 on valid pixels
            assert (diff[~valid[t]] > 0).all()
            if t in cloudy:
                assert 0.05 <= (~valid[t]).mean() <= 0.4
        records = json.loads(ds.attrs["from_pair"])["dates"]
        assert [t for t, r in enumerate(records) if r["cloud_fraction"] > 0] == cloudy


def test_the_change_date_can_be_cloudy_when_allowed(pair: xr.Dataset) -> None:
    nz = replace(NONE, cloud_dates=1.0, clear_change_date=False)
    ds = series_from_pair(pair, dates=4, change_month=2, nuisances=nz)
    assert not ds["valid"].values.all(axis=(1, 2)).any()


def test_invalid_input_pixels_stay_invalid(pair: xr.Dataset) -> None:
    holed = pair.copy(deep=True)
    holed["valid"].values[0, :5, :5] = False
    ds = series_from_pair(holed, dates=4, change_month=2, nuisances=NONE)
    valid = ds["valid"].values
    assert not valid[:2, :5, :5].any() and valid[2:].all()
    assert np.isfinite(ds["image"].values).all()


def test_same_seed_same_series_other_seed_differs(pair: xr.Dataset) -> None:
    a, b, c = (series_from_pair(pair, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a["image"].values, b["image"].values)
    np.testing.assert_array_equal(a["valid"].values, b["valid"].values)
    assert a.attrs == b.attrs
    assert not np.array_equal(a["image"].values, c["image"].values)
    assert a.attrs["from_pair"] != c.attrs["from_pair"]


def test_season_raises_nir_on_vegetation_at_the_peak(pair: xr.Dataset) -> None:
    nz = replace(NONE, season=0.3)
    ds = series_from_pair(pair, dates=12, change_month=11, start="2020-01-01", nuisances=nz, change=False)
    before = _refl(pair, 0)
    ndvi = (before[3] - before[2]) / (before[3] + before[2])
    veg, bare = ndvi > 0.5, ndvi < 0.3
    nir, red = list(BANDS).index("B08"), list(BANDS).index("B04")
    july, january = ds["image"].values[6], ds["image"].values[0]
    assert veg.sum() > 50 and bare.sum() > 50
    assert (july[nir][veg] > january[nir][veg] * 1.2).all()
    assert (july[red][veg] < january[red][veg]).all()
    rise = july[nir] / january[nir]
    assert rise[veg].mean() > rise[bare].mean() + 0.1
    expected = before[nir] * (1 + 0.3 * np.clip(ndvi, 0, 1))
    np.testing.assert_allclose(july[nir], expected, rtol=1e-4)


def test_no_season_without_red_and_nir() -> None:
    pair = make_pair().isel(band=[0, 1, 4])
    ds = series_from_pair(pair, nuisances=replace(NONE, season=0.5), change=False)
    assert json.loads(ds.attrs["from_pair"])["vegetation_bands"] == [None, None]
    for t in range(12):
        np.testing.assert_array_equal(ds["image"].values[t], _refl(pair, 0))


def test_gain_and_offset_are_applied_as_recorded(pair: xr.Dataset) -> None:
    ds = series_from_pair(pair, dates=6, change_month=3, nuisances=replace(NONE, gain=0.1, offset=0.02), seed=3)
    records = json.loads(ds.attrs["from_pair"])["dates"]
    gains = np.array([r["gain"] for r in records])
    offsets = np.array([r["offset"] for r in records])
    assert ((gains >= 0.9) & (gains <= 1.1)).all() and np.ptp(gains) > 0.02
    assert (np.abs(offsets) <= 0.02).all() and np.ptp(offsets) > 0.005
    for t in range(6):
        clean = _refl(pair, 0 if t < 3 else 1)
        expected = clean * gains[t][:, None, None] + offsets[t][:, None, None]
        np.testing.assert_allclose(ds["image"].values[t], expected, atol=2e-6)


def test_shift_is_measured_back() -> None:
    pair = make_pair(size=96)
    ds = series_from_pair(pair, dates=5, change_month=4, nuisances=replace(NONE, shift=0.9), seed=4)
    records = json.loads(ds.attrs["from_pair"])["dates"]
    ref = _refl(pair, 0)
    for t in range(4):
        dy, dx = records[t]["shift"]
        assert abs(dy) <= 0.9 and abs(dx) <= 0.9
        got = estimate_shift(ref, ds["image"].values[t], max_size=None)
        assert got.dy == pytest.approx(dy, abs=0.1) and got.dx == pytest.approx(dx, abs=0.1)


def test_haze_is_blue_heavy_and_bounded(pair: xr.Dataset) -> None:
    ds = series_from_pair(pair, dates=12, nuisances=replace(NONE, haze=0.05), change=False, seed=6)
    added = ds["image"].values - _refl(pair, 0)[None]
    assert (added >= -1e-6).all() and added.max() <= 0.05 + 1e-6
    blue, swir = list(BANDS).index("B02"), list(BANDS).index("B11")
    per_date = added.mean(axis=(2, 3))
    hazy = per_date[:, blue] > 0.005
    assert 2 <= hazy.sum() <= 10
    assert (per_date[hazy, blue] > 5 * per_date[hazy, swir]).all()


def test_noise_has_the_requested_sigma(pair: xr.Dataset) -> None:
    ds = series_from_pair(pair, dates=3, change_month=2, nuisances=replace(NONE, noise=0.01), change=False)
    residual = ds["image"].values - _refl(pair, 0)[None]
    assert residual.std() == pytest.approx(0.01, rel=0.05)
    assert abs(residual.mean()) < 1e-3


def test_mask_argument_replaces_the_change_variable() -> None:
    pair = make_pair(with_mask=False)
    with pytest.raises(ParameterError, match="mask"):
        series_from_pair(pair)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[40:50, 5:9] = 255
    labels = series_from_pair(pair, mask=mask, dates=4, change_month=1)["labels"].values
    np.testing.assert_array_equal(labels[1:], np.broadcast_to(mask > 0, (3, 64, 64)).astype(labels.dtype))
    assert (labels[0] == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"dates": 1}, "dates=1"),
        ({"dates": 6, "change_month": 0}, "change_month=0"),
        ({"dates": 6, "change_month": 6}, "change_month=6"),
        ({"start": "2020-01-15"}, "start="),
        ({"start": "not a date"}, "start="),
        ({"mask": np.zeros((10, 10))}, "mask has shape"),
        ({"nuisances": PairNuisances(gain=-0.1)}, "gain=-0.1"),
        ({"nuisances": PairNuisances(noise=-1.0)}, "noise=-1.0"),
        ({"nuisances": PairNuisances(shift=2.0)}, "shift=2.0"),
        ({"nuisances": PairNuisances(cloud_dates=1.5)}, "cloud_dates=1.5"),
        ({"nuisances": PairNuisances(cloud_cover=(0.2, 1.2))}, "cloud_cover"),
        ({"nuisances": PairNuisances(cloud_cover=(0.4, 0.2))}, "cloud_cover"),
    ],
)
def test_bad_parameters(pair: xr.Dataset, kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(ParameterError, match=word.replace("(", r"\(")) as err:
        series_from_pair(pair, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_a_pair_needs_two_dates(pair: xr.Dataset) -> None:
    three = xr.concat(
        [pair, pair.assign_coords(time=pair["time"] + np.timedelta64(800, "D")).isel(time=[1])],
        "time",
        data_vars="minimal",
    )
    with pytest.raises(ParameterError, match="3 dates"):
        series_from_pair(three)
    with pytest.raises(ParameterError, match="1 dates"):
        series_from_pair(pair.isel(time=[0]))


# ---------------------------------------------------------------------------------------------------- read_pair


def _write_pair_files(folder: Path, seed: int = 0, size: int = 64) -> tuple[Path, Path, Path]:
    pair = make_pair(seed, size)
    paths = []
    for t, name in enumerate(("before.tif", "after.tif")):
        paths.append(
            write_geotiff(
                folder / name,
                pair["image"].values[t],
                crs=TEST_CRS,
                transform=utm_transform(),
                descriptions=list(BANDS),
                scales=[1e-4] * len(BANDS),
                offsets=[0.0] * len(BANDS),
            )
        )
    stored = np.where(pair["change"].values > 0, 2, 1).astype(np.uint8)  # OSCD encoding
    stored[pair["change"].values < 0] = 0
    with rasterio.open(folder / "cm.tif", "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8") as dst:
        dst.write(stored[None])
    return paths[0], paths[1], folder / "cm.tif"


def test_read_pair_from_raster_files(tmp_path: Path) -> None:
    before, after, mask = _write_pair_files(tmp_path)
    got = read_pair(before, after, mask)
    ref = make_pair()
    np.testing.assert_array_equal(got["image"].values, ref["image"].values)
    np.testing.assert_array_equal(got["change"].values, ref["change"].values)
    assert list(got["band"].values) == list(BANDS)
    np.testing.assert_allclose(got["scale"].values, 1e-4)
    assert got.rio.crs == ref.rio.crs
    assert got["valid"].values.all()
    ds = series_from_pair(got, dates=4, change_month=2, nuisances=NONE)
    np.testing.assert_array_equal(ds["labels"].values[3] == 1, ref["change"].values == 1)


def test_read_pair_from_band_folders(tmp_path: Path) -> None:
    pair = make_pair(size=64)
    for t, side in enumerate(("imgs_1", "imgs_2")):
        (tmp_path / side).mkdir()
        for b, name in enumerate(BANDS):
            data = pair["image"].values[t, b]
            transform = utm_transform()
            if name == "B11":  # a 20 m band
                data, transform = data[::2, ::2], utm_transform(res=20.0)
            write_geotiff(tmp_path / side / f"T31_{name}.tif", data, crs=TEST_CRS, transform=transform)
    got = read_pair(tmp_path / "imgs_1", tmp_path / "imgs_2", None)
    assert "change" not in got
    assert got["image"].shape == (2, len(BANDS), 64, 64)
    assert list(got["band"].values) == list(BANDS)
    np.testing.assert_array_equal(got["image"].values[:, :4], pair["image"].values[:, :4])
    assert np.isclose(got["wavelength"].values[-1], 1.61)
    np.testing.assert_allclose(got["scale"].values, 1e-4)


def test_read_pair_png_without_crs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.png", "b.png"):
        with rasterio.open(tmp_path / name, "w", driver="PNG", width=32, height=32, count=3, dtype="uint8") as dst:
            dst.write(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8))
        paths.append(tmp_path / name)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[4:9, 4:9] = 255
    with rasterio.open(tmp_path / "m.png", "w", driver="PNG", width=32, height=32, count=1, dtype="uint8") as dst:
        dst.write(mask[None])
    got = read_pair(paths[0], paths[1], tmp_path / "m.png")
    assert list(got["band"].values) == ["red", "green", "blue"]
    assert got.attrs["georeferenced"] == "false"
    np.testing.assert_allclose(got["scale"].values, 1 / 255)
    assert int(got["change"].values.sum()) == 25


def test_read_pair_refuses_mismatched_inputs(tmp_path: Path) -> None:
    before, after, mask = _write_pair_files(tmp_path)
    far = write_geotiff(
        tmp_path / "far.tif",
        np.ones((len(BANDS), 64, 64), dtype=np.uint16),
        crs=TEST_CRS,
        transform=utm_transform(x0=900_000.0),
        descriptions=list(BANDS),
    )
    with pytest.raises(GridMismatchError, match="far.tif") as err:
        read_pair(before, far, mask)
    assert "before.tif" in str(err.value)
    coarse = write_geotiff(
        tmp_path / "coarse.tif",
        np.ones((len(BANDS), 32, 32), dtype=np.uint16),
        crs=TEST_CRS,
        transform=utm_transform(res=20.0),
        descriptions=list(BANDS),
    )
    with pytest.raises(GridMismatchError, match="pixel size"):
        read_pair(before, coarse, mask)
    other = write_geotiff(
        tmp_path / "other.tif",
        np.ones((3, 64, 64), dtype=np.uint16),
        crs=TEST_CRS,
        transform=utm_transform(),
        descriptions=["x", "y", "z"],
    )
    with pytest.raises(BandMismatchError, match="other.tif"):
        read_pair(before, other, mask)
    small = write_geotiff(
        tmp_path / "small.tif", np.ones((20, 20), dtype=np.uint8), crs=TEST_CRS, transform=utm_transform()
    )
    with pytest.raises(GridMismatchError, match="small.tif"):
        read_pair(before, after, small)
    with pytest.raises(NoImagesFoundError, match="missing.tif"):
        read_pair(tmp_path / "missing.tif", after, mask)


def test_read_pair_aligns_a_slightly_offset_after_image(tmp_path: Path) -> None:
    before, _, mask = _write_pair_files(tmp_path)
    pair = make_pair()
    shifted = write_geotiff(
        tmp_path / "shifted.tif",
        pair["image"].values[1][:, 2:, :],
        crs=TEST_CRS,
        transform=utm_transform(y0=5_000_000.0 - 20.0),
        descriptions=list(BANDS),
    )
    got = read_pair(before, shifted, mask)
    valid = got["valid"].values[1]
    assert not valid[:2].any() and valid[2:].all()
    np.testing.assert_array_equal(got["image"].values[1][:, 2:], pair["image"].values[1][:, 2:])


# ------------------------------------------------------------------------------------------------ real OSCD city


def test_series_from_the_oscd_city_bercy(shared_data: Path) -> None:
    city = shared_sample(shared_data, "oscd/images/bercy")
    pair = changescope.open(city)
    ds = series_from_pair(pair, dates=6, change_month=3, seed=0)
    assert ds["image"].shape == (6, 13, *pair["change"].shape)
    assert list(ds["band"].values) == list(pair["band"].values)
    np.testing.assert_array_equal(ds["labels"].values[-1] == 1, pair["change"].values == 1)
    assert (ds["labels"].values[:3] <= 0).all()
    assert ds["valid"].values[3].mean() > 0.99  # the change date is clear
    from_files = read_pair(city / "imgs_1", city / "imgs_2", None)
    np.testing.assert_array_equal(from_files["image"].values, pair["image"].values)
    np.testing.assert_array_equal(from_files["change"].values, pair["change"].values)
