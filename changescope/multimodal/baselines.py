"""Training-free change baselines for heterogeneous (optical/SAR) pairs (methods.md §3, "baselines").

Each baseline maps a co-registered pre/post pair to a per-pixel change score: ``(H, W)`` float32, higher = more
change. Inputs are ``(C, H, W)`` or ``(H, W)`` arrays as stored (:func:`changescope.multimodal.pairs.read_side`
gives them); ``valid`` (``(H, W)`` booleans, optional) restricts every statistic to valid pixels, and invalid
pixels score 0.

- :func:`log_ratio_cva`: CVA on co-normalised intensities. Each image is reduced to one intensity channel (the
  mean of its bands). ``mode="rank"`` replaces each intensity by its empirical quantile over the valid
  pixels (histogram equalisation: both images matched to one uniform distribution) and scores
  ``|q_pre - q_post|``; ``mode="log_ratio"`` (default: it scored higher on the synthetic
  pairs) matches the post intensity's histogram to the pre intensity's
  (quantile mapping) and scores ``|log(1 + pre) - log(1 + post_matched)|``. Both are then averaged over a
  ``(2 * smooth + 1)``-sided box (ours: it tames SAR speckle; ``smooth=0`` turns it off).
- :func:`structure_consistency`: nonlocal patch similarity (Sun et al. 2021, "Nonlocal patch similarity based
  heterogeneous remote sensing change detection"). Each image is only compared with itself, so the two images may
  be of any two modalities. Details below.
- :func:`untrained_siamese`: the pseudo-siamese network (:class:`~changescope.multimodal.model.PseudoSiamese`)
  with seeded random weights, run through :func:`~changescope.multimodal.predict.change_map`.

**Structure consistency, exactly.** Every channel of each image is first replaced by its empirical quantile over the
valid pixels (ours), which makes the score invariant to any strictly increasing intensity transform of either image
(gamma, log, a SAR dB scale). The patch distance between pixels ``x`` and ``x + d`` of an image is the sum over the
``patch x patch`` square and the channels of squared quantile differences (reflect padding at the borders). The
candidates ``d`` are the offsets of a ``search x search`` window taken every ``search_step`` px, the zero offset
excluded. Scores are computed on a grid of patch centres every ``grid`` px and bilinearly interpolated back to full
resolution (ours, for speed). At a centre ``x``, with ``N_a(x)`` the ``k`` candidates nearest to ``x`` in image
``a`` and ``D_b`` the patch distances in image ``b``::

    f_{a->b}(x) = (mean_{d in N_a(x)} D_b(x, d) - mean_{d in N_b(x)} D_b(x, d)) / (mean_d D_b(x, d) + eps)

the first term is how far the pre image's nearest patches are in the post image, the second the post image's own
best (so an unchanged structure scores about 0); dividing by the mean distance over the search window (ours) makes
the score locally scale-free. The map is the mean of ``f_{pre->post}`` and ``f_{post->pre}`` (the symmetric form).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from changescope.errors import GridMismatchError, ParameterError

__all__ = [
    "CvaMode",
    "log_ratio_cva",
    "quantile_image",
    "siamese_inputs",
    "structure_consistency",
    "untrained_siamese",
]

CvaMode: TypeAlias = Literal["rank", "log_ratio"]
"""How :func:`log_ratio_cva` co-normalises the two intensities."""
_EPS = 1e-6


def _as_chw(image: NDArray[np.floating] | NDArray[np.integer], name: str) -> NDArray[np.float64]:
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] < 1 or a.shape[1] < 1 or a.shape[2] < 1:
        raise ParameterError(f"{name} has shape {a.shape!r}; pass a (C, H, W) or (H, W) array")
    return a


def _check_pair(
    pre: NDArray[np.floating] | NDArray[np.integer],
    post: NDArray[np.floating] | NDArray[np.integer],
    valid: NDArray[np.bool_] | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    a, b = _as_chw(pre, "pre"), _as_chw(post, "post")
    if a.shape[1:] != b.shape[1:]:
        raise GridMismatchError(
            f"pre is {a.shape[1:]!r} but post is {b.shape[1:]!r} pixels; co-register both images on one grid"
        )
    v: NDArray[np.bool_] = np.asarray(np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0))
    if valid is not None:
        m = np.asarray(valid, dtype=bool)
        if m.shape != v.shape:
            raise GridMismatchError(f"valid has shape {m.shape!r} but the images are {v.shape!r}")
        v &= m
    if not v.any():
        raise ParameterError("no pixel is valid in both images; check the nodata values and the valid mask")
    return np.where(v, a, 0.0), np.where(v, b, 0.0), v


def quantile_image(image: NDArray[np.floating], valid: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Each channel replaced by its empirical quantile in ``[0, 1]`` over the valid pixels (ties share the mean rank).

    Args:
        image: ``(C, H, W)`` values.
        valid: ``(H, W)`` pixels that count; the others get 0.5.

    Returns:
        ``(C, H, W)`` float64 quantiles.
    """
    out = np.full(image.shape, 0.5, dtype=np.float64)
    n = int(valid.sum())
    for c in range(image.shape[0]):
        vals = image[c][valid]
        _, inv, counts = np.unique(vals, return_inverse=True, return_counts=True)
        mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct value
        out[c][valid] = (mid_rank[inv] - 0.5) / max(n, 1)
    return out


