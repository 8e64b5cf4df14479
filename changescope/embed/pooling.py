"""Pool an encoder's dense feature map onto the patch grid, and count valid pixels per patch.

An encoder turns a tile into tokens of ``token`` pixels; the patch grid cuts the same tile into patches of ``size``
pixels every ``stride`` pixels. The two need not line up (DINOv2's 14 px tokens under 32 px patches, patches that
overlap). A patch's embedding is the *area-weighted mean* of the tokens under it: each token counts with the number
of the patch's pixels it covers. Along one axis that weight is the overlap (in pixels) of the patch window
``[r * stride, r * stride + size)`` with the token footprint ``[i * token, (i + 1) * token)``; the 2-D weight is the
product of the two axes' weights, so the pooling is separable::

    pooled[n, d, r, c] = sum_ij Ay[r, i] * F[n, d, i, j] * Ax[c, j] / (sum_i Ay[r, i] * sum_j Ax[c, j])

two small matrix products per tile instead of one encoder pass per patch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from changescope.errors import ParameterError

__all__ = ["overlap_matrix", "patch_valid_fraction", "pool_feature_map"]


def overlap_matrix(
    n_patches: int, size: int, stride: int, n_tokens: int, token: int, *, offset: int = 0
) -> NDArray[np.float64]:
    """Pixel overlap of each patch window with each token footprint along one axis.

    Args:
        n_patches: Number of patches along the axis.
        size: Patch side in pixels.
        stride: Step between patch origins in pixels.
        n_tokens: Number of tokens along the axis.
        token: Token side in pixels (the encoder's patch size).
        offset: Pixel position of the first patch origin relative to the first token's origin.

    Returns:
        ``(n_patches, n_tokens)`` float64 array; row ``r`` sums to ``size`` when the patch lies inside the tokens.

    Raises:
        ParameterError: A size, stride or token size is not positive.
    """
    for name, value in (("size", size), ("stride", stride), ("token", token)):
        if value < 1:
            raise ParameterError(f"{name}={value!r} must be a positive number of pixels")
    starts = offset + np.arange(n_patches, dtype=np.int64)[:, None] * stride
    t0 = np.arange(n_tokens, dtype=np.int64)[None, :] * token
    overlap = np.minimum(starts + size, t0 + token) - np.maximum(starts, t0)
    weights: NDArray[np.float64] = np.clip(overlap, 0, None).astype(np.float64)
    return weights


def pool_feature_map(
    features: torch.Tensor, ay: torch.Tensor, ax: torch.Tensor, token_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Area-weighted mean of a dense feature map over each patch.

    With ``token_weights`` (the share of valid pixels under each token), tokens are also weighted by their
    validity, so a token over a masked cloud does not leak into the patch's embedding.

    Args:
        features: ``(N, D, h, w)`` dense features (``h``/``w`` tokens).
        ay: ``(R, h)`` row overlap weights (see :func:`overlap_matrix`).
        ax: ``(C, w)`` column overlap weights.
        token_weights: Optional ``(N, h, w)`` validity weights in [0, 1].

    Returns:
        ``(N, D, R, C)`` pooled features, same dtype and device as ``features``.

    Raises:
        ParameterError: The weight matrices do not match the feature map, or a patch covers no token.
    """
    if features.ndim != 4 or ay.shape[-1] != features.shape[-2] or ax.shape[-1] != features.shape[-1]:
        raise ParameterError(
            f"features {tuple(features.shape)!r} do not match overlap weights {tuple(ay.shape)!r} x "
            f"{tuple(ax.shape)!r}; expected (N, D, h, w) with ay (R, h) and ax (C, w)"
        )
    wy = ay.sum(dim=1)
    wx = ax.sum(dim=1)
    if bool((wy <= 0).any()) or bool((wx <= 0).any()):
        raise ParameterError("a patch covers no token of the feature map; the tile is too small for the patches")
    ay_n = (ay / wy[:, None]).to(features.dtype)
    ax_n = (ax / wx[:, None]).to(features.dtype)
    # (N, D, h, w) @ (w, C) -> (N, D, h, C); (R, h) @ (N, D, h, C) -> (N, D, R, C)
    if token_weights is None:
        return torch.matmul(ay_n, torch.matmul(features, ax_n.T))
    w = token_weights.to(features.dtype)[:, None]
    num = torch.matmul(ay_n, torch.matmul(torch.nan_to_num(features) * w, ax_n.T))
    den = torch.matmul(ay_n, torch.matmul(w, ax_n.T))
    return num / den.clamp_min(1e-6)


def patch_valid_fraction(
    valid: NDArray[Any], size: int, stride: int, n_rows: int, n_cols: int, *, y0: int = 0, x0: int = 0
) -> NDArray[np.float32]:
    """Fraction of valid pixels in each patch (exact): sums where patches tile the mask, else an integral image.

    Args:
        valid: ``(h, w)`` boolean pixel mask.
        size: Patch side in pixels.
        stride: Step between patch origins.
        n_rows: Number of patch rows to compute.
        n_cols: Number of patch columns.
        y0: Row of the first patch origin inside ``valid``.
        x0: Column of the first patch origin.

    Returns:
        ``(n_rows, n_cols)`` float32 fractions, equal to :meth:`changescope.grid.PatchGrid.aggregate` with
        ``how="fraction"``.

    Raises:
        ParameterError: A patch reaches outside ``valid``.
    """
    h, w = valid.shape
    if y0 + (n_rows - 1) * stride + size > h or x0 + (n_cols - 1) * stride + size > w:
        raise ParameterError(f"{n_rows}x{n_cols} patches of {size} px do not fit a {h}x{w} mask at ({y0}, {x0})")
    if valid.all():
        return np.ones((n_rows, n_cols), dtype=np.float32)
    count_type = np.int32 if h * w < 2**31 else np.int64
    if stride == size:  # patches tile the mask: sums over rows, then columns (21 ms -> 0.3 ms for 1024 px)
        tiled = valid[y0 : y0 + n_rows * size, x0 : x0 + n_cols * size] != 0
        by_row = tiled.reshape(n_rows, size, n_cols * size).sum(axis=1, dtype=count_type)
        tiles = by_row.reshape(n_rows, n_cols, size).sum(axis=2, dtype=count_type)
        fractions: NDArray[np.float32] = (tiles / float(size * size)).astype(np.float32)
        return fractions
    integral = np.zeros((h + 1, w + 1), dtype=count_type)
    integral[1:, 1:] = np.cumsum(np.cumsum(valid != 0, axis=0, dtype=count_type), axis=1)
    ys = y0 + np.arange(n_rows) * stride
    xs = x0 + np.arange(n_cols) * stride
    count = (
        integral[np.ix_(ys + size, xs + size)]
        - integral[np.ix_(ys, xs + size)]
        - integral[np.ix_(ys + size, xs)]
        + integral[np.ix_(ys, xs)]
    )
    return (count / float(size * size)).astype(np.float32)
