"""Peer scoring at growing AOI sizes: `peer_scores` against a search of the peers date by date.

`peer_scores` (the default `run` context) finds each patch's peers once per reference mask (once for the whole
series with the `first` reference) by an exact brute-force search, and keeps per date the nearest candidates that
are scorable that date. The reference below is the direct way: a fresh scikit-learn neighbour search (its default
algorithm, a k-d tree for these dimensions) over that date's scorable patches, for every date. Both give the same
scores; the script checks it and prints the time of each and their ratio, measured in the same run.

The embeddings are structured like a landscape: 12 land-cover states with their own seasonal swing, per-patch
offsets, noise, and 30 % of the observations cloudy.

Usage: python benchmarks/peer_scaling.py [--sides 32 64 96] [--dates 24] [--dim 15]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from changescope.change.context import _score_against_peers, peer_scores
from changescope.change.reference import reference_mask


def landscape(side: int, n_t: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X (T, N, D), valid (T, N), positions (N, 2))`` of a side x side patch grid."""
    rng = np.random.default_rng(seed)
    n = side * side
    kind = rng.integers(0, 12, size=n)
    base = rng.normal(size=(12, dim))[kind] + 0.3 * rng.normal(size=(n, dim))
    swing = rng.normal(size=(n_t, 12, dim)).cumsum(axis=0) * 0.5
    X = base[None] + swing[:, kind] + 0.05 * rng.normal(size=(n_t, n, dim))
    valid = rng.random((n_t, n)) > 0.3
    pos = np.stack(np.divmod(np.arange(n), side), axis=1)
    return X, valid, pos


def per_date_reference(
    X: np.ndarray, valid: np.ndarray, times: pd.DatetimeIndex, pos: np.ndarray, n_peers: int = 100
) -> np.ndarray:
    """Distance peer scores with one neighbour search per date (exclusion 2, k_nearest 3, reference first-3)."""
    exclusion, k_nearest = 2, 3
    ref, scored = reference_mask(valid, times, "first", 3)
    Xf = np.where(valid[..., None], X, 0.0)
    out = np.full(valid.shape, np.nan)
    extra = (2 * exclusion + 1) ** 2
    for t in range(X.shape[0]):
        count = ref[t].sum(axis=0)
        idx = np.nonzero(scored[t] & (count > 0))[0]
        n_eff = min(n_peers, len(idx) - 1)
        if n_eff < max(k_nearest + 1, 5):
            continue
        state = np.einsum("jn,jnd->nd", ref[t][:, idx].astype(np.float64), Xf[:, idx]) / count[idx, None]
        n_query = min(len(idx), n_eff + extra + 1)
        _, nb = NearestNeighbors(n_neighbors=n_query).fit(state).kneighbors(state)
        far = (np.abs(pos[idx][nb, 0] - pos[idx][:, None, 0]) > exclusion) | (
            np.abs(pos[idx][nb, 1] - pos[idx][:, None, 1]) > exclusion
        )
        order = np.argsort(~far, axis=1, kind="stable")[:, :n_eff]
        peers = np.take_along_axis(nb, order, axis=1)
        mask = np.take_along_axis(far, order, axis=1)
        delta = Xf[t, idx] - state
        out[t, idx] = _score_against_peers(delta, delta[peers], mask, "distance", k_nearest, 20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sides", type=int, nargs="+", default=[32, 64, 96])
    ap.add_argument("--dates", type=int, default=24)
    ap.add_argument("--dim", type=int, default=15)
    args = ap.parse_args()
    times = pd.date_range("2018-01-01", periods=args.dates, freq="MS")
    for side in args.sides:
        X, valid, pos = landscape(side, args.dates, args.dim)
        t0 = time.perf_counter()
        got = peer_scores(X, valid, times, pos)
        t1 = time.perf_counter()
        want = per_date_reference(X, valid, times, pos)
        t2 = time.perf_counter()
        diff = float(np.nanmax(np.abs(got - want)))
        same_nan = bool((np.isnan(got) == np.isnan(want)).all())
        result = {
            "patches": side * side,
            "dates": args.dates,
            "dim": args.dim,
            "peer_scores_s": round(t1 - t0, 2),
            "per_date_search_s": round(t2 - t1, 2),
            "speed-up": round((t2 - t1) / (t1 - t0), 1),
            "max_score_difference": diff,
            "same_unscored": same_nan,
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
