import json
import math

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from changescope.errors import BandMismatchError, DateError, GridMismatchError, ParameterError
from changescope.quality import (
    QualityReport,
    Shift,
    central_window,
    check_series,
    estimate_shift,
    fix_shift,
)
from changescope.series import make_series
from changescope.testing import TEST_CRS, utm_transform

PAD = 24
SIZE = 256
SHIFTS = [(1.5, 1.5), (0.3, -1.2), (2.7, 0.0), (-0.45, 0.8)]


def _scene(seed: int, size: int = SIZE) -> np.ndarray:
    """A textured field (fine and coarse structure), larger than ``size`` by PAD on each side."""
    rng = np.random.default_rng(seed)
    shape = (size + 2 * PAD, size + 2 * PAD)
    fine = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    coarse = ndimage.gaussian_filter(rng.normal(size=shape), 8.0)
    field = fine / fine.std() + coarse / coarse.std()
    return (field - field.min()) / np.ptp(field)


def _moved(field: np.ndarray, shift: tuple[float, float], size: int = SIZE) -> np.ndarray:
    """Move the content of ``field`` by ``shift`` (Fourier shift, exact sub-pixel) and crop the centre."""
    moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(field), shift)).real
    return moved[PAD : PAD + size, PAD : PAD + size]


def _clouds(rng: np.random.Generator, fraction: float, size: int = SIZE) -> np.ndarray:
    """Bool mask, True = cloud, covering ``fraction`` of the pixels in blobs."""
    if fraction <= 0 or fraction >= 1:
        return np.full((size, size), fraction >= 1)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6.0)
    return field > np.quantile(field, 1 - fraction)


def _series(
    shifts: dict[int, tuple[float, float]] | None = None,
    *,
    n_time: int = 4,
    clouds: tuple[float, ...] = (0.1, 0.3, 0.2, 0.25),
    seed: int = 0,
    size: int = SIZE,
    with_labels: bool = False,
):
    """A uint16 3-band series whose dates show the same scene, moved by ``shifts[t]`` px, with noise, a gain and
    offset per date and bright clouds marked invalid."""
    shifts = shifts or {}
    rng = np.random.default_rng(seed + 1000)
    field = _scene(seed, size)
    band_gain = np.array([0.8, 1.0, 1.3])[:, None, None]
    img = np.empty((n_time, 3, size, size), np.uint16)
    valid = np.empty((n_time, size, size), bool)
    for t in range(n_time):
        plane = _moved(field, shifts.get(t, (0.0, 0.0)), size)
        gain, offset = 1.0 + 0.15 * t, 0.02 * t
        refl = 0.05 + 0.3 * (gain * plane[None] * band_gain + offset)
        refl = refl + rng.normal(scale=0.01, size=refl.shape)
        cloud = _clouds(rng, clouds[t % len(clouds)], size)
        refl[:, cloud] = 0.9
        img[t] = np.clip(refl * 10_000, 1, 65_535).astype(np.uint16)
        valid[t] = ~cloud
    labels = None
    if with_labels:
        labels = np.repeat((_moved(field, (0.0, 0.0), size) > 0.5).astype(np.int16)[None], n_time, axis=0)
    return make_series(
        img,
        times=pd.date_range("2021-01-01", periods=n_time, freq="MS"),
        bands=["red", "green", "nir"],
        crs=TEST_CRS,
        transform=utm_transform(),
        valid=valid,
        labels=labels,
        classes={0: "dark", 1: "bright"} if with_labels else None,
        sensor="test",
    ).assign_coords(scale=("band", [1e-4] * 3))


