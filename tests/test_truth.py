import numpy as np
import pandas as pd
import pytest
import xarray as xr

from changescope.errors import GridMismatchError, ParameterError
from changescope.grid import PatchGrid
from changescope.truth import mask_change, patch_change, patch_change_series, series_truth


def test_patch_change_rules():
    grid = PatchGrid(4, 4, 8, 8)
    a = np.zeros((8, 8), int)
    b = a.copy()
    b[0:2, 0:4] = 2  # patch (0,0): 8/16 changed 0->2
    b[0, 4] = 1  # patch (0,1): 1/16 changed = 0.0625 >= 0.05
    a[4:8, 0:4] = -1  # patch (1,0): unknown
    b[4:6, 4:8] = 3
    b[6, 4:6] = 1  # patch (1,1): 8 px 0->3, 2 px 0->1 -> dominant 0->3
    res = patch_change(a, b, grid)
    assert res.fraction[0, 0] == pytest.approx(0.5)
    assert res.fraction[0, 1] == pytest.approx(1 / 16)
    assert np.isnan(res.fraction[1, 0]) and not res.known[1, 0] and not res.changed[1, 0]
    assert res.changed[0, 0] and res.changed[0, 1] and res.changed[1, 1]
    assert (res.from_class[0, 0], res.to_class[0, 0]) == (0, 2)
    assert (res.from_class[1, 1], res.to_class[1, 1]) == (0, 3)
    strict = patch_change(a, b, grid, min_fraction=0.1)
    assert not strict.changed[0, 1]


def test_patch_change_errors():
    grid = PatchGrid(4, 4, 8, 8)
    with pytest.raises(GridMismatchError):
        patch_change(np.zeros((8, 8)), np.zeros((8, 9)), grid)
    with pytest.raises(ParameterError, match="min_fraction"):
        patch_change(np.zeros((8, 8), int), np.zeros((8, 8), int), grid, min_fraction=0)


def test_series_previous_vs_first():
    grid = PatchGrid(4, 4, 4, 4)
    lab = np.zeros((4, 4, 4), np.int16)
    lab[2:, :2, :] = 1  # appears at t=2 and stays
    lab[1] = -1  # an unlabelled date is skipped
    da = xr.DataArray(lab, dims=("time", "y", "x"), coords={"time": pd.date_range("2020", periods=4, freq="MS")})
    prev = patch_change_series(da, grid)
    assert list(pd.DatetimeIndex(prev.time.values).month) == [3, 4]
    assert prev.changed.values[:, 0, 0].tolist() == [True, False]
    first = patch_change_series(da, grid, reference="first")
    assert first.changed.values[:, 0, 0].tolist() == [True, True]
    assert first.fraction.values[1, 0, 0] == pytest.approx(0.5)


def test_mask_change_and_series_truth(tiny_series):
    grid = PatchGrid.for_series(tiny_series, 16)
    mask = np.zeros((64, 64), np.int8)
    mask[:16, :8] = 1
    mask[16:32, :16] = -1
    res = mask_change(mask, grid)
    assert res.fraction[0, 0] == pytest.approx(0.5)
    assert not res.known[1, 0]
    ds = tiny_series.assign(change=(("y", "x"), mask))
    truth = series_truth(ds, grid)
    assert truth.sizes["time"] == 1 and bool(truth.changed[0, 0, 0])
    with pytest.raises(ParameterError, match="no 'labels' or 'change'"):
        series_truth(tiny_series, grid)
