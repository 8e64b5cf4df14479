"""Rarity of change events and the order an analyst should look at them in.

**Rarity** (in ``[0, 1]``, 1 = rarest) combines two views of how atypical an event's change is:

- *cluster size*: an event of a small change type is rare. ``size_rarity = 1 - log(s) / log(E)`` for an event in a
  cluster of ``s`` of the ``E`` events; noise (``-1``) counts as a cluster of one, so it scores 1.
- *local density*: an event whose change vector is far from its ``k`` nearest other change vectors (mean cosine
  distance, :func:`~changescope.discover.density.knn_mean_distance`) is rare. The distances are rank-normalised to
  ``[0, 1]`` so the two terms share a scale.

``rarity = size_weight * size_rarity + (1 - size_weight) * density_rarity``.

**Ranking** (:func:`rank_events`): ``rank`` 1 is the first event to look at, by ``"rarity"``, ``"magnitude"`` (norm
of the change vector) or a ``"mix"`` of their rank-normalised values. Ties break on the other criterion, then on
``event_id``, so the order is deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.discover.density import knn_mean_distance
from changescope.discover.index import IndexParams
from changescope.errors import ParameterError
from changescope.types import RankBy

__all__ = ["RankBy", "rank_events", "rank_normalize", "rarity", "size_rarity"]

RANK_BY: tuple[str, ...] = ("rarity", "magnitude", "mix")
F64 = NDArray[np.float64]


def rank_normalize(values: NDArray[np.floating[Any]]) -> F64:
    """Map values to ``[0, 1]`` by their rank (ties share their average rank); a single value maps to 1."""
    from scipy.stats import rankdata

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.zeros(0, dtype=np.float64)
    if v.size == 1:
        return np.ones(1, dtype=np.float64)
    r: F64 = np.asarray(rankdata(v, method="average"), dtype=np.float64)
    out: F64 = (r - 1.0) / (v.size - 1.0)
    return out


def size_rarity(labels: NDArray[np.integer[Any]]) -> F64:
    """``1 - log(cluster size) / log(E)`` per event; noise (``-1``) is a cluster of one (rarity 1)."""
    lab = np.asarray(labels, dtype=np.int64)
    n = lab.size
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if n == 1:
        return np.ones(1, dtype=np.float64)
    sizes = np.bincount(lab[lab >= 0], minlength=int(lab.max(initial=-1)) + 1)
    s = np.where(lab >= 0, sizes[np.maximum(lab, 0)] if sizes.size else 1, 1).astype(np.float64)
    out: F64 = np.clip(1.0 - np.log(s) / np.log(n), 0.0, 1.0)
    return out


def rarity(
    vectors: NDArray[np.floating[Any]],
    labels: NDArray[np.integer[Any]],
    *,
    n_neighbors: int = 10,
    size_weight: float = 0.5,
    index_params: IndexParams | None = None,
) -> F64:
    """Rarity of every event in ``[0, 1]`` (see the module docstring).

    Args:
        vectors: ``(E, D)`` change vectors.
        labels: ``(E,)`` cluster labels (``-1`` = noise).
        n_neighbors: ``k`` of the density term.
        size_weight: Weight of the cluster-size term (the density term gets ``1 - size_weight``).
        index_params: Index used for the neighbours (exact below its threshold, approximate above).

    Raises:
        ParameterError: Mismatched lengths or out-of-range weights.
    """
    v = np.asarray(vectors)
    lab = np.asarray(labels)
    if v.ndim != 2 or v.shape[0] != lab.shape[0]:
        raise ParameterError(
            f"vectors {v.shape!r} and labels {lab.shape!r} must describe the same events (rows of vectors)"
        )
    if not 0.0 <= size_weight <= 1.0:
        raise ParameterError(f"size_weight={size_weight!r} must be in [0, 1]")
    if n_neighbors < 1:
        raise ParameterError(f"n_neighbors={n_neighbors!r} must be >= 1")
    if v.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    dens = rank_normalize(knn_mean_distance(v, n_neighbors, params=index_params))
    out = size_weight * size_rarity(lab) + (1.0 - size_weight) * dens
    return np.clip(out, 0.0, 1.0)


def rank_events(frame: pd.DataFrame, by: RankBy = "rarity", weight: float = 0.5) -> pd.DataFrame:
    """Order events for inspection: a copy of ``frame`` with a ``rank`` column (1 = look first).

    Args:
        frame: Events with ``rarity`` (for ``"rarity"``/``"mix"``), ``magnitude`` (for ``"magnitude"``/``"mix"``)
            and ``event_id`` (tie-break, optional).
        by: ``"rarity"``, ``"magnitude"``, or ``"mix"``: ``weight * rank_normalize(rarity) + (1 - weight) *
            rank_normalize(magnitude)``, multiplied by ``rank_normalize(score)`` when ``frame`` has a ``score``
            column (how confidently the change was detected), so that a rare-looking but barely detected event does
            not outrank clear changes.
        weight: Share of rarity in ``"mix"`` (1 = rarity order, 0 = magnitude order).

    Raises:
        ParameterError: Unknown ``by``, ``weight`` outside ``[0, 1]`` or a needed column missing.
    """
    if by not in RANK_BY:
        raise ParameterError(f"by={by!r} is not one of {', '.join(map(repr, RANK_BY))}")
    if not 0.0 <= weight <= 1.0:
        raise ParameterError(f"weight={weight!r} must be in [0, 1]")
    need = {"rarity": ["rarity"], "magnitude": ["magnitude"], "mix": ["rarity", "magnitude"]}[by]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ParameterError(f"ranking by={by!r} needs the column(s) {missing!r}; compute them first (rarity())")
    out = frame.copy()
    n = len(out)
    if n == 0:
        out["rank"] = np.zeros(0, dtype=np.int64)
        return out
    rar = np.nan_to_num(out["rarity"].to_numpy(np.float64), nan=0.0) if "rarity" in out else np.zeros(n)
    mag = np.nan_to_num(out["magnitude"].to_numpy(np.float64), nan=0.0) if "magnitude" in out else np.zeros(n)
    if by == "rarity":
        primary, secondary = rar, mag
    elif by == "magnitude":
        primary, secondary = mag, rar
    else:
        primary = weight * rank_normalize(rar) + (1.0 - weight) * rank_normalize(mag)
        if "score" in out:
            primary = primary * rank_normalize(np.nan_to_num(out["score"].to_numpy(np.float64), nan=-np.inf))
        secondary = rar if weight >= 0.5 else mag
    ids = out["event_id"].astype(str).to_numpy() if "event_id" in out else np.arange(n).astype(str)
    order = np.lexsort((ids, -secondary, -primary))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    out["rank"] = rank
    return out
