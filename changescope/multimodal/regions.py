"""Region splits of a single scene: which ROIs train, which pixels are held out.

A single scene (one ``--pre/--post/--truth`` pair) cannot be split by image, so the window index splits it by
region (:class:`~changescope.multimodal.index.IndexParams`):

- ``halves``: the left and right halves (``val_half`` names the one held out);
- ``blocks``: a ``blocks x blocks`` grid, ``round(val_share x blocks^2)`` of them (at least one, never all) drawn
  into ``val`` with ``seed`` and the image's number.

An ROI that straddles a boundary belongs to neither side and is dropped. :func:`val_region` gives the held-out
pixels themselves, so that a model trained on the other region can be scored only where it never trained
(``changescope multimodal evaluate --holdout``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from changescope.errors import ParameterError

__all__ = ["RegionSplit", "region_split", "val_region"]


class RegionSplit(Protocol):
    """What a region split reads from its parameters (:class:`~changescope.multimodal.index.IndexParams` has it)."""

    @property
    def roi(self) -> int:
        """ROI side in pixels."""

    @property
    def split(self) -> str:
        """``"halves"`` or ``"blocks"`` (other values are not region splits)."""

    @property
    def blocks(self) -> int:
        """Blocks per side."""

    @property
    def val_share(self) -> float:
        """Share of the blocks held out."""

    @property
    def seed(self) -> int:
        """Seed of the blocks drawn."""

    @property
    def val_half(self) -> str:
        """``"left"`` or ``"right"``: the half held out."""


def _val_blocks(params: RegionSplit, image: int) -> NDArray[np.bool_]:
    """Which of the ``blocks x blocks`` blocks of image number ``image`` are ``val`` (row-major, seeded)."""
    n = params.blocks
    rng = np.random.default_rng([params.seed, image])
    n_val = min(n * n - 1, max(1, round(params.val_share * n * n)))
    chosen = np.zeros(n * n, dtype=bool)
    chosen[rng.permutation(n * n)[:n_val]] = True
    return chosen


def val_region(shape: tuple[int, int], params: RegionSplit, image: int = 0) -> NDArray[np.bool_]:
    """The pixels of an image that a region split (``halves`` or ``blocks``) puts in ``val``.

    Args:
        shape: ``(H, W)`` of the image.
        params: The split (``split``, ``val_half``, ``blocks``, ``val_share``, ``seed``).
        image: Number of the image in the index (the blocks are drawn per image).

    Returns:
        ``(H, W)`` mask, True in the validation region: what a model trained on the other region is evaluated on.

    Raises:
        ParameterError: ``params.split`` is not a region split.
    """
    h, w = shape
    if params.split == "halves":
        out = np.zeros((h, w), dtype=bool)
        out[:, w // 2 :] = True
        return out if params.val_half == "right" else ~out
    if params.split != "blocks":
        raise ParameterError(f"split={params.split!r} is not a region split; use 'halves' or 'blocks'")
    n = params.blocks
    rows, cols = (np.arange(h) * n) // h, (np.arange(w) * n) // w
    region: NDArray[np.bool_] = _val_blocks(params, image)[rows[:, None] * n + cols[None, :]]
    return region


def region_split(
    y0: NDArray[Any], x0: NDArray[Any], shape: tuple[int, int], params: RegionSplit, image: int
) -> NDArray[Any]:
    """``"train"``/``"val"`` of each ROI (top-left corners ``y0``, ``x0``) of one image, ``""`` across a boundary."""
    h, w = shape
    y1, x1 = y0 + params.roi - 1, x0 + params.roi - 1
    if params.split == "halves":
        left, right = x1 < w // 2, x0 >= w // 2
        val, train = (right, left) if params.val_half == "right" else (left, right)
    else:
        n = params.blocks
        by0, bx0, by1, bx1 = (y0 * n) // h, (x0 * n) // w, (y1 * n) // h, (x1 * n) // w
        inside = (by0 == by1) & (bx0 == bx1)
        val = inside & _val_blocks(params, image)[by0 * n + bx0]
        train = inside & ~val
    return np.where(val, "val", np.where(train, "train", ""))