# --- estimate_shift ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", SHIFTS)
def test_estimate_shift_recovers_subpixel_shift_under_noise_gain_and_clouds(shift):
    field = _scene(1, 512)
    rng = np.random.default_rng(7)
    ref = _moved(field, (0.0, 0.0), 512) + rng.normal(scale=0.01, size=(512, 512))
    mov = 1.4 * _moved(field, shift, 512) + 0.3 + rng.normal(scale=0.02, size=(512, 512))
    ref_cloud, mov_cloud = _clouds(rng, 0.1, 512), _clouds(rng, 0.35, 512)
    mov[mov_cloud] = 5.0  # bright clouds
    got = estimate_shift(ref, mov, valid_ref=~ref_cloud, valid_mov=~mov_cloud)
    assert math.hypot(got.dy - shift[0], got.dx - shift[1]) < 0.1, got
    assert got.correlation > 0.9
    assert got.peak_ratio > 20
    assert got.note == ""


def test_estimate_shift_sign_convention_matches_content_motion():
    ref = np.zeros((64, 64))
    ref[20:30, 24:34] = 1.0
    ref = ndimage.gaussian_filter(ref, 1.5)
    mov = np.roll(ref, (3, -2), axis=(0, 1))  # content moves 3 rows down, 2 columns left
    got = estimate_shift(ref, mov)
    assert got.dy == pytest.approx(3.0, abs=0.05)
    assert got.dx == pytest.approx(-2.0, abs=0.05)
    assert got.correction == pytest.approx((-3.0, 2.0), abs=0.05)
    # the correction is what scipy.ndimage.shift takes to bring moving back onto the reference
    back = ndimage.shift(mov, got.correction, order=1)
    assert np.abs(back - ref)[8:-8, 8:-8].max() < 0.05


def test_estimate_shift_accepts_band_stacks_and_nan_as_invalid():
    field = _scene(2)
    ref = np.stack([_moved(field, (0, 0)), 2 * _moved(field, (0, 0))])
    mov = np.stack([_moved(field, (0.8, -0.4)), 2 * _moved(field, (0.8, -0.4))])
    mov[:, :40, :40] = np.nan
    got = estimate_shift(ref, mov)
    assert math.hypot(got.dy - 0.8, got.dx + 0.4) < 0.1


def test_estimate_shift_gives_nan_and_a_note_when_too_few_valid_pixels():
    field = _scene(3)
    valid = np.zeros((SIZE, SIZE), bool)
    valid[:5, :5] = True
    got = estimate_shift(_moved(field, (0, 0)), _moved(field, (1, 0)), valid_mov=valid)
    assert math.isnan(got.dy) and math.isnan(got.dx) and math.isnan(got.magnitude)
    assert not got.measured
    assert "too few valid pixels" in got.note


def test_estimate_shift_flags_unrelated_images_as_doubtful():
    rng = np.random.default_rng(0)
    got = estimate_shift(rng.normal(size=(128, 128)), rng.normal(size=(128, 128)))
    assert "doubtful" in got.note
    assert abs(got.correlation) < 0.2


def test_estimate_shift_measures_only_the_central_window():
    field = _scene(4, 512)
    ref, mov = _moved(field, (0, 0), 512), _moved(field, (1.2, 0.4), 512)
    mov[:, :100] = 0.0  # garbage outside the central 256 px is ignored
    got = estimate_shift(ref, mov, max_size=256)
    assert math.hypot(got.dy - 1.2, got.dx - 0.4) < 0.1
    assert central_window(512, 300, 256) == (slice(128, 384), slice(22, 278))
    assert central_window(100, 80, None) == (slice(0, 100), slice(0, 80))


def test_estimate_shift_rejects_bad_input():
    a = np.zeros((32, 32))
    with pytest.raises(ParameterError, match="reference has shape"):
        estimate_shift(a, np.zeros((32, 30)))
    with pytest.raises(GridMismatchError, match="valid_mov"):
        estimate_shift(a, a, valid_mov=np.ones((30, 30), bool))
    with pytest.raises(ParameterError, match="upsample=0"):
        estimate_shift(a, a, upsample=0)
    with pytest.raises(ParameterError, match="feature='edges'"):
        estimate_shift(a, a, feature="edges")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="too small"):
        estimate_shift(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ParameterError, match="max_size=8"):
        estimate_shift(a, a, max_size=8)


