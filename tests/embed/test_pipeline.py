"""The embedding pipeline: exactness of tiling + pooling, band mapping, determinism, local cluster, real encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from embed_helpers import assert_same_store, load_store

from changescope.embed import BlockLayout, embed_series, open_embeddings
from changescope.encoders import create_encoder, list_encoders
from changescope.encoders.bands import band_indices, normalize
from changescope.errors import BandMismatchError, ParameterError
from changescope.grid import PatchGrid
from changescope.series import band_infos, reflectance
from changescope.testing import make_test_series


def direct_embeddings(ds: xr.Dataset, name: str, size: int, stride: int, min_valid: float = 0.5) -> np.ndarray:
    """The encoder applied to each patch's own pixels, one patch at a time, then averaged over its tokens.

    Tokens are weighted by their share of valid pixels (masked pooling).
    """
    infos = band_infos(ds)
    encoder = create_encoder(name, bands=infos) if name == "test_conv" else create_encoder(name)
    idx = band_indices(infos, encoder.meta)
    refl = reflectance(ds).values[:, idx]
    grid = PatchGrid.for_series(ds, size, stride)
    vf = grid.aggregate(ds["valid"].values, "fraction")
    out = np.full((ds.sizes["time"], *grid.shape, encoder.embed_dim), np.nan, dtype=np.float32)
    with torch.inference_mode():
        for t in range(ds.sizes["time"]):
            for r in range(grid.n_rows):
                for c in range(grid.n_cols):
                    if vf[t, r, c] < min_valid or vf[t, r, c] == 0:
                        continue
                    ys, xs = grid.window(r, c)
                    x = normalize(
                        torch.from_numpy(refl[t, :, ys, xs][None].copy()),
                        encoder.meta.normalization,
                        keep_nan=encoder.meta.accepts_nan,
                    )
                    fmap = encoder.feature_map(x)[0].numpy()
                    tok = encoder.patch_size
                    h, w = fmap.shape[-2:]
                    weight = ds["valid"].values[t, ys, xs].reshape(h, tok, w, tok).mean(axis=(1, 3))
                    out[t, r, c] = (fmap * weight).sum(axis=(-2, -1)) / weight.sum()
    return out


@pytest.mark.parametrize(
    ("name", "size", "stride", "block"),
    [("test_conv", 8, 8, None), ("test_conv", 8, 4, 32), ("test_conv", 12, 8, 40), ("test_conv_rgbn", 16, 4, 32)],
)
def test_pipeline_equals_encoder_on_each_patch(
    cloudy_series: xr.Dataset, tmp_path: Path, name: str, size: int, stride: int, block: int | None
) -> None:
    out = embed_series(
        cloudy_series, name, patch_size=size, stride=stride, out=tmp_path / "e.zarr", block=block, progress=False
    )
    got = load_store(out)["embedding"]
    want = direct_embeddings(cloudy_series, name, size, stride)
    assert np.isnan(got).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_edge_tiles_are_padded_by_reflection(tmp_path: Path) -> None:
    ds = make_test_series(seed=5, n_time=1, height=37, width=45)
    out = embed_series(ds, "test_conv", patch_size=8, stride=4, out=tmp_path / "e.zarr", progress=False)
    got = load_store(out)["embedding"]
    assert got.shape == (1, 8, 10, 8) and np.isfinite(got).all()
    np.testing.assert_allclose(got, direct_embeddings(ds, "test_conv", 8, 4), rtol=1e-5, atol=1e-5)


def test_band_mapping_by_alias(tmp_path: Path) -> None:
    ds = make_test_series(seed=2, n_time=2, bands=("B08", "B04", "B03", "B02", "B11"), height=32, width=32)
    out = embed_series(ds, "test_conv_rgbn", patch_size=8, out=tmp_path / "e.zarr", progress=False)
    with open_embeddings(out) as store:
        assert store.attrs["bands"] == ["B02", "B03", "B04", "B08"]
        assert store.attrs["series_bands"] == ["B08", "B04", "B03", "B02", "B11"]
        got = store["embedding"].values
    np.testing.assert_allclose(got, direct_embeddings(ds, "test_conv_rgbn", 8, 8), rtol=1e-5, atol=1e-5)


def test_missing_band_and_bad_parameters(tmp_path: Path) -> None:
    rgb = make_test_series(seed=2, n_time=1, bands=("red", "green", "blue"), height=32, width=32)
    with pytest.raises(BandMismatchError, match="needs band 'nir'"):
        embed_series(rgb, "test_conv_rgbn", patch_size=8, out=tmp_path / "a.zarr", progress=False)
    bad: list[tuple[dict[str, object], str]] = [
        ({"patch_size": 64}, "larger than the raster"),
        ({"stride": 0}, "stride=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"min_valid": 1.5}, "min_valid=1.5"),
        ({"block": -1}, "block=-1"),
        ({"workers": 0}, "workers=0"),
        ({"workers": 2, "scheduler": "tcp://x:1"}, "not both"),
        ({"device": "tpu"}, "device='tpu'"),
    ]
    for kwargs, message in bad:
        args: dict[str, object] = {"patch_size": 8, **kwargs}
        with pytest.raises(ParameterError, match=message):
            embed_series(rgb, "test_conv", out=tmp_path / "b.zarr", progress=False, **args)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="encoder='nope' is unknown"):
        embed_series(rgb, "nope", patch_size=8, out=tmp_path / "c.zarr", progress=False)
    assert not (tmp_path / "b.zarr").exists()


def test_runs_are_deterministic(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    kwargs = {"patch_size": 8, "stride": 4, "block": 32, "progress": False}
    a = embed_series(cloudy_series, "test_conv_rgbn", out=tmp_path / "a.zarr", **kwargs)  # type: ignore[arg-type]
    b = embed_series(cloudy_series, "test_conv_rgbn", out=tmp_path / "b.zarr", **kwargs)  # type: ignore[arg-type]
    assert_same_store(a, b)


def test_lazy_series_reads_blocks(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    lazy = cloudy_series.chunk({"time": 1, "y": 16, "x": 16})
    a = embed_series(cloudy_series, "test_conv", patch_size=8, out=tmp_path / "a.zarr", block=32, progress=False)
    b = embed_series(lazy, "test_conv", patch_size=8, out=tmp_path / "b.zarr", block=32, progress=True)
    assert_same_store(a, b)


@pytest.mark.slow
def test_local_cluster_gives_the_identical_store(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    kwargs = {"patch_size": 8, "stride": 4, "block": 32, "progress": False}
    a = embed_series(cloudy_series, "test_conv", out=tmp_path / "a.zarr", **kwargs)  # type: ignore[arg-type]
    b = embed_series(cloudy_series, "test_conv", out=tmp_path / "b.zarr", workers=2, **kwargs)  # type: ignore[arg-type]
    assert_same_store(a, b)


def test_layout_tiles_align_with_tokens_and_patches() -> None:
    grid = PatchGrid(size=32, stride=16, height=1000, width=700)
    layout = BlockLayout.plan(grid, token=14, input_size=224, block=500)
    assert layout.tile == 224 and layout.tile % 14 == 0 and layout.tile % 16 == 0
    assert layout.block == 672 and layout.block % layout.tile == 0
    assert layout.tile_extent == 252 and layout.tile_extent >= layout.tile - 16 + 32
    assert layout.per_block * layout.n_block_rows >= grid.n_rows
    assert (layout.n_block_rows, layout.n_block_cols) == (2, 1)
    assert layout.block_patches(1, 0) == (42, grid.n_rows, 0, grid.n_cols)
    with pytest.raises(ParameterError, match="outside"):
        layout.block_patches(0, 1)
    small = BlockLayout.plan(PatchGrid(size=8, height=20, width=20), token=4, input_size=32)
    assert small.block == 32 and small.n_block_rows == 1


def _needs(name: str) -> None:
    assert name in list_encoders(), f"built-in encoder {name!r} is not registered"


@pytest.mark.parametrize("name", ["spectral", "resnet18"])
def test_real_encoders_run_through_the_pipeline(tmp_path: Path, name: str) -> None:
    _needs(name)
    ds = make_test_series(seed=4, n_time=2, height=72, width=80, cloud_fraction=0.2)
    kwargs = {"weights": "random", "patch_size": 16, "stride": 8, "block": 64, "progress": False}
    a = embed_series(ds, name, out=tmp_path / "a.zarr", **kwargs)  # type: ignore[arg-type]
    b = embed_series(ds, name, out=tmp_path / "b.zarr", **kwargs)  # type: ignore[arg-type]
    assert_same_store(a, b)
    arrays = load_store(a)
    keep = arrays["valid_fraction"] >= 0.5
    assert np.isfinite(arrays["embedding"][keep]).all()
    assert np.isnan(arrays["embedding"][~keep]).all()
    if name == "spectral":
        np.testing.assert_allclose(arrays["embedding"], direct_embeddings(ds, name, 16, 8), rtol=1e-4, atol=1e-5)
