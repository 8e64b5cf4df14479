"""Peer-referenced change: robustness to seasons, illumination and haze through patches that looked alike.

A patch's own earlier observations are a poor reference when the whole landscape moves: phenology greens and browns
every field, crops rotate, the sun and the haze change from date to date. So for each date ``t`` and patch ``n``,
the *peers* of ``n`` are the ``n_peers`` patches whose reference state (the mean of their reference observations,
see :mod:`changescope.change.reference`) was closest to ``n``'s, excluding patches within ``exclusion`` patch rows
or columns (so that one large event is not its own peer). The reference observations of ``n`` at ``t`` are then the
peers' observations *at the same date*: they share its season, illumination and haze, and if ``n`` has not changed,
some of them look like it now. ``n`` scores high only when it has become unlike every patch that used to be like it.

- ``distance``: mean euclidean distance to the ``k_nearest`` closest peer observations (not their centroid: peers
  may have diverged into several normal states, e.g. different crops);
- ``lof``: the novelty Local Outlier Factor of the observation among its peers' observations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.neighbors import NearestNeighbors

from changescope.change.reference import Reference, reference_mask
from changescope.change.scorers import PatchLOF
from changescope.errors import ParameterError

__all__ = ["peer_scores"]

F64 = NDArray[np.float64]


def peer_scores(
    X: NDArray[np.floating],
    valid: NDArray[np.bool_],
    times: pd.DatetimeIndex | NDArray[np.datetime64],
    positions: NDArray[np.integer],
    *,
    method: str = "distance",
    reference: Reference = "first",
    k: int = 3,
    season_window: int = 45,
    n_peers: int = 100,
    exclusion: int = 2,
    k_nearest: int = 3,
    n_neighbors: int = 20,
    chunk: int = 4096,
    breaks: NDArray[np.bool_] | None = None,
) -> F64:
    """Score every observation against its peers' observations of the same date.

    Args:
        X: ``(T, N, D)`` embeddings.
        valid: ``(T, N)`` usable observations.
        times: ``T`` dates.
        positions: ``(N, 2)`` patch ``(row, col)`` of each patch (for the spatial exclusion).
        method: ``"distance"`` or ``"lof"``.
        reference: Reference strategy defining each patch's reference state.
        k: Reference size.
        season_window: Window of the ``"season"`` strategy.
        n_peers: Peers per patch (capped by the patches available).
        exclusion: Patches within this many rows/cols are never peers.
        k_nearest: Peer observations averaged by ``distance``.
        n_neighbors: LOF neighbours (capped by the peers available).
        chunk: Patches scored at once (memory ``chunk x n_peers x D`` float64).
        breaks: ``(T, N)`` segment starts after confirmed changes
            (:func:`~changescope.change.reference.reference_mask`): a patch's reference state, and so its peers,
            follow its latest segment.

    Returns:
        ``(T, N)`` raw scores, NaN where not scored (invalid, no reference, too few peers).
    """
    if method not in ("distance", "lof"):
        raise ParameterError(f"method={method!r} must be 'distance' or 'lof'")
    if n_peers < 2 or k_nearest < 1:
        raise ParameterError(f"n_peers={n_peers!r} must be >= 2 and k_nearest={k_nearest!r} >= 1")
    if chunk < 1:
        raise ParameterError(f"chunk={chunk!r} must be >= 1 patches")
    Xf = np.where(valid[..., None], np.asarray(X, dtype=np.float64), 0.0)
    n_t, n, _ = Xf.shape
    pos = np.asarray(positions)
    ref, scored = reference_mask(valid, times, reference, k, season_window, breaks=breaks)
    out = np.full((n_t, n), np.nan)
    extra = (2 * exclusion + 1) ** 2
    for t in range(n_t):
        count = ref[t].sum(axis=0)
        ok = scored[t] & (count > 0)
        idx = np.nonzero(ok)[0]
        n_eff = min(n_peers, len(idx) - 1)  # small AOIs: every other scorable patch is a candidate peer
        if n_eff < max(k_nearest + 1, 5):
            continue
        state = np.einsum("jn,jnd->nd", ref[t][:, idx].astype(np.float64), Xf[:, idx]) / count[idx, None]
        n_query = min(len(idx), n_eff + extra + 1)
        _, nb = NearestNeighbors(n_neighbors=n_query).fit(state).kneighbors(state)
        far = (np.abs(pos[idx][nb, 0] - pos[idx][:, None, 0]) > exclusion) | (
            np.abs(pos[idx][nb, 1] - pos[idx][:, None, 1]) > exclusion
        )
        order = np.argsort(~far, axis=1, kind="stable")[:, :n_eff]  # the closest far-away patches first
        peers = np.take_along_axis(nb, order, axis=1)
        mask = np.take_along_axis(far, order, axis=1)
        delta = Xf[t, idx] - state  # each patch's change since its reference state
        for lo in range(0, len(idx), chunk):  # bounded memory: (chunk, n_peers, D) at a time
            sl = slice(lo, lo + chunk)
            out[t, idx[sl]] = _score_against_peers(
                delta[sl], delta[peers[sl]], mask[sl], method, min(k_nearest, n_eff), n_neighbors
            )
    return out


def _score_against_peers(
    delta: F64, R: F64, mask: NDArray[np.bool_], method: str, k_nearest: int, n_neighbors: int
) -> F64:
    """Score each patch's change ``delta (n, D)`` against its peers' changes ``R (n, n_peers, D)``."""
    q = delta[:, None, :]
    if method == "distance":
        d = np.where(mask, np.linalg.norm(R - q, axis=2), np.inf)
        d.sort(axis=1)
        near = d[:, :k_nearest]
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(near).all(axis=1), near.mean(axis=1), np.nan)
    return np.asarray(PatchLOF(n_neighbors=n_neighbors).fit(R, mask).score(q)[:, 0], dtype=np.float64)