# --- check_series -----------------------------------------------------------------------------------------------


def test_check_series_unshifted_series_has_near_zero_shifts_and_no_flags():
    report = check_series(_series())
    assert isinstance(report, QualityReport)
    assert len(report) == 4
    for d in report.dates:
        assert d.shift.magnitude < 0.05, d
    assert report.flagged == []
    assert report.dates[0].is_reference and report.reference == pd.Timestamp("2021-01-01")


def test_check_series_flags_exactly_the_shifted_dates():
    shifts = {1: (1.5, 0.0), 3: (0.3, -1.2)}
    report = check_series(_series(shifts), max_shift=0.5)
    assert [d.date for d in report.shifted] == ["2021-02-01", "2021-04-01"]
    assert [d.date for d in report.flagged] == ["2021-02-01", "2021-04-01"]
    for t, (dy, dx) in shifts.items():
        got = report.dates[t].shift
        assert math.hypot(got.dy - dy, got.dx - dx) < 0.2, got
    assert report.dates[2].shift.magnitude < 0.1


def test_check_series_radiometry_and_frame():
    report = check_series(_series())
    frame = report.to_frame()
    assert list(frame.index) == list(pd.date_range("2021-01-01", periods=4, freq="MS"))
    for col in ("valid_fraction", "dy", "dx", "shift", "brightness", "median_red", "p2_nir", "p98_green", "warning"):
        assert col in frame.columns
    d0 = report.dates[0]
    assert [b.band for b in d0.bands] == ["red", "green", "nir"]
    for b in d0.bands:
        assert 0.0 < b.p2 < b.median < b.p98 < 0.9  # clouds (0.9) are excluded
    # gain grows over time, so does brightness; nir (band gain 1.3) is brighter than red (0.8)
    assert list(frame["brightness"]) == sorted(frame["brightness"])
    assert d0.bands[2].median > d0.bands[0].median
    assert frame.loc["2021-02-01", "valid_fraction"] == pytest.approx(0.7, abs=0.01)


def test_check_series_clearest_reference_is_the_date_with_most_valid_pixels():
    report = check_series(_series(clouds=(0.4, 0.3, 0.0, 0.2)), reference="clearest")
    assert report.reference == pd.Timestamp("2021-03-01")
    assert report.reference_mode == "clearest"
    ref = report.dates[2]
    assert ref.is_reference and ref.shift.dy == 0.0 and ref.shift.dx == 0.0
    assert sum(d.is_reference for d in report.dates) == 1


def test_check_series_fully_cloudy_date_gets_nan_shift_and_a_note(tmp_path):
    report = check_series(_series(clouds=(0.1, 1.0, 0.2, 0.2)))
    cloudy = report.dates[1]
    assert cloudy.valid_fraction == 0.0
    assert math.isnan(cloudy.shift.dy) and math.isnan(cloudy.brightness)
    assert any("too few valid pixels" in n for n in cloudy.notes)
    assert cloudy.low_valid and cloudy.warning and not cloudy.shift_exceeded
    assert [d.date for d in report.flagged] == ["2021-02-01"]
    # NaN becomes null in JSON
    path = report.to_json(tmp_path / "report.json")
    data = json.loads(path.read_text())
    entry = data["dates"][1]
    assert entry["dy"] is None and entry["valid_fraction"] == 0.0 and entry["warning"] is True
    assert data["reference"] == "2021-01-01"
    assert data["dates"][0]["bands"]["red"]["median"] > 0


def test_check_series_with_a_cloudy_first_reference_says_so():
    report = check_series(_series(n_time=3, clouds=(1.0, 0.1, 0.1)))
    assert all(not d.shift.measured for d in report.dates[1:])
    assert any("reference" in n for n in report.dates[1].notes)
    assert check_series(_series(n_time=3, clouds=(1.0, 0.1, 0.1)), reference="clearest").dates[1].shift.measured


