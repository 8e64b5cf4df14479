"""Which observations of a patch serve as the reference for scoring each date.

A reference is a boolean mask ``ref[t, j, n]``: observation ``j`` of patch ``n`` is in the reference of date ``t``.
Only valid observations (clear, with an embedding) ever enter a reference, and only observations *before* ``t``.

Strategies:

- ``"first"``: the first ``k`` valid observations of the patch (at most all but its last one); those reference
  dates themselves are not scored.
- ``"previous"``: the last valid observation before ``t``.
- ``"rolling"``: the last ``k`` valid observations before ``t``.
- ``"season"``: the valid observations about one year earlier (``365 ± season_window`` days): the same season of
  the previous year, so that phenology is not change.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.errors import ParameterError

__all__ = ["REFERENCES", "Reference", "reference_mask"]

Reference: TypeAlias = Literal["first", "previous", "rolling", "season"]
REFERENCES: tuple[str, ...] = ("first", "previous", "rolling", "season")


def reference_mask(
    valid: NDArray[np.bool_],
    times: pd.DatetimeIndex | NDArray[np.datetime64],
    reference: Reference = "first",
    k: int = 3,
    season_window: int = 45,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Build the reference mask of every date.

    Args:
        valid: ``(T, N)`` whether each observation is usable.
        times: ``T`` sorted dates.
        reference: Strategy (see module docstring).
        k: Number of reference observations for ``"first"`` and ``"rolling"``.
        season_window: Half-width in days of the ``"season"`` window around one year earlier.

    Returns:
        ``(ref, scored)``: ``ref`` is ``(T, T, N)`` (date scored, reference date, patch); ``scored`` is ``(T, N)``,
        True where the observation gets a score (valid, not itself a ``"first"`` reference, reference non-empty).

    Raises:
        ParameterError: Unknown strategy, ``k < 1`` or shapes that disagree.
    """
    if reference not in REFERENCES:
        raise ParameterError(f"reference={reference!r} is unknown; choose one of {list(REFERENCES)!r}")
    if k < 1:
        raise ParameterError(f"k={k!r} must be >= 1 reference observations")
    valid = np.asarray(valid, dtype=bool)
    idx = pd.DatetimeIndex(times)
    n_t = valid.shape[0]
    if len(idx) != n_t:
        raise ParameterError(f"got {len(idx)} times for {n_t} observations")
    count = np.cumsum(valid, axis=0)  # valid observations up to and including t
    before = np.tril(np.ones((n_t, n_t), dtype=bool), k=-1)[:, :, None]  # j < t
    if reference == "first":
        # a patch with few valid observations keeps at least one to score: k is capped at (valid count - 1)
        k_eff = np.minimum(k, np.maximum(count[-1] - 1, 1))
        in_first = valid & (count <= k_eff[None, :])
        ref = np.broadcast_to(in_first[None], (n_t, *valid.shape)).copy()
        scored = valid & ~in_first
    elif reference in ("previous", "rolling"):
        kk = 1 if reference == "previous" else k
        prev_count = np.vstack([np.zeros((1, valid.shape[1]), dtype=count.dtype), count[:-1]])  # valid before t
        # j is among the last kk valid observations before t: count[j] > prev_count[t] - kk
        ref = before & valid[None] & (count[None] > (prev_count[:, None] - kk))
        scored = valid.copy()
    else:
        days = (idx.values[:, None] - idx.values[None, :]) / np.timedelta64(1, "D")
        window = (days >= 365 - season_window) & (days <= 365 + season_window)
        ref = window[:, :, None] & valid[None]
        scored = valid.copy()
    scored &= ref.any(axis=1)
    return ref, scored
