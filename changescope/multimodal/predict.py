"""Sliding-window change maps from a trained pseudo-siamese network (methods.md §3, inference).

The network scores a ``window x window`` pair of optical and SAR crops with ``1 - cos``. :func:`change_map` slides
that window over the image at ``stride`` and gives every pixel the weighted mean of the scores of the windows that
cover it (:func:`class_map` does the same with the damage head's class probabilities):

- ``weighting="uniform"``: every covered pixel of a window gets weight 1;
- ``weighting="dome"``: weight ``1 - r^p`` with ``r`` the distance from the window centre divided by the
  centre-to-corner distance (so ``r < 1`` on every pixel centre and the weight stays positive), ``p = power``
  (2 by default; the exponent and the normalisation of ``r`` are ours, the method names only ``1 - r^p``).

Windows start at ``0, stride, 2 * stride, ...`` and one more is aligned to the far edge, so every pixel is covered
(a stride above the painted side, the window or the ROI, is reduced to that side, which would otherwise leave gaps);
an image smaller than the window is padded with zeros (the mean of normalised inputs).

``tta`` (ours, test-time augmentation): each window is also scored under the first ``tta`` of the 8 rotations and
flips of the square (the same on both images: rot90 by 0, 1, 2, 3 quarter turns, then the same flipped left-right),
and its value is the mean over them. Training with ``optim.augment`` shows the network these views; the mean
smooths what each view's score owes to orientation. The ROI is centred, so every view describes the same region.
``tta=1`` (the default) is the published single pass; the cost is ``tta`` times the forward passes.

``paint="roi"`` (ours; the default of :func:`class_map`, whose head learns the class of the centred ROI) gives a
window's value only to its centred ``model.config.roi`` px region: the ROIs tile the image at ``stride`` (one more
ROI aligned to the far edge) and each window is its ROI's context, zero-padded beyond the image, so border pixels
are covered too. :func:`damage_classes` takes the per-pixel argmax.

Inputs are the normalised images (:func:`changescope.multimodal.pairs.normalise_pair`). Writing the maps (COG or
plain raster) is :mod:`changescope.multimodal.io`'s job.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import torch
from numpy.typing import NDArray

from changescope.errors import GridMismatchError, ParameterError
from changescope.multimodal.model import PseudoSiamese

__all__ = [
    "CLASS_NODATA",
    "Paint",
    "Weighting",
    "change_map",
    "class_map",
    "damage_classes",
    "default_stride",
    "window_starts",
    "window_weights",
]

Weighting: TypeAlias = Literal["uniform", "dome"]
"""How the overlapping window scores are averaged."""
Paint: TypeAlias = Literal["window", "roi"]
"""Which pixels a window's value goes to: its whole window, or only its centred region of interest."""
CLASS_NODATA = 255
"""Value of invalid pixels in a damage class map."""


WINDOW_STRIDE = 64
"""Default step between windows painted whole (``paint="window"``)."""