def test_check_series_on_one_band():
    report = check_series(_series({2: (0.0, 2.0)}), band="nir")
    assert report.band == "nir"
    assert report.dates[2].shift.dx == pytest.approx(2.0, abs=0.1)


def test_check_series_reads_only_a_central_window_of_a_lazy_series():
    ds = _series({1: (1.0, 0.0)}).chunk({"time": 1, "y": 64, "x": 64})
    report = check_series(ds, max_size=128)
    assert report.window == (64, 192, 64, 192)
    assert report.dates[1].shift.dy == pytest.approx(1.0, abs=0.1)
    assert isinstance(ds["image"].data, da.Array)  # the input stays lazy


def _guarded(array: np.ndarray, chunks: tuple[int, ...], y_axis: int) -> da.Array:
    """A dask array whose blocks outside the central 2x2 blocks of a 4x4 spatial grid refuse to be read."""

    def guard(block, block_info=None):
        loc = block_info[0]["chunk-location"]
        if {loc[y_axis], loc[y_axis + 1]} & {0, 3}:
            raise RuntimeError(f"block {loc} outside the measured window was read")
        return block

    return da.from_array(array, chunks=chunks).map_blocks(guard, dtype=array.dtype)


def test_check_series_never_reads_outside_the_central_window():
    ds = _series({1: (0.0, 1.0)}, n_time=3, size=512)
    lazy = make_series(
        _guarded(ds["image"].values, (1, 3, 128, 128), 2),
        times=ds["time"].values,
        bands=["red", "green", "nir"],
        crs=TEST_CRS,
        transform=utm_transform(),
        valid=_guarded(ds["valid"].values, (1, 128, 128), 1),
    ).assign_coords(scale=("band", [1e-4] * 3))
    with pytest.raises(RuntimeError, match="outside the measured window"):
        lazy["image"].values  # noqa: B018 - the guard works
    report = check_series(lazy, max_size=128, reference="clearest")
    assert report.window == (192, 320, 192, 320)
    assert report.dates[1].shift.dx == pytest.approx(1.0, abs=0.1)


def test_check_series_rejects_bad_parameters():
    ds = _series(n_time=2)
    with pytest.raises(ParameterError, match="reference='last'"):
        check_series(ds, reference="last")  # type: ignore[arg-type]
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ParameterError, match="max_shift="):
            check_series(ds, max_shift=bad)
    with pytest.raises(BandMismatchError, match=r"band='swir1'.*\['red', 'green', 'nir'\]"):
        check_series(ds, band="swir1")
    with pytest.raises(ParameterError, match="min_valid="):
        check_series(ds, min_valid=1.5)


# --- fix_shift --------------------------------------------------------------------------------------------------


def test_fix_shift_undoes_the_measured_shifts():
    shifts = {1: (1.5, 1.5), 2: (0.3, -1.2), 3: (2.7, 0.0)}
    ds = _series(shifts)
    report = check_series(ds)
    fixed = fix_shift(ds, report)
    again = check_series(fixed)
    for d in again.dates:
        assert d.shift.magnitude < 0.1, d
    assert again.flagged == []
    # same grid, dtype, dates, bands and CRS
    assert fixed["image"].dtype == ds["image"].dtype and fixed["image"].shape == ds["image"].shape
    assert fixed.rio.crs == ds.rio.crs and list(fixed["band"].values) == ["red", "green", "nir"]
    assert fixed.attrs["coregistered"] == 1 and fixed.attrs["coregistered_to"].startswith("2021-01-01")


