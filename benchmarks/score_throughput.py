"""Scoring throughput: vectorised per-patch LOF/distance vs a per-patch scikit-learn loop on the same data.

Prints patch-dates/s for each, their ratio (target >= 50x for LOF) and the largest score difference.
Usage: python benchmarks/score_throughput.py [--patches 2000] [--dates 24] [--dim 64] [--k 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.neighbors import LocalOutlierFactor

from changescope.change import ChangeScorer, reference_mask


def naive_lof(X, valid, times, reference, k, n_neighbors):
    ref, scored = reference_mask(valid, times, reference, k)
    out = np.full(valid.shape, np.nan)
    for n in range(X.shape[1]):
        for t in range(X.shape[0]):
            if not scored[t, n]:
                continue
            refs = X[ref[t, :, n], n]
            if len(refs) < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lof = LocalOutlierFactor(n_neighbors=n_neighbors, novelty=True).fit(refs)
            out[t, n] = -lof.score_samples(X[t, n][None])[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patches", type=int, default=2000)
    ap.add_argument("--dates", type=int, default=24)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--reference", default="rolling")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1, args.patches, args.dim)) + 0.1 * rng.normal(size=(args.dates, args.patches, args.dim))
    valid = rng.random((args.dates, args.patches)) > 0.15
    times = pd.date_range("2018-01-01", periods=args.dates, freq="MS")
    n_obs = int(valid.sum())
    rows = []
    for method in ("distance", "lof"):
        t0 = time.perf_counter()
        sc = ChangeScorer(
            method, args.reference, k=args.k, n_neighbors=20, normalize=False, context="none", standardize=False
        ).fit(X, valid, times)
        rows.append((method, "changescope", n_obs / (time.perf_counter() - t0)))
        if method == "lof":
            fast = sc.raw_scores_
    sub = slice(0, max(1, args.patches // 10))  # the loop is slow: time it on a tenth and scale per observation
    t0 = time.perf_counter()
    slow = naive_lof(X[:, sub], valid[:, sub], times, args.reference, args.k, 20)
    loop_rate = int(valid[:, sub].sum()) / (time.perf_counter() - t0)
    rows.append(("lof", "sklearn loop", loop_rate))
    diff = np.nanmax(np.abs(fast[:, sub] - slow))
    same_nan = bool((np.isnan(fast[:, sub]) == np.isnan(slow)).all())
    print(f"{args.patches} patches x {args.dates} dates, dim {args.dim}, reference={args.reference} k={args.k}")
    print(f"{'method':10s} {'implementation':14s} {'patch-dates/s':>14s}")
    for method, impl, rate in rows:
        print(f"{method:10s} {impl:14s} {rate:14.0f}")
    lof_rate = next(r for m, i, r in rows if m == "lof" and i == "changescope")
    print(f"LOF speed-up vs scikit-learn loop: {lof_rate / loop_rate:.1f}x (target >= 50x)")
    print(f"max |score difference| = {diff:.2e}; same unscored set: {same_nan}")


if __name__ == "__main__":
    main()
