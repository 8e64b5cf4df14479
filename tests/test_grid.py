import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from changescope.errors import GridMismatchError, ParameterError
from changescope.grid import PatchGrid


@st.composite
def grids(draw):
    size = draw(st.integers(1, 12))
    stride = draw(st.integers(1, size + 4))
    height = draw(st.integers(size, 60))
    width = draw(st.integers(size, 60))
    res = draw(st.sampled_from([1.0, 3.0, 10.0, 0.5]))
    return PatchGrid(size, stride, height, width, Affine(res, 0, 1000.0, 0, -res, 5000.0), "EPSG:32633")


@settings(max_examples=80, deadline=None)
@given(grids(), st.data())
def test_window_polygon_pixel_round_trip(grid, data):
    row = data.draw(st.integers(0, grid.n_rows - 1))
    col = data.draw(st.integers(0, grid.n_cols - 1))
    ys, xs = grid.window(row, col)
    assert (ys.stop - ys.start, xs.stop - xs.start) == (grid.size, grid.size)
    assert ys.stop <= grid.height and xs.stop <= grid.width
    # every pixel of the window maps back to this patch
    y = data.draw(st.integers(ys.start, ys.stop - 1))
    x = data.draw(st.integers(xs.start, xs.stop - 1))
    assert (row, col) in grid.patches_containing(y, x)
    # the polygon is the window in map units and contains the pixel centre
    poly = grid.polygon(row, col)
    res = grid.transform.a
    assert poly.area == pytest.approx((grid.size * res) ** 2)
    cx, cy = grid.transform @ (x + 0.5, y + 0.5)
    assert poly.contains(shapely.Point(cx, cy))
    vec = grid.polygons(np.array([row]), np.array([col]))
    assert vec[0].equals(poly)


@settings(max_examples=60, deadline=None)
@given(grids(), st.integers(0, 2**31))
def test_paint_then_aggregate_is_identity_without_overlap(grid, seed):
    grid = PatchGrid(grid.size, grid.size, grid.height, grid.width, grid.transform)
    vals = np.random.default_rng(seed).normal(size=grid.shape)
    painted = grid.paint(vals)
    assert np.allclose(grid.aggregate(painted, "mean"), vals)
    covered = grid.n_rows * grid.size, grid.n_cols * grid.size
    assert np.isnan(painted[covered[0] :, :]).all()
    assert np.isfinite(painted[: covered[0], : covered[1]]).all()


@settings(max_examples=40, deadline=None)
@given(grids(), st.integers(0, 2**31))
def test_aggregate_matches_naive_loop(grid, seed):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(2, grid.height, grid.width))
    img[rng.random(img.shape) < 0.1] = np.nan
    lab = rng.integers(-1, 4, size=(grid.height, grid.width))
    mean = grid.aggregate(img, "mean")
    maj = grid.aggregate(lab, "majority")
    frac = grid.aggregate(lab > 1, "fraction")
    for r in range(grid.n_rows):
        for c in range(grid.n_cols):
            ys, xs = grid.window(r, c)
            block = img[:, ys, xs].reshape(2, -1)
            for t in range(2):
                fin = block[t][np.isfinite(block[t])]
                if fin.size:
                    assert mean[t, r, c] == pytest.approx(fin.mean())
                else:
                    assert np.isnan(mean[t, r, c])
            lb = lab[ys, xs].ravel()
            lb = lb[lb >= 0]
            if lb.size:
                counts = np.bincount(lb)
                assert maj[r, c] == int(np.argmax(counts))
            else:
                assert maj[r, c] == -1
            assert frac[r, c] == pytest.approx((lab[ys, xs] > 1).mean())


def test_overlapping_paint_averages():
    grid = PatchGrid(4, 2, 8, 8)
    assert grid.shape == (3, 3)
    vals = np.arange(9, dtype=float).reshape(3, 3)
    px = grid.paint(vals)
    # pixel (2, 2) is covered by patches (0,0), (0,1), (1,0), (1,1)
    assert px[2, 2] == pytest.approx(np.mean([0, 1, 3, 4]))
    assert px[0, 0] == 0


def test_for_series_uses_series_grid(tiny_series):
    grid = PatchGrid.for_series(tiny_series, 16)
    assert grid.shape == (4, 4)
    assert grid.transform == tiny_series.rio.transform()
    minx, _miny, _maxx, maxy = grid.bounds(0, 0)
    assert minx == pytest.approx(float(tiny_series.x[0]) - 5)
    assert maxy == pytest.approx(float(tiny_series.y[0]) + 5)


def test_patch_at_xy():
    grid = PatchGrid(10, 10, 100, 100, Affine(1, 0, 0, 0, -1, 100))
    assert grid.patch_at_xy(15.5, 100 - 25.5) == (2, 1)
    assert grid.patch_at_xy(-5, 50) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0, "height": 8, "width": 8}, "size=0"),
        ({"size": 4, "stride": -1, "height": 8, "width": 8}, "stride=-1"),
        ({"size": 16, "height": 8, "width": 8}, "larger than the raster"),
    ],
)
def test_bad_grid_parameters(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        PatchGrid(**kwargs)


def test_errors_on_wrong_shapes():
    grid = PatchGrid(4, 4, 8, 8)
    with pytest.raises(GridMismatchError):
        grid.aggregate(np.zeros((9, 8)))
    with pytest.raises(GridMismatchError):
        grid.paint(np.zeros((3, 2)))
    with pytest.raises(ParameterError, match="outside"):
        grid.window(2, 0)
    with pytest.raises(ParameterError, match="majority"):
        grid.aggregate(np.zeros((8, 8)), "majority")


@settings(max_examples=60, deadline=None)
@given(grids(), st.integers(0, 2**31), st.data())
def test_paint_of_a_strip_of_rows_equals_those_rows_of_the_whole_painting(grid, seed, data):
    vals = np.random.default_rng(seed).normal(size=(2, *grid.shape))
    vals[0, 0, 0] = np.nan
    whole = grid.paint(vals)
    y0 = data.draw(st.integers(0, grid.height))
    y1 = data.draw(st.integers(0, grid.height + 5))
    strip = grid.paint(vals, rows=slice(y0, y1))
    assert strip.shape == (2, max(0, min(y1, grid.height) - y0), grid.width)
    np.testing.assert_array_equal(strip, whole[:, y0:y1])