def default_stride(paint: Paint, roi: int) -> int:
    """The default step of a sliding pass: :data:`WINDOW_STRIDE` for whole windows, half the ROI for ROIs.

    Half the ROI gives every pixel the mean of 4 ROIs (2 x 2), as 4 overlapping windows smooth a window map.
    """
    return WINDOW_STRIDE if paint == "window" else max(1, roi // 2)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride`` px, plus one aligned to the far edge (``[0]`` if small)."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def window_weights(window: int, weighting: Weighting = "uniform", power: float = 2.0) -> NDArray[np.float32]:
    """``(window, window)`` per-pixel weights of one window (module docstring).

    Raises:
        ParameterError: Unknown ``weighting`` or ``power <= 0``.
    """
    if weighting == "uniform":
        return np.ones((window, window), dtype=np.float32)
    if weighting != "dome":
        raise ParameterError(f"weighting={weighting!r} is unknown; choose 'uniform' or 'dome'")
    if not power > 0:
        raise ParameterError(f"power={power!r} must be > 0")
    c = (window - 1) / 2.0
    yy, xx = np.mgrid[0:window, 0:window].astype(np.float64)
    r = np.hypot(yy - c, xx - c) / np.hypot(window / 2.0, window / 2.0)
    weights: NDArray[np.float32] = (1.0 - r**power).astype(np.float32)
    return weights


TTA_VIEWS = (1, 2, 4, 8)
"""Allowed numbers of test-time views (module docstring)."""


def _view(x: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` (0-7) of a batch ``(N, C, H, W)``: ``k % 4`` quarter turns, flipped left-right from ``k = 4``."""
    out = torch.rot90(x, k % 4, dims=(2, 3))
    return out.flip(-1) if k >= 4 else out


def _check_inputs(
    optical: NDArray[np.floating], sar: NDArray[np.floating], window: int, stride: int, batch_size: int
) -> None:
    if optical.ndim != 3 or optical.shape[0] != 3:
        raise ParameterError(
            f"optical_img has shape {optical.shape!r}; pass a normalised (3, H, W) array (is it the SAR image?)"
        )
    if sar.ndim != 3 or sar.shape[0] != 1:
        raise ParameterError(f"sar_img has shape {sar.shape!r}; pass a normalised (1, H, W) array")
    if optical.shape[1:] != sar.shape[1:]:
        raise GridMismatchError(
            f"optical_img is {optical.shape[1:]!r} but sar_img is {sar.shape[1:]!r} pixels; co-register and crop "
            "both to the same grid"
        )
    for name, value in (("window", window), ("stride", stride), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParameterError(f"{name}={value!r} must be an integer >= 1")


def _layout(
    h: int, w: int, window: int, stride: int, paint: Paint, roi: int
) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]], int]:
    """``(pad, window boxes in padded pixels, painted boxes in image pixels, painted side)`` of a sliding pass."""
    if paint == "window":
        stride = min(stride, window)  # a larger step would leave pixels no window covers
        ph, pw = max(h, window), max(w, window)
        boxes = [(y, x) for y in window_starts(ph, window, stride) for x in window_starts(pw, window, stride)]
        return 0, boxes, boxes, window
    if paint != "roi":
        raise ParameterError(f"paint={paint!r} is unknown; choose 'window' or 'roi'")
    side = min(roi, window)
    stride = min(stride, side)
    off = (window - side) // 2
    rois = [(y, x) for y in window_starts(h, side, stride) for x in window_starts(w, side, stride)]
    return window, [(y + window - off, x + window - off) for y, x in rois], rois, side


def _sliding(
    model: PseudoSiamese,
    optical_img: NDArray[np.floating],
    sar_img: NDArray[np.floating],
    window: int,
    stride: int,
    weighting: Weighting,
    power: float,
    batch_size: int,
    *,
    classes: bool,
    paint: Paint = "window",
    tta: int = 1,
) -> NDArray[np.float32]:
    _check_inputs(optical_img, sar_img, window, stride, batch_size)
    if tta not in TTA_VIEWS:
        raise ParameterError(f"tta={tta!r}: choose one of {', '.join(map(str, TTA_VIEWS))} test-time views")
    if classes and model.class_head is None:
        raise ParameterError("the model has no damage class head (model.n_classes = 0); train one with n_classes > 0")
    _, h, w = optical_img.shape
    pad, boxes, painted, side = _layout(h, w, window, stride, paint, int(model.config.roi))
    ph, pw = max(h, window) + 2 * pad, max(w, window) + 2 * pad
    pair = np.zeros((4, ph, pw), dtype=np.float32)
    pair[:3, pad : pad + h, pad : pad + w], pair[3:, pad : pad + h, pad : pad + w] = optical_img, sar_img
    weights = window_weights(side, weighting, power)
    device = next(model.parameters()).device
    values: list[NDArray[np.float32]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(boxes), batch_size):
                crops = np.stack([pair[:, y : y + window, x : x + window] for y, x in boxes[i : i + batch_size]])
                t = torch.from_numpy(crops).to(device)
                views = []
                for k in range(tta):
                    tv = _view(t, k)
                    out = model(tv[:, :3], tv[:, 3:])
                    v = torch.softmax(out.logits, dim=1) if classes and out.logits is not None else out.score[:, None]
                    views.append(v.float())
                values.append((torch.stack(views).mean(dim=0) if tta > 1 else views[0]).cpu().numpy())
    finally:
        model.train(was_training)
    per_window = np.concatenate(values)
    ah, aw = max(h, side), max(w, side)
    acc = np.zeros((per_window.shape[1], ah, aw), dtype=np.float64)
    norm = np.zeros((ah, aw), dtype=np.float64)
    for (y, x), v in zip(painted, per_window, strict=True):
        acc[:, y : y + side, x : x + side] += v[:, None, None] * weights
        norm[y : y + side, x : x + side] += weights
    result: NDArray[np.float32] = (acc / norm)[:, :h, :w].astype(np.float32)
    return result


def change_map(
    model: PseudoSiamese,
    optical_img: NDArray[np.floating],
    sar_img: NDArray[np.floating],
    *,
    window: int,
    stride: int,
    weighting: Weighting = "uniform",
    power: float = 2.0,
    batch_size: int = 32,
    paint: Paint = "window",
    tta: int = 1,
) -> NDArray[np.float32]:
    """Per-pixel change score: the weighted mean of ``1 - cos`` over the windows covering each pixel.

    Args:
        model: A trained network (run in eval mode here, its mode restored after).
        optical_img: ``(3, H, W)`` normalised optical image.
        sar_img: ``(1, H, W)`` normalised SAR image on the same grid.
        window: Window side in pixels (usually the model's ``config.context``).
        stride: Step between windows in pixels.
        weighting: ``"uniform"`` or ``"dome"`` (module docstring).
        power: Exponent ``p`` of the dome weighting.
        batch_size: Windows per forward pass.
        paint: ``"window"`` gives each window's score to its whole window; ``"roi"`` only to its centred ROI
            (module docstring).
        tta: Test-time views averaged per window: 1, 2, 4 or 8 (module docstring).

    Returns:
        ``(H, W)`` float32 map, values in ``[0, 2]``.

    Raises:
        ParameterError: Wrong band counts, bad window, stride or weighting.
        GridMismatchError: The two images differ in size.
    """
    maps = _sliding(
        model, optical_img, sar_img, window, stride, weighting, power, batch_size, classes=False, paint=paint, tta=tta
    )
    score: NDArray[np.float32] = maps[0]
    return score


def class_map(
    model: PseudoSiamese,
    optical_img: NDArray[np.floating],
    sar_img: NDArray[np.floating],
    *,
    window: int,
    stride: int,
    weighting: Weighting = "uniform",
    power: float = 2.0,
    batch_size: int = 32,
    paint: Paint = "roi",
    tta: int = 1,
) -> NDArray[np.float32]:
    """Per-pixel damage class probabilities from the class head, averaged like :func:`change_map`.

    The class head is trained on the class of each window's centred ROI, so by default (``paint="roi"``) a
    window's probabilities go to its ROI only; ``paint="window"`` spreads them over the whole window. ``tta``
    averages the probabilities over test-time views as :func:`change_map` does the scores.

    Returns:
        ``(n_classes, H, W)`` float32 probabilities; ``argmax(axis=0)`` gives the class map.

    Raises:
        ParameterError: As :func:`change_map`, or the model has no class head.
        GridMismatchError: The two images differ in size.
    """
    return _sliding(
        model, optical_img, sar_img, window, stride, weighting, power, batch_size, classes=True, paint=paint, tta=tta
    )


def damage_classes(probabilities: NDArray[np.floating], valid: NDArray[np.bool_] | None = None) -> NDArray[np.uint8]:
    """``(H, W)`` uint8 class map (argmax of ``(n_classes, H, W)`` probabilities); invalid pixels get 255.

    Raises:
        ParameterError: ``probabilities`` is not 3-D, or ``valid`` has another shape.
    """
    probs = np.asarray(probabilities)
    if probs.ndim != 3:
        raise ParameterError(f"class probabilities are (n_classes, H, W); got shape {probs.shape!r}")
    out: NDArray[np.uint8] = np.argmax(probs, axis=0).astype(np.uint8)
    if valid is not None:
        if valid.shape != out.shape:
            raise ParameterError(f"valid mask {valid.shape!r} does not match the map {out.shape!r}")
        out[~valid] = CLASS_NODATA
    return out
