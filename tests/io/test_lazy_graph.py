"""A lazily read raster is one graph layer whatever its chunk count, and reads the file's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from changescope.io.raster import read_lazy


def test_a_lazy_raster_is_one_layer_and_reads_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    data = rng.integers(0, 5000, size=(3, 150, 170)).astype(np.uint16)
    path = tmp_path / "r.tif"
    profile = {"driver": "GTiff", "height": 150, "width": 170, "count": 3, "dtype": "uint16", "crs": "EPSG:32633"}
    with rasterio.open(path, "w", transform=Affine(10, 0, 0, 0, -10, 0), **profile) as dst:
        dst.write(data)
    lazy = read_lazy(path, chunk=32)
    arr = lazy.data
    assert arr.numblocks == (1, 5, 6)
    assert len(arr.dask.layers) == 1  # not one layer per chunk: culling stays linear in the chunks
    np.testing.assert_array_equal(np.asarray(lazy.values), data)
    window = np.asarray(arr[:, 40:90, 100:170])
    np.testing.assert_array_equal(window, data[:, 40:90, 100:170])
