"""Pooling a dense feature map onto the patch grid, against a naive per-patch upsample-and-mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from changescope.embed.pooling import overlap_matrix, patch_valid_fraction, pool_feature_map
from changescope.errors import ParameterError
from changescope.grid import PatchGrid


def naive_pool(features: np.ndarray, token: int, size: int, stride: int, n_rows: int, n_cols: int) -> np.ndarray:
    """Upsample every token to its pixels, then average each patch window pixel by pixel."""
    pixels = np.repeat(np.repeat(features, token, axis=-2), token, axis=-1)  # (N, D, H, W)
    out = np.empty((*features.shape[:2], n_rows, n_cols))
    for r in range(n_rows):
        for c in range(n_cols):
            y0, x0 = r * stride, c * stride
            out[:, :, r, c] = pixels[:, :, y0 : y0 + size, x0 : x0 + size].mean(axis=(-2, -1))
    return out


@pytest.mark.parametrize(
    ("token", "size", "stride"),
    [(4, 8, 8), (4, 8, 4), (4, 8, 3), (14, 32, 32), (14, 32, 16), (14, 32, 10), (4, 6, 5), (16, 8, 8)],
)
def test_pool_matches_naive_upsample_and_mean(token: int, size: int, stride: int) -> None:
    rng = np.random.default_rng(token * 100 + size + stride)
    n_tok = 9
    extent = n_tok * token
    n_rows = (extent - size) // stride + 1
    feats = rng.normal(size=(2, 5, n_tok, n_tok))
    ay = overlap_matrix(n_rows, size, stride, n_tok, token)
    got = pool_feature_map(torch.from_numpy(feats), torch.from_numpy(ay), torch.from_numpy(ay)).numpy()
    want = naive_pool(feats, token, size, stride, n_rows, n_rows)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_pool_rectangular_and_float32() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(3, 4, 6, 10)).astype(np.float32)
    ay = overlap_matrix(3, 32, 16, 6, 14)
    ax = overlap_matrix(7, 32, 16, 10, 14)
    got = pool_feature_map(torch.from_numpy(feats), torch.from_numpy(ay), torch.from_numpy(ax))
    assert got.dtype == torch.float32
    assert tuple(got.shape) == (3, 4, 3, 7)
    pixels = np.repeat(np.repeat(feats.astype(np.float64), 14, axis=-2), 14, axis=-1)
    want = pixels[:, :, 16 : 16 + 32, 48 : 48 + 32].mean(axis=(-2, -1))
    np.testing.assert_allclose(got[:, :, 1, 3].numpy(), want, rtol=1e-5, atol=1e-6)


def test_overlap_rows_sum_to_patch_size_and_offset() -> None:
    a = overlap_matrix(5, 32, 16, 12, 14)
    np.testing.assert_array_equal(a.sum(axis=1), 32.0)
    assert a[0].tolist()[:4] == [14.0, 14.0, 4.0, 0.0]
    shifted = overlap_matrix(1, 4, 4, 3, 4, offset=2)
    assert shifted.tolist() == [[2.0, 2.0, 0.0]]


def test_pool_rejects_mismatched_weights() -> None:
    feats = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ParameterError, match="overlap weights"):
        pool_feature_map(feats, torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ParameterError, match="covers no token"):
        pool_feature_map(feats, torch.zeros(2, 4), torch.ones(2, 4))
    with pytest.raises(ParameterError, match="stride=0"):
        overlap_matrix(2, 4, 0, 4, 4)


@pytest.mark.parametrize(("size", "stride"), [(8, 8), (8, 4), (5, 3), (16, 7)])
def test_valid_fraction_equals_grid_aggregate(size: int, stride: int) -> None:
    rng = np.random.default_rng(size * stride)
    valid = rng.random((45, 38)) > 0.4
    grid = PatchGrid(size=size, stride=stride, height=45, width=38)
    got = patch_valid_fraction(valid, size, stride, grid.n_rows, grid.n_cols)
    np.testing.assert_array_equal(got, grid.aggregate(valid, "fraction").astype(np.float32))


@pytest.mark.parametrize(("size", "stride"), [(8, 8), (6, 6), (8, 4)])
@pytest.mark.parametrize(("y0", "x0", "n_rows", "n_cols"), [(0, 0, 5, 4), (3, 5, 4, 3), (1, 0, 2, 1)])
def test_valid_fraction_of_a_window_counts_its_patches(
    size: int, stride: int, y0: int, x0: int, n_rows: int, n_cols: int
) -> None:
    rng = np.random.default_rng(7 * size + y0)
    valid = rng.random((45, 38)) > 0.4
    got = patch_valid_fraction(valid, size, stride, n_rows, n_cols, y0=y0, x0=x0)
    want = np.array(
        [
            [
                valid[y0 + r * stride : y0 + r * stride + size, x0 + c * stride : x0 + c * stride + size].mean()
                for c in range(n_cols)
            ]
            for r in range(n_rows)
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(got, want)


def test_valid_fraction_refuses_patches_outside() -> None:
    with pytest.raises(ParameterError, match="do not fit"):
        patch_valid_fraction(np.ones((8, 8), bool), 8, 8, 2, 1)
