import numpy as np
import pytest
import rasterio

from changescope.errors import ParameterError
from changescope.io.writers import atomic_path, write_geotiff
from changescope.testing import utm_transform


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_directories(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["store.zarr"]


def test_cog_is_tiled_with_overviews(tmp_path):
    arr = np.random.default_rng(0).normal(size=(1, 600, 600)).astype("float32")
    out = write_geotiff(
        tmp_path / "m.tif", arr, crs="EPSG:32633", transform=utm_transform(), cog=True, descriptions=["score"]
    )
    with rasterio.open(out) as src:
        assert src.profile["tiled"]
        assert src.overviews(1)
        assert src.descriptions == ("score",)
        np.testing.assert_array_equal(src.read(), arr)


def test_write_geotiff_checks_shapes(tmp_path):
    with pytest.raises(ParameterError, match="shape"):
        write_geotiff(tmp_path / "x.tif", np.zeros((1, 1, 2, 2)), crs="EPSG:4326", transform=utm_transform())
    with pytest.raises(ParameterError, match="descriptions"):
        write_geotiff(
            tmp_path / "x.tif", np.zeros((2, 2, 2)), crs="EPSG:4326", transform=utm_transform(), descriptions=["a"]
        )