def log_ratio_cva(
    pre: NDArray[np.floating] | NDArray[np.integer],
    post: NDArray[np.floating] | NDArray[np.integer],
    *,
    mode: CvaMode = "log_ratio",
    smooth: int = 1,
    valid: NDArray[np.bool_] | None = None,
) -> NDArray[np.float32]:
    """CVA / log-ratio on co-normalised intensities (module docstring).

    Args:
        pre: ``(C, H, W)`` or ``(H, W)`` pre-event image as stored.
        post: Post-event image on the same grid.
        mode: ``"rank"`` (``|q_pre - q_post|`` of the equalised intensities) or ``"log_ratio"``.
        smooth: Half side of the box averaging the score (0 = none).
        valid: Optional ``(H, W)`` valid pixels.

    Returns:
        ``(H, W)`` float32 change score, 0 on invalid pixels.

    Raises:
        ParameterError: Bad shapes, ``mode`` or ``smooth``, or no valid pixel.
        GridMismatchError: The images differ in size.
    """
    if mode not in ("rank", "log_ratio"):
        raise ParameterError(f"mode={mode!r} is unknown; choose 'rank' or 'log_ratio'")
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 0:
        raise ParameterError(f"smooth={smooth!r} must be an integer >= 0")
    a, b, v = _check_pair(pre, post, valid)
    ia, ib = a.mean(axis=0, keepdims=True), b.mean(axis=0, keepdims=True)
    if mode == "rank":
        diff = np.abs(quantile_image(ia, v)[0] - quantile_image(ib, v)[0])
    else:
        qb = quantile_image(ib, v)[0]
        ref = np.sort(ia[0][v])
        matched = np.interp(qb, (np.arange(ref.size) + 0.5) / ref.size, ref)
        diff = np.abs(np.log1p(np.maximum(ia[0], 0.0)) - np.log1p(np.maximum(matched, 0.0)))
    diff = np.where(v, diff, 0.0)
    if smooth > 0:
        size = 2 * smooth + 1
        num = ndimage.uniform_filter(diff, size=size, mode="reflect")
        den = ndimage.uniform_filter(v.astype(np.float64), size=size, mode="reflect")
        diff = np.where(v, num / np.maximum(den, _EPS), 0.0)
    out: NDArray[np.float32] = diff.astype(np.float32)
    return out


def _offsets(search: int, step: int) -> NDArray[np.int64]:
    r = search // 2
    steps = np.arange(-r, r + 1, step)
    dy, dx = np.meshgrid(steps, steps, indexing="ij")
    keep = (dy != 0) | (dx != 0)
    return np.stack([dy[keep], dx[keep]], axis=1).astype(np.int64)