def test_fix_shift_marks_pixels_from_outside_invalid_and_moves_labels():
    ds = _series({1: (2.0, -3.0)}, clouds=(0.0,), with_labels=True)
    fixed = fix_shift(ds, {"2021-02-01": (2.0, -3.0)})
    valid = fixed["valid"].values[1]
    # content moved down 2 and left 3 comes back up 2 and right 3: the last 2 rows, first 3 columns have no source
    assert not valid[-2:].any() and not valid[:, :3].any()
    assert valid[:-2, 3:].all()
    assert (fixed["image"].values[1][:, -2:] == 0).all()
    assert (fixed["labels"].values[1][-2:] == -1).all()
    assert np.array_equal(fixed["labels"].values[1][:-2, 3:], ds["labels"].values[1][2:, :-3])
    # other dates are untouched
    assert np.array_equal(fixed["image"].values[0], ds["image"].values[0])
    assert fixed["valid"].values[0].all()


def test_fix_shift_keeps_a_lazy_series_lazy_and_matches_the_eager_result():
    ds = _series({1: (1.3, -0.6)}, with_labels=True)
    shifts = {pd.Timestamp("2021-02-01"): Shift(1.3, -0.6), "2021-03-01": (0.0, 0.0)}
    eager = fix_shift(ds, shifts)
    lazy = fix_shift(ds.chunk({"time": 1, "y": 64, "x": 64}), shifts)
    assert isinstance(lazy["image"].data, da.Array) and isinstance(lazy["valid"].data, da.Array)
    for name in ("image", "valid", "labels"):
        assert np.array_equal(lazy[name].values, eager[name].values), name


def test_fix_shift_leaves_unmeasured_dates_alone_and_rejects_unknown_dates():
    ds = _series(n_time=2)
    same = fix_shift(ds, {"2021-02-01": Shift.missing("cloudy")})
    assert np.array_equal(same["image"].values, ds["image"].values)
    doubtful = Shift(4.0, 0.0, note="weak correlation peak (5.0); the shift is doubtful")
    assert doubtful.doubtful and not Shift(4.0, 0.0).doubtful and not Shift.missing("x").doubtful
    assert np.array_equal(fix_shift(ds, {"2021-02-01": doubtful})["image"].values, ds["image"].values)
    moved = fix_shift(ds, {"2021-02-01": doubtful}, include_doubtful=True)
    assert np.array_equal(moved["image"].values[1][:-4], ds["image"].values[1][4:])
    with pytest.raises(DateError, match="2030-01-01"):
        fix_shift(ds, {"2030-01-01": (1.0, 0.0)})
    with pytest.raises(ParameterError, match="order=9"):
        fix_shift(ds, {}, order=9)
    with pytest.raises(ParameterError, match="give a Shift or a"):
        fix_shift(ds, {"2021-02-01": "left"})  # type: ignore[dict-item]


@pytest.mark.realdata
def test_estimate_shift_on_a_real_landsat_scene_with_nodata_borders(shared_data):
    import rasterio

    path = shared_data / "landsat_rgb_byte" / "RGB.byte.tif"
    if not path.exists():
        pytest.skip(f"sample {path} not found")
    with rasterio.open(path) as src:
        rgb = src.read().astype(np.float64)
    lum, valid = rgb.mean(axis=0), (rgb > 0).all(axis=0)
    rng = np.random.default_rng(5)
    for shift in [(1.53, -0.77), (-0.31, 2.26)]:
        big = np.pad(lum, PAD, mode="reflect")
        moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(big), shift)).real[PAD:-PAD, PAD:-PAD]
        moved_valid = ndimage.shift(valid.astype(float), shift, order=1) > 0.999
        moved = 1.2 * moved + 10 + rng.normal(scale=5, size=moved.shape)
        cloud = _clouds(rng, 0.3, 1024)[: moved.shape[0], : moved.shape[1]]
        moved[cloud] = 255
        got = estimate_shift(lum, moved, valid_ref=valid, valid_mov=moved_valid & ~cloud)
        assert math.hypot(got.dy - shift[0], got.dx - shift[1]) < 0.1, got
