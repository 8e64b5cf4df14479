"""Peak memory and wall time of the score stage on large synthetic embeddings stores, read one date at a time.

Writes (into a temporary folder, deleted afterwards unless ``--keep``) a patch store of ``--side`` x ``--side``
patches and its sub-patch store (twice the side), ``--dates`` dates of ``--dim`` dimensions, with 12 land covers
that swing with the seasons, per-patch offsets, noise, 20 % cloudy observations and a block of patches that changes
at mid-series. Each store is written date by date. Then it runs ``score_events`` (the ``run`` defaults: peers,
multi-scale, calibrated decisions) in a subprocess and prints its peak RSS (``getrusage``), its wall time, the
scoring and event-extraction seconds, the events found, and the float64 size of the ``(T, N, D)`` cubes that
scoring no longer holds.

Usage: python benchmarks/score_memory.py [--side 200] [--dates 24] [--dim 24] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

CHILD = """
import json, resource, sys, time
import xarray as xr
from changescope.change.store import score_events
from changescope.config import RunConfig
root = sys.argv[1]
emb, fine = xr.open_zarr(root + "/coarse.zarr"), xr.open_zarr(root + "/fine.zarr")
t0 = time.perf_counter()
found = score_events(emb, fine, RunConfig(patch_size=32), 2, persistence=1)
print(json.dumps({"wall_s": round(time.perf_counter() - t0, 1), "timings": found.timings,
                  "events": len(found.events),
                  "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}))
"""


def write_store(path: Path, side: int, n_t: int, dim: int, size: int, seed: int) -> None:
    """One seeded landscape store, written a date at a time."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(12, dim))
    swing = rng.normal(scale=0.4, size=(n_t, 12, dim)).cumsum(axis=0)
    yy, xx = np.mgrid[0:side, 0:side]
    kind = ((np.sin(yy / 7.0) + np.cos(xx / 5.0)) * 3 + 6).astype(int) % 12
    offset = 0.3 * rng.normal(size=(side, side, dim))
    ch = min(64, side)
    skeleton = xr.Dataset(
        {
            "embedding": (
                ("time", "row", "col", "dim"),
                da.full((n_t, side, side, dim), np.nan, chunks=(1, ch, ch, dim), dtype="f4"),
            ),
            "valid_fraction": (
                ("time", "row", "col"),
                da.full((n_t, side, side), np.nan, chunks=(1, ch, ch), dtype="f4"),
            ),
        },
        coords={"time": pd.date_range("2020-01-01", periods=n_t, freq="MS").as_unit("ns")},
        attrs={"patch_size": size, "stride": size, "min_valid": 0.5},
    )
    skeleton.to_zarr(path, mode="w", compute=False, zarr_format=2, consolidated=True)
    lo, hi = side // 3, side // 3 + side // 20
    for t in range(n_t):
        r = np.random.default_rng([seed, t])
        X = base[kind] + swing[t][kind] + offset + 0.1 * r.normal(size=(side, side, dim))
        if t >= n_t // 2:
            X[lo:hi, lo:hi] += 2.0
        vf = np.where(r.random((side, side)) < 0.2, 0.0, 1.0).astype("f4")
        date = xr.Dataset(
            {
                "embedding": (("time", "row", "col", "dim"), X[None].astype("f4")),
                "valid_fraction": (("time", "row", "col"), vf[None]),
            }
        )
        date.to_zarr(path, region={"time": slice(t, t + 1), "row": slice(0, side), "col": slice(0, side)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=200)
    ap.add_argument("--dates", type=int, default=24)
    ap.add_argument("--dim", type=int, default=24)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="score_memory_"))
    try:
        t0 = time.perf_counter()
        write_store(root / "coarse.zarr", args.side, args.dates, args.dim, 32, seed=0)
        write_store(root / "fine.zarr", 2 * args.side, args.dates, args.dim, 16, seed=1)
        written = time.perf_counter() - t0
        out = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        n = args.side**2 * 5  # patches and sub-patches
        cube = args.dates * n * args.dim * 8 / 2**30
        print(
            f"stores {args.side}^2 + {2 * args.side}^2 patches x {args.dates} dates x {args.dim} dims "
            f"(written in {written:.0f} s); their float64 cubes: {cube:.2f} GiB"
        )
        print(
            f"score_events: {result['wall_s']} s (score {result['timings']['score']} s, events "
            f"{result['timings']['events']} s), {result['events']} events, peak RSS {result['peak_rss_gib']} GiB"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
