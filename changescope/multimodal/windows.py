"""Per-ROI statistics over one pair: valid, damage and building ratios and the damage class (summed-area tables).

:func:`window_ratios` is the arithmetic behind the window index (:mod:`changescope.multimodal.index`, whose module
docstring gives the rules, ``class_rule`` included).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.multimodal.pairs import PairArrays

__all__ = ["N_DAMAGE_CLASSES", "ClassRule", "window_ratios"]

ClassRule: TypeAlias = Literal["majority", "maximum"]
"""How an ROI's damage class is picked: the most frequent class (ties to the more severe) or the most severe."""
N_DAMAGE_CLASSES = 4


def _box_sums(mask: NDArray[np.bool_], roi: int, stride: int) -> NDArray[np.int64]:
    """Pixel counts of ``mask`` in every ROI of the grid (summed-area table)."""
    h, w = mask.shape
    table = np.zeros((h + 1, w + 1), dtype=np.int64)
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    ys = np.arange(0, h - roi + 1, stride)[:, None]
    xs = np.arange(0, w - roi + 1, stride)[None, :]
    out: NDArray[np.int64] = table[ys + roi, xs + roi] - table[ys, xs + roi] - table[ys + roi, xs] + table[ys, xs]
    return out


def _roi_classes(
    classes: NDArray[np.uint8], valid: NDArray[np.bool_], roi: int, stride: int, rule: ClassRule
) -> NDArray[np.int64]:
    """Damage class of every ROI of the grid by ``rule`` (module docstring); -1 where no pixel is valid."""
    counts = np.stack([_box_sums((classes == c) & valid, roi, stride) for c in range(N_DAMAGE_CLASSES)])
    if rule == "maximum":
        present = counts > 0
        top = N_DAMAGE_CLASSES - 1 - np.argmax(present[::-1], axis=0)
    else:
        top = N_DAMAGE_CLASSES - 1 - np.argmax(counts[::-1], axis=0)  # first maximum from the severe end
    out: NDArray[np.int64] = np.where(counts.sum(axis=0) > 0, top, -1).astype(np.int64)
    return out


def window_ratios(pair: PairArrays, roi: int = 16, stride: int = 8, class_rule: ClassRule = "majority") -> pd.DataFrame:
    """Valid, damage and building ratios and the damage class of every ROI of the grid over one pair.

    Returns:
        One row per ROI: ``y``, ``x`` (top-left pixel), ``valid_ratio``, ``damage_ratio``, ``building_ratio``
        (NaN where the pair has no truth or, for ``building_ratio``, no building classes) and ``damage_class``
        (-1 without classes; ``class_rule`` in the module docstring).
    """
    valid = pair.valid
    h, w = valid.shape
    columns = ["y", "x", "valid_ratio", "damage_ratio", "building_ratio", "damage_class"]
    if h < roi or w < roi:
        return pd.DataFrame(columns=columns)
    n_valid = _box_sums(valid, roi, stride).astype(np.float64)
    ys, xs = np.meshgrid(np.arange(0, h - roi + 1, stride), np.arange(0, w - roi + 1, stride), indexing="ij")
    nan = np.full(n_valid.shape, np.nan)
    damage, building = nan, nan
    classes = np.full(n_valid.shape, -1, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if pair.truth is not None:
            damage = _box_sums(pair.truth.damage & valid, roi, stride) / n_valid
            if pair.truth.building is not None:
                building = _box_sums(pair.truth.building & valid, roi, stride) / n_valid
            if pair.truth.classes is not None:
                classes = _roi_classes(pair.truth.classes, valid, roi, stride, class_rule)
    cols = {"y": ys, "x": xs, "valid_ratio": n_valid / roi**2, "damage_ratio": damage, "building_ratio": building}
    frame = pd.DataFrame({name: values.ravel() for name, values in cols.items()})
    frame["damage_class"] = classes.ravel().astype(np.int8)
    return frame
