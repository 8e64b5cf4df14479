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

**Segments** (``breaks``, ``"first"`` only): after a confirmed change the old reference no longer describes the
patch, and every later date would look changed. A break at date ``b`` starts a new segment whose reference is its
own first ``k`` valid observations. Until that reference is complete the dates keep the previous segment's
reference (so the change itself, and the observations confirming it, still score against the state before it);
after it, they are compared with the new state. This is how segment-based methods (CCDC, BFAST) restart their model
after a break. The other strategies follow the series by construction and ignore ``breaks``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.types import Reference

__all__ = ["REFERENCES", "Reference", "reference_mask"]

REFERENCES: tuple[str, ...] = ("first", "previous", "rolling", "season")


def reference_mask(
    valid: NDArray[np.bool_],
    times: pd.DatetimeIndex | NDArray[np.datetime64],
    reference: Reference = "first",
    k: int = 3,
    season_window: int = 45,
    breaks: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Build the reference mask of every date.

    Args:
        valid: ``(T, N)`` whether each observation is usable.
        times: ``T`` sorted dates.
        reference: Strategy (see module docstring).
        k: Number of reference observations for ``"first"`` and ``"rolling"``.
        season_window: Half-width in days of the ``"season"`` window around one year earlier.
        breaks: ``(T, N)``, True where a new segment starts (``"first"`` only; see the module docstring).

    Returns:
        ``(ref, scored)``: ``ref`` is ``(T, T, N)`` (date scored, reference date, patch; read-only, and for
        ``"first"`` without breaks a view of one ``(T, N)`` mask, so it costs ``T x N``, not ``T x T x N``);
        ``scored`` is ``(T, N)``, True where the observation gets a score (valid, not itself a ``"first"``
        reference, reference non-empty).

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
    if breaks is not None and np.shape(breaks) != valid.shape:
        raise ParameterError(f"breaks have shape {np.shape(breaks)!r}, expected {valid.shape!r}")
    if reference == "first" and breaks is not None and np.asarray(breaks)[1:].any():
        ref, scored = _segment_first(valid, np.asarray(breaks, dtype=bool), k)
    elif reference == "first":
        # a patch with few valid observations keeps at least one to score: k is capped at (valid count - 1)
        k_eff = np.minimum(k, np.maximum(count[-1] - 1, 1))
        in_first = valid & (count <= k_eff[None, :])
        ref = np.broadcast_to(in_first[None], (n_t, *valid.shape))  # one mask for every date: a read-only view
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


def _segment_first(
    valid: NDArray[np.bool_], breaks: NDArray[np.bool_], k: int
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """``"first"`` references restarted at every break (module docstring), vectorised over patches."""
    n_t = valid.shape[0]
    starts = breaks.copy()
    starts[0] = True
    seg = np.cumsum(starts, axis=0) - 1  # segment index of each date
    count = np.cumsum(valid, axis=0)
    # valid observations before the segment start, carried forward through the segment
    at_start = np.where(starts, count - valid, 0)
    base = np.maximum.accumulate(np.where(starts, at_start, -1), axis=0)
    in_seg: NDArray[np.int64] = (count - base).astype(
        np.int64
    )  # valid observations of the segment up to and including t
    total: NDArray[np.int64] = np.zeros_like(in_seg)  # valid observations of the whole segment, broadcast to its dates
    for t in range(n_t - 1, -1, -1):  # loop over dates only (vectorised over patches)
        last = t == n_t - 1
        total[t] = in_seg[t] if last else np.where(starts[t + 1], in_seg[t], total[t + 1])
    k_first = np.minimum(k, np.maximum(total - 1, 1))  # segment 0 keeps one observation to score
    k_seg = np.where(seg == 0, k_first, np.minimum(k, total))
    in_ref = valid & (in_seg <= k_seg)
    done = in_ref & (in_seg == k_seg)  # the date each segment's reference is complete
    marker = np.where(done, seg, -1)
    # active segment of date t: the latest one whose reference was complete strictly before t
    active = np.vstack([np.full((1, valid.shape[1]), -1), np.maximum.accumulate(marker, axis=0)[:-1]])
    ref = in_ref[None] & (seg[None] == np.maximum(active, 0)[:, None, :])  # before any: the first reference
    scored = valid & (active >= 0)
    return ref, scored