def _patch_distances(
    q: NDArray[np.float64], offsets: NDArray[np.int64], patch: int, ys: NDArray[np.int64], xs: NDArray[np.int64]
) -> NDArray[np.float32]:
    """``(n_offsets, n_centres)`` summed squared patch differences between each centre and its shifted copy."""
    _, h, w = q.shape
    pad = int(np.abs(offsets).max())
    padded = np.pad(q, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out = np.empty((len(offsets), ys.size), dtype=np.float32)
    for i, (dy, dx) in enumerate(offsets):
        shifted = padded[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w]
        sq = ((q - shifted) ** 2).sum(axis=0)
        box = ndimage.uniform_filter(sq, size=patch, mode="reflect")
        out[i] = box[ys, xs]
    return out


def _directed(d_a: NDArray[np.float32], d_b: NDArray[np.float32], k: int) -> NDArray[np.float64]:
    """``f_{a->b}`` at every centre (module docstring)."""
    cols = np.arange(d_a.shape[1])
    near_a = np.argpartition(d_a, k - 1, axis=0)[:k]
    through_a = d_b[near_a, cols].astype(np.float64).mean(axis=0)
    own_b = np.partition(d_b, k - 1, axis=0)[:k].astype(np.float64).mean(axis=0)
    scale = d_b.astype(np.float64).mean(axis=0) + _EPS
    result: NDArray[np.float64] = (through_a - own_b) / scale
    return result


def structure_consistency(
    pre: NDArray[np.floating] | NDArray[np.integer],
    post: NDArray[np.floating] | NDArray[np.integer],
    *,
    patch: int = 5,
    search: int = 31,
    search_step: int = 3,
    k: int = 10,
    grid: int = 3,
    valid: NDArray[np.bool_] | None = None,
) -> NDArray[np.float32]:
    """Symmetric nonlocal patch-similarity change score (module docstring).

    Args:
        pre: ``(C, H, W)`` or ``(H, W)`` pre-event image, any modality.
        post: Post-event image on the same grid, any modality.
        patch: Patch side in pixels (odd).
        search: Side of the search window in pixels (odd).
        search_step: Step between candidate offsets in the search window.
        k: Nearest patches per centre (at most the number of candidates).
        grid: Step of the grid of patch centres; the map is interpolated in between (1 = every pixel).
        valid: Optional ``(H, W)`` valid pixels.

    Returns:
        ``(H, W)`` float32 change score, 0 on invalid pixels.

    Raises:
        ParameterError: Bad shapes or parameters, or no valid pixel.
        GridMismatchError: The images differ in size.
    """
    for name, value in (("patch", patch), ("search", search), ("search_step", search_step), ("k", k), ("grid", grid)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParameterError(f"{name}={value!r} must be an integer >= 1")
    if patch % 2 == 0 or search % 2 == 0 or search < 3:
        raise ParameterError(f"patch={patch!r} and search={search!r} must be odd (search >= 3)")
    offsets = _offsets(search, search_step)
    if k > len(offsets):
        raise ParameterError(f"k={k!r} exceeds the {len(offsets)} candidate offsets; lower k or widen search")
    a, b, v = _check_pair(pre, post, valid)
    _, h, w = a.shape
    if int(np.abs(offsets).max()) >= min(h, w):
        raise ParameterError(f"search={search!r} is too large for a {h} x {w} image")
    qa, qb = quantile_image(a, v), quantile_image(b, v)
    gy = np.unique(np.append(np.arange(0, h, grid), h - 1))
    gx = np.unique(np.append(np.arange(0, w, grid), w - 1))
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    ys, xs = yy.ravel(), xx.ravel()
    d_pre = _patch_distances(qa, offsets, patch, ys, xs)
    d_post = _patch_distances(qb, offsets, patch, ys, xs)
    score = 0.5 * (_directed(d_pre, d_post, k) + _directed(d_post, d_pre, k))
    coarse = score.reshape(gy.size, gx.size)
    if grid > 1:
        fy = np.interp(np.arange(h), gy, np.arange(gy.size))
        fx = np.interp(np.arange(w), gx, np.arange(gx.size))
        cy, cx = np.meshgrid(fy, fx, indexing="ij")
        full = ndimage.map_coordinates(coarse, [cy, cx], order=1, mode="nearest")
    else:
        full = coarse
    out: NDArray[np.float32] = np.where(v, full, 0.0).astype(np.float32)
    return out


def siamese_inputs(
    pre: NDArray[np.floating] | NDArray[np.integer],
    post: NDArray[np.floating] | NDArray[np.integer],
    *,
    pre_modality: str = "optical",
    post_modality: str = "sar",
    valid: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The network's ``(optical (3, H, W), sar (1, H, W))`` inputs, normalised as the method says.

    Optical: z-score per channel (one band replicated to 3); SAR: ``log1p(max(x, 0))`` then z-score, statistics over
    the valid pixels. For an optical/optical pair (``hetcd/img7``) the post image's band mean is fed to the SAR
    branch, normalised like SAR (ours); for a SAR/SAR pair the pre image is replicated to 3 channels.

    Raises:
        ParameterError: Bad shapes or modalities.
        GridMismatchError: The images differ in size.
    """
    from changescope.multimodal.pairs import check_modality

    mods = (check_modality(pre_modality, "pre_modality"), check_modality(post_modality, "post_modality"))
    a, b, v = _check_pair(pre, post, valid)
    if mods == ("sar", "optical"):
        a, b = b, a
    opt = a if a.shape[0] == 3 else np.repeat(a.mean(axis=0, keepdims=True), 3, axis=0)
    sar = np.log1p(np.maximum(b.mean(axis=0, keepdims=True), 0.0))

    def z(x: NDArray[np.float64]) -> NDArray[np.float32]:
        out = np.zeros_like(x)
        for c in range(x.shape[0]):
            vals = x[c][v]
            std = float(vals.std())
            out[c] = np.where(v, (x[c] - float(vals.mean())) / (std if std > 0 else 1.0), 0.0)
        return out.astype(np.float32)

    return z(opt), z(sar)


def untrained_siamese(
    pre: NDArray[np.floating] | NDArray[np.integer],
    post: NDArray[np.floating] | NDArray[np.integer],
    *,
    pre_modality: str = "optical",
    post_modality: str = "sar",
    seed: int = 0,
    architecture: str = "resnet34",
    window: int = 64,
    stride: int = 16,
    valid: NDArray[np.bool_] | None = None,
    threads: int | None = None,
) -> NDArray[np.float32]:
    """The ``1 - cos`` map of a randomly initialised pseudo-siamese network (module docstring).

    Args:
        pre: Pre-event image as stored.
        post: Post-event image on the same grid.
        pre_modality: ``"optical"`` or ``"sar"``.
        post_modality: ``"optical"`` or ``"sar"``.
        seed: Seed of the random weights (``torch.manual_seed``; the global torch generator is restored after).
        architecture: timm backbone of both branches.
        window: Sliding window side in pixels (also the model's ``context``).
        stride: Step between windows.
        valid: Optional ``(H, W)`` valid pixels (0 on the others).
        threads: CPU threads for torch (``None`` = torch's default).

    Returns:
        ``(H, W)`` float32 change score in ``[0, 2]``, 0 on invalid pixels.

    Raises:
        ParameterError: Bad shapes, modalities or window parameters.
        GridMismatchError: The images differ in size.
    """
    import torch

    from changescope.multimodal.config import ModelConfig
    from changescope.multimodal.model import PseudoSiamese
    from changescope.multimodal.predict import change_map

    optical, sar = siamese_inputs(pre, post, pre_modality=pre_modality, post_modality=post_modality, valid=valid)
    _, _, v = _check_pair(pre, post, valid)
    config = ModelConfig(architecture=architecture, context=max(window, 16), roi=min(16, max(window, 16)))
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = PseudoSiamese(config)
        score = change_map(model, optical, sar, window=window, stride=stride)
    finally:
        torch.set_num_threads(before)
    out: NDArray[np.float32] = np.where(v, score, 0.0).astype(np.float32)
    return out
