"""Sliding-window change maps from a trained pseudo-siamese network (methods.md §3, inference).

The network scores a ``window x window`` pair of optical and SAR crops with ``1 - cos``. :func:`change_map` slides
that window over the image at ``stride`` and gives every pixel the weighted mean of the scores of the windows that
cover it (:func:`class_map` does the same with the damage head's class probabilities):

- ``weighting="uniform"``: every covered pixel of a window gets weight 1;
- ``weighting="dome"``: weight ``1 - r^p`` with ``r`` the distance from the window centre divided by the
  centre-to-corner distance (so ``r < 1`` on every pixel centre and the weight stays positive), ``p = power``
  (2 by default; the exponent and the normalisation of ``r`` are ours, the method names only ``1 - r^p``).

Windows start at ``0, stride, 2 * stride, ...`` and one more is aligned to the far edge, so every pixel is covered;
an image smaller than the window is padded with zeros (the mean of normalised inputs). Inputs are the normalised
images (:func:`changescope.multimodal.pairs.normalise_pair`). Writing the map (COG or plain raster) is the CLI's job.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import torch
from numpy.typing import NDArray

from changescope.errors import GridMismatchError, ParameterError
from changescope.multimodal.model import PseudoSiamese

__all__ = ["Weighting", "change_map", "class_map", "window_starts", "window_weights"]

Weighting: TypeAlias = Literal["uniform", "dome"]
"""How the overlapping window scores are averaged."""


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
) -> NDArray[np.float32]:
    _check_inputs(optical_img, sar_img, window, stride, batch_size)
    if classes and model.class_head is None:
        raise ParameterError("the model has no damage class head (model.n_classes = 0); train one with n_classes > 0")
    _, h, w = optical_img.shape
    ph, pw = max(h, window), max(w, window)
    pair = np.zeros((4, ph, pw), dtype=np.float32)
    pair[:3, :h, :w], pair[3:, :h, :w] = optical_img, sar_img
    weights = window_weights(window, weighting, power)
    boxes = [(y, x) for y in window_starts(ph, window, stride) for x in window_starts(pw, window, stride)]
    device = next(model.parameters()).device
    values: list[NDArray[np.float32]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(boxes), batch_size):
                crops = np.stack([pair[:, y : y + window, x : x + window] for y, x in boxes[i : i + batch_size]])
                t = torch.from_numpy(crops).to(device)
                out = model(t[:, :3], t[:, 3:])
                v = torch.softmax(out.logits, dim=1) if classes and out.logits is not None else out.score[:, None]
                values.append(v.float().cpu().numpy())
    finally:
        model.train(was_training)
    per_window = np.concatenate(values)
    acc = np.zeros((per_window.shape[1], ph, pw), dtype=np.float64)
    norm = np.zeros((ph, pw), dtype=np.float64)
    for (y, x), v in zip(boxes, per_window, strict=True):
        acc[:, y : y + window, x : x + window] += v[:, None, None] * weights
        norm[y : y + window, x : x + window] += weights
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

    Returns:
        ``(H, W)`` float32 map, values in ``[0, 2]``.

    Raises:
        ParameterError: Wrong band counts, bad window, stride or weighting.
        GridMismatchError: The two images differ in size.
    """
    maps = _sliding(model, optical_img, sar_img, window, stride, weighting, power, batch_size, classes=False)
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
) -> NDArray[np.float32]:
    """Per-pixel damage class probabilities from the class head, averaged like :func:`change_map`.

    Returns:
        ``(n_classes, H, W)`` float32 probabilities; ``argmax(axis=0)`` gives the class map.

    Raises:
        ParameterError: As :func:`change_map`, or the model has no class head.
        GridMismatchError: The two images differ in size.
    """
    return _sliding(model, optical_img, sar_img, window, stride, weighting, power, batch_size, classes=True)
