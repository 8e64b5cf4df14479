"""Multi-scale change scores: a patch also scores as high as the most changed of its sub-patches.

A change that covers a tenth of a patch barely moves the patch's embedding: a new house in a field, the first
hectare of a clearing, a flooded corner. Splitting every patch into ``k x k`` sub-patches (side ``patch / k``) and
scoring those too lets such a change stand out at the scale where it fills a good share of the window, while a large
diffuse change still stands out at the patch scale. The patch's score is the maximum of its own score and its
sub-patches' scores (all per-date robust z-scores, so the scales are comparable).

The sub-patch grid partitions the image into squares of side ``patch / k`` (its stride equals its size), so the
sub-patches of patch ``(r, c)`` of a grid with stride ``s`` are rows ``r * s / f ... r * s / f + k - 1`` (and the
same for columns) of the sub-patch grid, ``f = patch / k``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from changescope.errors import ParameterError

__all__ = [
    "auto_subdivide",
    "max_over_subpatches",
    "pick_subpatches",
    "subpatch_breaks",
    "subpatch_choice",
    "subpatch_embeddings",
    "subpatch_size",
]

MIN_SUBPATCH = 8
"""Smallest sub-patch side (pixels) the automatic choice goes down to: smaller windows hold too few pixels for
stable statistics."""


def auto_subdivide(patch_size: int, stride: int) -> int:
    """The default split of a patch: 2 x 2 sub-patches when possible, else 1 (single scale).

    Possible means the patch halves into whole sub-patches of at least :data:`MIN_SUBPATCH` px that the stride
    steps over.
    """
    half = patch_size // 2
    return 2 if patch_size % 2 == 0 and half >= MIN_SUBPATCH and stride % half == 0 else 1


def subpatch_size(patch_size: int, stride: int, subdivide: int) -> int | None:
    """Side of the sub-patches of ``subdivide`` x ``subdivide`` splitting, or ``None`` for a single scale.

    Args:
        patch_size: Patch side in pixels.
        stride: Patch step in pixels.
        subdivide: Sub-patches per patch side (1 = single scale).

    Raises:
        ParameterError: ``subdivide`` < 1, or the patch or its stride cannot be split into whole sub-patches.
    """
    if isinstance(subdivide, bool) or not isinstance(subdivide, int) or subdivide < 1:
        raise ParameterError(f"subdivide={subdivide!r} must be an integer >= 1 (1 = score at the patch scale only)")
    if subdivide == 1:
        return None
    size = patch_size // subdivide
    if patch_size % subdivide or size < 2 or stride % size:
        raise ParameterError(
            f"subdivide={subdivide} cannot split patch_size={patch_size} (stride {stride}) into whole sub-patches of "
            "at least 2 px that the stride steps over; choose a divisor of both (e.g. subdivide=2 with even sizes) "
            "or subdivide=1"
        )
    return size


def max_over_subpatches(
    fine: NDArray[np.floating], n_rows: int, n_cols: int, subdivide: int, step: int
) -> NDArray[np.float64]:
    """Per patch and date, the maximum score of its sub-patches (NaN where none was scored).

    Args:
        fine: ``(T, rows_f, cols_f)`` sub-patch scores, NaN where not scored.
        n_rows: Patch rows of the coarse grid.
        n_cols: Patch columns of the coarse grid.
        subdivide: Sub-patches per patch side.
        step: The coarse stride in sub-patches (``stride / subpatch size``).

    Returns:
        ``(T, n_rows, n_cols)``.

    Raises:
        ParameterError: The sub-patch grid does not cover the coarse grid.
    """
    f = np.asarray(fine, dtype=np.float64)
    need_r, need_c = (n_rows - 1) * step + subdivide, (n_cols - 1) * step + subdivide
    if f.ndim != 3 or f.shape[1] < need_r or f.shape[2] < need_c:
        raise ParameterError(
            f"sub-patch scores of shape {f.shape!r} do not cover a {n_rows} x {n_cols} patch grid "
            f"(need at least {need_r} x {need_c} sub-patches); embed the sub-patches on the same image"
        )
    out = np.full((f.shape[0], n_rows, n_cols), np.nan)
    for dr in range(subdivide):  # one strided view per offset: no (T, patches, k * k) copy of the scores
        for dc in range(subdivide):
            np.fmax(out, f[:, dr::step, dc::step][:, :n_rows, :n_cols], out=out)  # fmax skips NaN
    return out


def subpatch_breaks(
    breaks: NDArray[np.bool_], fine_shape: tuple[int, int], subdivide: int, step: int
) -> NDArray[np.bool_]:
    """Spread patch segment starts to their sub-patches (a sub-patch of several patches gets all their starts).

    Args:
        breaks: ``(T, n_rows, n_cols)`` patch segment starts.
        fine_shape: ``(rows_f, cols_f)`` of the sub-patch grid.
        subdivide: Sub-patches per patch side.
        step: The coarse stride in sub-patches.

    Returns:
        ``(T, rows_f, cols_f)``.
    """
    b = np.asarray(breaks, dtype=bool)
    n_t, n_rows, n_cols = b.shape
    out = np.zeros((n_t, *fine_shape), dtype=bool)
    for dr in range(subdivide):  # k * k offsets, each vectorised over dates and patches
        for dc in range(subdivide):
            rows = np.arange(n_rows) * step + dr
            cols = np.arange(n_cols) * step + dc
            ok_r, ok_c = rows < fine_shape[0], cols < fine_shape[1]
            out[:, rows[ok_r][:, None], cols[ok_c][None, :]] |= b[:, ok_r][:, :, ok_c]
    return out


def _windows(a: NDArray[np.floating], n_rows: int, n_cols: int, k: int, step: int) -> NDArray[np.float64]:
    """``(..., n_rows, n_cols, k * k)`` sub-patch values of each patch, from ``(..., rows_f, cols_f)``."""
    w = np.lib.stride_tricks.sliding_window_view(np.asarray(a, dtype=np.float64), (k, k), axis=(-2, -1))
    w = w[..., ::step, ::step, :, :][..., :n_rows, :n_cols, :, :]
    return w.reshape(*w.shape[:-2], k * k)


def subpatch_choice(
    coarse_scores: NDArray[np.floating],
    fine_scores: NDArray[np.floating],
    subdivide: int,
    step: int,
) -> tuple[NDArray[np.bool_], NDArray[np.intp], NDArray[np.intp]]:
    """Per patch, the scale at which it changed most: ``(use_fine, fine_row, fine_col)``, each ``(n_rows, n_cols)``.

    ``use_fine`` is True where the highest score over the dates of one of the patch's sub-patches beats the
    patch's own; ``fine_row``/``fine_col`` locate that sub-patch (the most changed one) in the sub-patch grid.
    """
    _, n_rows, n_cols = np.shape(coarse_scores)
    peak = np.fmax.reduce(np.asarray(fine_scores, dtype=np.float64), axis=0)  # (rows_f, cols_f); fmax skips NaN
    peak[~np.isfinite(peak)] = -np.inf
    win = _windows(peak, n_rows, n_cols, subdivide, step)  # (n_rows, n_cols, k*k)
    best = win.argmax(axis=-1)
    own = np.where(np.isfinite(coarse_scores), coarse_scores, -np.inf).max(axis=0)
    rr, cc = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    return win.max(axis=-1) > own, rr * step + best // subdivide, cc * step + best % subdivide


def pick_subpatches(
    coarse: NDArray[np.floating],
    fine: NDArray[np.floating],
    choice: tuple[NDArray[np.bool_], NDArray[np.intp], NDArray[np.intp]],
) -> NDArray[np.float32]:
    """The patch embeddings with, where :func:`subpatch_choice` picked one, the chosen sub-patch's instead.

    Args:
        coarse: ``(..., n_rows, n_cols, D)`` patch embeddings.
        fine: ``(..., rows_f, cols_f, D)`` sub-patch embeddings (a sub-patch without one leaves the patch's own).
        choice: ``(use_fine, fine_row, fine_col)``.
    """
    use_fine, fr, fc = choice
    out = np.array(coarse, dtype=np.float32, copy=True)
    picked = np.asarray(fine, dtype=np.float32)[..., fr[use_fine], fc[use_fine], :]  # (..., n_use, D)
    ok = np.isfinite(picked).all(axis=-1, keepdims=True)  # a sub-patch too cloudy that date: keep the patch's own
    out[..., use_fine, :] = np.where(ok, picked, out[..., use_fine, :])
    return out


def subpatch_embeddings(
    coarse: NDArray[np.floating],
    fine: NDArray[np.floating],
    coarse_scores: NDArray[np.floating],
    fine_scores: NDArray[np.floating],
    subdivide: int,
    step: int,
) -> NDArray[np.float32]:
    """Per patch, the embeddings of the scale at which it changed most: its own, or its most changed sub-patch's.

    Change vectors (before/after means of the embeddings) then describe the change where it is, not diluted over a
    patch it covers a tenth of.

    Args:
        coarse: ``(T, n_rows, n_cols, D)`` patch embeddings.
        fine: ``(T, rows_f, cols_f, D)`` sub-patch embeddings.
        coarse_scores: ``(T, n_rows, n_cols)`` patch scores.
        fine_scores: ``(T, rows_f, cols_f)`` sub-patch scores.
        subdivide: Sub-patches per patch side.
        step: The coarse stride in sub-patches.

    Returns:
        ``(T, n_rows, n_cols, D)`` float32: each patch's own embeddings, or those of the sub-patch whose highest score
        over the dates beats the patch's (on dates that sub-patch has no embedding, the patch's own).
    """
    return pick_subpatches(coarse, fine, subpatch_choice(coarse_scores, fine_scores, subdivide, step))
