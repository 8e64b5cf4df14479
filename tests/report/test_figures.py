import io

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from changescope.discover.cluster import centroid_hierarchy
from changescope.report.figures import dendrogram_figure, linkage_from_merges, scatter_figure
from changescope.report.images import block_max, block_mean, figure_png, outline, png_uri, rgb_indices, to_uint8


def _bands(names, wavelengths=None):
    coords = {"band": names}
    if wavelengths is not None:
        coords["wavelength"] = ("band", wavelengths)
    return xr.Dataset(coords=coords)


def test_rgb_indices_by_name_wavelength_and_fallback():
    assert rgb_indices(_bands(["blue", "green", "red", "nir"])) == [2, 1, 0]
    assert rgb_indices(_bands(["B02", "B03", "B04", "B08"])) == [2, 1, 0]
    assert rgb_indices(_bands(["a", "b", "c", "d"], [842.0, 665.0, 560.0, 490.0])) == [1, 2, 3]
    assert rgb_indices(_bands(["x", "y"])) == [0, 1, 1]


def test_block_mean_ignores_nan():
    a = np.array([[1.0, np.nan, 5, 5], [3, np.nan, 5, 5]])
    out = block_mean(a, 2)
    np.testing.assert_allclose(out, [[2.0, 5.0]])
    assert np.isnan(block_mean(np.full((2, 2), np.nan), 2)).all()


def test_png_uri_is_deterministic_and_decodes():
    rng = np.random.default_rng(0)
    img = to_uint8(rng.random((3, 20, 30)), np.array([[0.0] * 3, [1.0] * 3]))
    outline(img, 2, 3, 10, 12, (255, 230, 0))
    assert img[2, 5].tolist() == [255, 230, 0]
    uri = png_uri(img)
    assert uri == png_uri(img) and uri.startswith("data:image/png;base64,")
    import base64

    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.size == (30, 20)


def test_dendrogram_from_clusters_json_merges():
    centroids = np.random.default_rng(1).normal(size=(4, 6))
    h = centroid_hierarchy(centroids, np.array([5, 3, 2, 7]))
    z = linkage_from_merges(h["merges"], 4)
    assert z.shape == (3, 4) and np.all(np.diff(z[:, 2]) >= 0)
    png = figure_png(dendrogram_figure(h["merges"], [f"type {i}" for i in range(4)]))
    with Image.open(io.BytesIO(png)) as im:
        assert im.size[0] > 100
    assert figure_png(dendrogram_figure(h["merges"], [f"type {i}" for i in range(4)])) == png


def test_scatter_figure_groups():
    xy = np.random.default_rng(2).normal(size=(30, 2))
    groups = pd.Series(["no change"] * 10 + ["type 0"] * 10 + ["noise"] * 10)
    png = figure_png(scatter_figure(xy, groups.tolist(), "t"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_block_max_ignores_nan_and_keeps_the_highest():
    a = np.array(
        [[1.0, np.nan, 0.0, 0.0], [3.0, 2.0, 0.0, 9.0], [np.nan, np.nan, 5.0, 4.0], [np.nan, np.nan, 4.0, 4.0]]
    )
    out = block_max(a, 2)
    np.testing.assert_array_equal(out, np.array([[3.0, 9.0], [np.nan, 5.0]], dtype=np.float32))
    assert out.dtype == np.float32


@pytest.mark.parametrize("how", ["mean", "max"])
@pytest.mark.parametrize(("size", "stride", "factor"), [(16, 16, 3), (16, 8, 5), (7, 7, 1), (8, 8, 64)])
def test_painted_mean_strip_by_strip_equals_the_whole_painting_reduced(monkeypatch, size, stride, factor, how):
    from affine import Affine

    import changescope.report.images as images
    from changescope.grid import PatchGrid

    grid = PatchGrid(size, stride, 203, 190, Affine(10.0, 0, 0.0, 0, -10.0, 0.0), "EPSG:32633")
    vals = np.random.default_rng(3).normal(size=grid.shape)
    vals[2, :4] = np.nan
    reduce = images.block_mean if how == "mean" else images.block_max
    want = reduce(grid.paint(vals), factor)
    monkeypatch.setattr(images, "READ_BYTES", 8 * 4 * factor * 190 * 2)  # strips of two block rows
    got = images.painted_mean(grid, vals, factor, reduce)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
