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


# ------------------------------------------------------------------------------- truth rasters off the series grid


def _truth_series_and_mask():
    from changescope.testing import make_test_series

    ds = make_test_series(seed=1, n_time=2, height=64, width=64)
    change = np.zeros((64, 64), np.int8)
    change[16:40, 8:30] = 1
    return ds, change


def _write_mask(path, change, crs, transform):
    from changescope.io.writers import write_geotiff

    # OSCD encoding: 1 = no change, 2 = change, 0 = unknown (outside the footprint after a reprojection)
    return write_geotiff(path, (change + 1).astype(np.uint8), crs=crs, transform=transform, nodata=0)


def test_change_mask_on_the_series_grid_is_read_as_is(tmp_path):
    import warnings

    from changescope.series import series_transform
    from changescope.truth import change_mask_on_grid

    ds, change = _truth_series_and_mask()
    path = _write_mask(tmp_path / "cm.tif", change, ds.rio.crs, series_transform(ds))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        np.testing.assert_array_equal(change_mask_on_grid(path, ds), change)


def test_change_mask_in_another_crs_is_reprojected_with_a_warning(tmp_path):
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from changescope.series import series_transform
    from changescope.truth import change_mask_on_grid

    ds, change = _truth_series_and_mask()
    src_tf = series_transform(ds)
    left, top = src_tf * (0, 0)
    right, bottom = src_tf * (64, 64)
    dst_tf, w, h = calculate_default_transform(ds.rio.crs, "EPSG:4326", 64, 64, left, bottom, right, top)
    stored = np.zeros((h, w), np.uint8)
    reproject(
        (change + 1).astype(np.uint8),
        stored,
        src_transform=src_tf,
        src_crs=ds.rio.crs,
        dst_transform=dst_tf,
        dst_crs="EPSG:4326",
        src_nodata=0,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    path = _write_mask(tmp_path / "cm_4326.tif", stored.astype(np.int8) - 1, "EPSG:4326", dst_tf)
    with pytest.warns(UserWarning, match=r"cm_4326\.tif.*EPSG:4326.*reprojected"):
        back = change_mask_on_grid(path, ds)
    assert back.shape == (64, 64)
    known = back >= 0
    assert known.mean() > 0.9
    assert (back[known] == change[known]).mean() > 0.97
    grid = PatchGrid.for_series(ds, 16)
    right_truth, got = mask_change(change, grid), mask_change(back, grid)
    np.testing.assert_array_equal(got.changed, right_truth.changed)
    np.testing.assert_allclose(got.fraction, right_truth.fraction, atol=0.1)


def test_change_mask_on_a_shifted_grid_is_moved_not_misread(tmp_path):
    from changescope.series import series_transform
    from changescope.truth import change_mask_on_grid

    ds, change = _truth_series_and_mask()
    tf = series_transform(ds)
    shifted = tf * tf.translation(32, 0)  # the same array, but georeferenced 32 px further east
    path = _write_mask(tmp_path / "cm_east.tif", change, ds.rio.crs, shifted)
    with pytest.warns(UserWarning, match="another grid"):
        back = change_mask_on_grid(path, ds)
    expected = np.full((64, 64), -1, np.int8)
    expected[:, 32:] = change[:, :32]
    np.testing.assert_array_equal(back, expected)
    grid = PatchGrid.for_series(ds, 16)
    misread, right = mask_change(change, grid), mask_change(back, grid)
    assert not np.array_equal(misread.changed, right.changed)
    assert not right.known[:, :2].any() and misread.changed[1:3, 0:2].all()
    assert right.changed[1:3, 2:4].any()


def test_change_mask_that_does_not_overlap_is_refused(tmp_path):
    from changescope.errors import CRSMismatchError
    from changescope.series import series_transform
    from changescope.truth import change_mask_on_grid

    ds, change = _truth_series_and_mask()
    # same shape and transform numbers, but in the next UTM zone: hundreds of km away
    path = _write_mask(tmp_path / "cm_34.tif", change, "EPSG:32634", series_transform(ds))
    before = path.read_bytes()
    with pytest.raises(CRSMismatchError, match=r"cm_34\.tif.*do not overlap") as err:
        change_mask_on_grid(path, ds)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before


def test_change_mask_without_georeference_needs_the_series_shape(tmp_path):
    import rasterio

    from changescope.truth import change_mask_on_grid

    ds, change = _truth_series_and_mask()
    path = tmp_path / "cm_plain.tif"
    profile = {"driver": "GTiff", "width": 48, "height": 64, "count": 1, "dtype": "uint8"}
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(path, "w", **profile) as dst:
        dst.write((change[:, :48] + 1)[None].astype(np.uint8))
    with pytest.raises(GridMismatchError, match=r"cm_plain\.tif.*\(64, 48\).*\(64, 64\)"):
        change_mask_on_grid(path, ds)
