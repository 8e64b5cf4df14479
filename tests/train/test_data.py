"""TemporalPatches: location grid, date screening, halves, view sampling per mode, statistics and batches."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
import xarray as xr

from changescope.errors import BandMismatchError, EmptySeriesError, ParameterError
from changescope.series import reflectance
from changescope.testing import make_test_series
from changescope.train.data import SampleMode, TemporalPatches, Views

SIZE = 16


@pytest.fixture(scope="module")
def clear() -> xr.Dataset:
    return make_test_series(0, n_time=7, height=40, width=40)


@pytest.fixture(scope="module")
def cloudy() -> xr.Dataset:
    return make_test_series(1, n_time=10, height=40, width=56, cloud_fraction=0.3)


@pytest.fixture(scope="module")
def patches(clear: xr.Dataset, cloudy: xr.Dataset) -> TemporalPatches:
    return TemporalPatches.from_series([clear, cloudy], size=SIZE, min_valid=0.8)


def expected_usable(ds: xr.Dataset, y0: int, x0: int, min_valid: float) -> np.ndarray:
    """Indices of the dates whose window is at least min_valid valid, by a plain loop."""
    valid = ds["valid"].values
    fractions = [valid[t, y0 : y0 + SIZE, x0 : x0 + SIZE].mean() for t in range(valid.shape[0])]
    return np.array([t for t, f in enumerate(fractions) if f >= min_valid])


def test_grid_and_screening(patches: TemporalPatches, clear: xr.Dataset, cloudy: xr.Dataset) -> None:
    locs = patches.locations
    assert list(locs.columns) == ["aoi", "y0", "x0", "n_dates"]
    # clear AOI: 40 px gives windows at 0 and 16 on both axes, all 7 dates usable
    first = locs[locs.aoi == 0]
    assert sorted(zip(first.y0, first.x0, strict=True)) == [(0, 0), (0, 16), (16, 0), (16, 16)]
    assert (first.n_dates == 7).all()
    # cloudy AOI: every 2 x 3 window is kept exactly when the loop finds >= 4 usable dates
    rows = locs[["aoi", "y0", "x0", "n_dates"]].to_numpy().tolist()
    kept = {(y0, x0): n for aoi, y0, x0, n in rows if aoi == 1}
    expected = {}
    for y0 in (0, 16):
        for x0 in (0, 16, 32):
            usable = expected_usable(cloudy, y0, x0, 0.8)
            if len(usable) >= 4:
                expected[(y0, x0)] = len(usable)
    assert kept == expected
    assert 0 < len(kept) < 6, "the fixture should drop some cloudy locations"
    assert sum(expected.values()) < 6 * 10, "the fixture should drop some cloudy dates"
    # the usable dates are those of the loop
    for loc, (aoi, y0, x0, _) in enumerate(rows):
        if aoi == 1:
            usable = expected_usable(cloudy, y0, x0, 0.8)
            np.testing.assert_array_equal(patches.dates(loc), cloudy["time"].values[usable])
    assert patches.n_locations == len(locs) == len(patches)
    assert patches.size == SIZE
    assert [b.name for b in patches.bands] == ["blue", "green", "red", "nir"]
    assert patches.nbytes == locs.n_dates.sum() * 4 * SIZE * SIZE * 2


def test_stride_and_max_locations(clear: xr.Dataset) -> None:
    dense = TemporalPatches.from_series([clear], size=SIZE, stride=8)
    assert dense.n_locations == 4 * 4  # starts 0, 8, 16, 24 on both axes
    sub = TemporalPatches.from_series([clear], size=SIZE, stride=8, max_locations=5, seed=3)
    again = TemporalPatches.from_series([clear], size=SIZE, stride=8, max_locations=5, seed=3)
    other = TemporalPatches.from_series([clear], size=SIZE, stride=8, max_locations=5, seed=4)
    assert sub.n_locations == 5
    assert sub.locations.equals(again.locations)
    assert not sub.locations.equals(other.locations)
    pairs = set(zip(dense.locations.y0, dense.locations.x0, strict=True))
    assert set(zip(sub.locations.y0, sub.locations.x0, strict=True)) <= pairs


def test_stricter_min_valid_drops_more(clear: xr.Dataset, cloudy: xr.Dataset) -> None:
    loose = TemporalPatches.from_series([cloudy], size=SIZE, min_valid=0.5)
    strict = TemporalPatches.from_series([cloudy], size=SIZE, min_valid=0.8)
    assert loose.locations.n_dates.sum() > strict.locations.n_dates.sum()
    with pytest.raises(EmptySeriesError, match="min_valid"):
        TemporalPatches.from_series([cloudy], size=SIZE, min_valid=1.0)


def test_min_valid_is_inclusive() -> None:
    ds = make_test_series(6, n_time=5, height=16, width=16)
    ds["valid"].values[0, :8] = False  # exactly half of the only window is invalid on the first date
    at = TemporalPatches.from_series([ds], size=SIZE, min_valid=0.5)
    above = TemporalPatches.from_series([ds], size=SIZE, min_valid=0.51)
    assert at.locations.n_dates.tolist() == [5]
    assert above.locations.n_dates.tolist() == [4]
    np.testing.assert_array_equal(above.dates(0), ds["time"].values[1:])


def test_refusals(clear: xr.Dataset) -> None:
    other_bands = make_test_series(2, n_time=7, height=40, width=40, bands=("red", "nir", "swir1", "swir2"))
    with pytest.raises(BandMismatchError, match=r"series\[1\].*'swir1'") as err:
        TemporalPatches.from_series([clear, other_bands], size=SIZE)
    assert "'blue'" in str(err.value)
    few = make_test_series(3, n_time=3, height=40, width=40)
    with pytest.raises(EmptySeriesError, match="min_dates"):
        TemporalPatches.from_series([few], size=SIZE, min_dates=2)
    with pytest.raises(EmptySeriesError, match="min_dates=9"):
        TemporalPatches.from_series([clear], size=SIZE, min_dates=9)
    with pytest.raises(EmptySeriesError, match="size=64"):
        TemporalPatches.from_series([clear], size=64)
    for kwargs, name in (
        ({"size": 0}, "size"),
        ({"stride": 0}, "stride"),
        ({"min_valid": 1.5}, "min_valid"),
        ({"min_dates": 0}, "min_dates"),
        ({"max_locations": 0}, "max_locations"),
        ({"seed": -1}, "seed"),
    ):
        with pytest.raises(ParameterError, match=name):
            TemporalPatches.from_series([clear], **kwargs)
    with pytest.raises(ParameterError, match="series"):
        TemporalPatches.from_series([])


def test_halves(clear: xr.Dataset) -> None:
    patches = TemporalPatches.from_series([clear], size=SIZE)
    older, recent = patches.halves(0)
    np.testing.assert_array_equal(older, [0, 1, 2])  # 7 dates: 3 older, 4 recent
    np.testing.assert_array_equal(recent, [3, 4, 5, 6])
    dates = patches.dates(0)
    assert np.all(np.diff(dates) > np.timedelta64(0))
    assert dates[older].max() < dates[recent].min()
    with pytest.raises(ParameterError, match="loc=4"):
        patches.dates(4)


def test_dates_sorted_when_series_is_not() -> None:
    ds = make_test_series(5, n_time=6, height=16, width=16)
    shuffled = ds.isel(time=[3, 0, 5, 1, 4, 2])
    patches = TemporalPatches.from_series([shuffled], size=SIZE)
    np.testing.assert_array_equal(patches.dates(0), ds["time"].values)
    views = patches.sample(np.zeros(8, dtype=np.int64), "moco", torch.Generator().manual_seed(0))
    expected = reflectance(ds).values.astype(np.float16).astype(np.float32)[views.query_date]
    np.testing.assert_array_equal(views.query.numpy(), expected)


def draw(patches: TemporalPatches, mode: str, seed: int = 0, repeats: int = 300) -> tuple[np.ndarray, Views]:
    locs = np.repeat(np.arange(patches.n_locations), repeats)
    return locs, patches.sample(locs, cast(SampleMode, mode), torch.Generator().manual_seed(seed))


def half_of(patches: TemporalPatches, locs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    older: np.ndarray = patches.locations.n_dates.to_numpy()[locs] // 2
    return np.asarray(idx >= older)  # True = recent half


@pytest.mark.parametrize("mode", ["moco", "seco", "caco"])
def test_sample_semantics(patches: TemporalPatches, mode: str) -> None:
    locs, views = draw(patches, mode)
    n = patches.locations.n_dates.to_numpy()[locs]
    for idx in (views.query_date, views.short_date, views.long_date):
        assert idx.dtype == np.int64 and idx.shape == locs.shape
        assert np.all((idx >= 0) & (idx < n))
    q_half, s_half = half_of(patches, locs, views.query_date), half_of(patches, locs, views.short_date)
    assert np.all(half_of(patches, locs, views.long_date) != q_half), "long must come from the other half"
    assert q_half.any() and not q_half.all(), "queries should come from both halves"
    if mode == "moco":
        np.testing.assert_array_equal(views.short_date, views.query_date)
    else:
        assert np.all(views.short_date != views.query_date)
    if mode == "caco":
        assert np.all(s_half == q_half)
    if mode == "seco":
        assert np.any(s_half != q_half), "seco draws the short key from all dates"
    # every usable date of every location is reached as a query
    for loc in range(patches.n_locations):
        assert set(views.query_date[locs == loc]) == set(range(int(n[locs == loc][0])))
    shape = (len(locs), 4, SIZE, SIZE)
    assert views.query.shape == views.short.shape == views.long.shape == shape
    assert views.query.dtype == torch.float32


def test_sample_determinism(patches: TemporalPatches) -> None:
    _, a = draw(patches, "caco", seed=1, repeats=4)
    _, b = draw(patches, "caco", seed=1, repeats=4)
    _, c = draw(patches, "caco", seed=2, repeats=4)
    for name in ("query", "short", "long"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0, equal_nan=True)
    np.testing.assert_array_equal(a.long_date, b.long_date)
    assert not np.array_equal(a.query_date, c.query_date)
    assert not torch.equal(a.query.nan_to_num(), c.query.nan_to_num())


def test_sample_values_match_reflectance(patches: TemporalPatches, cloudy: xr.Dataset) -> None:
    locs = np.flatnonzero(patches.locations.aoi.to_numpy() == 1)
    views = patches.sample(locs, "seco", torch.Generator().manual_seed(7))
    refl = reflectance(cloudy)
    for i, loc in enumerate(locs):
        row = patches.locations.iloc[loc]
        date = patches.dates(loc)[views.long_date[i]]
        window = refl.sel(time=date).isel(y=slice(row.y0, row.y0 + SIZE), x=slice(row.x0, row.x0 + SIZE)).values
        expected = torch.from_numpy(window.astype(np.float16).astype(np.float32))
        torch.testing.assert_close(views.long[i], expected, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(views.long).any(), "cloudy crops keep NaN at invalid pixels"


def test_sample_refusals(patches: TemporalPatches) -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ParameterError, match="mode='simclr'"):
        patches.sample(np.arange(2), "simclr", gen)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="locs"):
        patches.sample(np.array([patches.n_locations]), "moco", gen)
    with pytest.raises(ParameterError, match="locs"):
        patches.sample(np.array([0.5]), "moco", gen)


def test_dask_backed_series_gives_same_crops(cloudy: xr.Dataset) -> None:
    eager = TemporalPatches.from_series([cloudy], size=SIZE, stride=12, min_valid=0.7)
    lazy = TemporalPatches.from_series([cloudy.chunk({"time": 1, "y": 20})], size=SIZE, stride=12, min_valid=0.7)
    assert eager.locations.equals(lazy.locations)
    locs = np.arange(eager.n_locations)
    a = eager.sample(locs, "caco", torch.Generator().manual_seed(0))
    b = lazy.sample(locs, "caco", torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.query, b.query, rtol=0, atol=0, equal_nan=True)


def test_band_stats(cloudy: xr.Dataset) -> None:
    # windows tile the 32 x 48 top-left of the image; min_valid=0 keeps every date
    patches = TemporalPatches.from_series([cloudy], size=SIZE, min_valid=0.0)
    values = reflectance(cloudy).values[:, :, :32, :48].astype(np.float16).astype(np.float64)
    mean, std = patches.band_stats()
    assert mean.dtype == std.dtype == np.float64
    np.testing.assert_allclose(mean, np.nanmean(values, axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, np.nanstd(values, axis=(0, 2, 3)), rtol=1e-6)
    norm = patches.normalization()
    assert norm.kind == "meanstd"
    assert norm.mean == tuple(mean) and norm.std == tuple(std)
    assert all(type(v) is float for v in norm.mean + norm.std)


def test_band_stats_floors_std() -> None:
    ds = make_test_series(4, n_time=4, height=16, width=16)
    ds["image"].values[:, 0] = 5000
    mean, std = TemporalPatches.from_series([ds], size=SIZE).band_stats()
    assert mean[0] == pytest.approx(0.5, abs=1e-3)
    assert std[0] == 1e-6
    assert std[1] > 1e-3


def test_batches(patches: TemporalPatches) -> None:
    n = patches.n_locations
    batches = patches.batches(epoch=0, batch_size=3, seed=0)
    assert len(batches) == n // 3
    assert all(b.shape == (3,) and b.dtype == np.int64 for b in batches)
    flat = np.concatenate(batches)
    assert len(set(flat)) == len(flat) and flat.min() >= 0 and flat.max() < n
    again = patches.batches(epoch=0, batch_size=3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not np.array_equal(flat, np.concatenate(patches.batches(epoch=1, batch_size=3, seed=0)))
    assert not np.array_equal(flat, np.concatenate(patches.batches(epoch=0, batch_size=3, seed=1)))
    assert len(patches.batches(epoch=0, batch_size=n, seed=0)) == 1
    with pytest.raises(ParameterError, match="batch_size"):
        patches.batches(epoch=0, batch_size=n + 1, seed=0)
    with pytest.raises(ParameterError, match="batch_size"):
        patches.batches(epoch=0, batch_size=0, seed=0)
