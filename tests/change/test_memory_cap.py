"""Scoring a mid-size AOI under a hard address-space cap (``RLIMIT_AS``) that the whole-cube path cannot meet.

The stores: 100 x 100 patches and their 200 x 200 sub-patches, 24 dates, 48 dimensions (a 3.2 k px AOI at patch
32). The whole-cube path (the store read as float32, standardised and zero-filled as float64, as scoring did before
it read one date at a time) needs 1.15 GB for those copies alone; the cap leaves 0.8 GiB above what the imports
reserve.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

pytestmark = pytest.mark.slow

HEADROOM = int(0.8 * 2**30)
"""Bytes of address space the scoring gets above what the imports reserve."""

IMPORTS = "import xarray, zarr, sklearn, faiss, pandas; from changescope.change.store import score_events\n"

CHILD = """
import json, resource, sys
cap = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
import xarray as xr
from changescope.change.store import score_events
from changescope.config import RunConfig
root = sys.argv[1]
emb = xr.open_zarr(root + "/coarse.zarr")
fine = xr.open_zarr(root + "/fine.zarr")
found = score_events(emb, fine, RunConfig(patch_size=32), 2, persistence=1)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
frame = found.events.frame
print(json.dumps({"events": len(frame), "patches": sorted(set(map(int, frame["patch"]))),
                  "vm_peak_kb": int(status["VmPeak"].split()[0])}))
"""


def _write_store(path: Path, side: int, n_t: int, dim: int, size: int, seed: int) -> None:
    """A seeded landscape store written one date at a time; a block of patches changes at mid-series."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(12, dim))
    swing = rng.normal(scale=0.4, size=(n_t, 12, dim)).cumsum(axis=0)
    yy, xx = np.mgrid[0:side, 0:side]
    kind = ((np.sin(yy / 7.0) + np.cos(xx / 5.0)) * 3 + 6).astype(int) % 12
    offset = 0.3 * rng.normal(size=(side, side, dim))
    chunk = min(64, side)
    skeleton = xr.Dataset(
        {
            "embedding": (
                ("time", "row", "col", "dim"),
                da.full((n_t, side, side, dim), np.nan, chunks=(1, chunk, chunk, dim), dtype="f4"),
            ),
            "valid_fraction": (
                ("time", "row", "col"),
                da.full((n_t, side, side), np.nan, chunks=(1, chunk, chunk), dtype="f4"),
            ),
        },
        coords={"time": pd.date_range("2020-01-01", periods=n_t, freq="MS").as_unit("ns")},
        attrs={"patch_size": size, "stride": size, "min_valid": 0.5},
    )
    encoding = {"embedding": {"chunks": (1, chunk, chunk, dim)}, "valid_fraction": {"chunks": (1, chunk, chunk)}}
    skeleton.to_zarr(path, mode="w", compute=False, zarr_format=2, consolidated=True, encoding=encoding)
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


def _vm_peak_of_imports() -> int:
    code = IMPORTS + "print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) * 1024


def test_scoring_a_mid_size_aoi_stays_under_a_hard_address_space_cap(tmp_path: Path) -> None:
    side, n_t, dim = 100, 24, 48
    _write_store(tmp_path / "coarse.zarr", side, n_t, dim, 32, seed=0)
    _write_store(tmp_path / "fine.zarr", 2 * side, n_t, dim, 16, seed=1)
    values = n_t * (side**2 + (2 * side) ** 2) * dim
    assert values * (4 + 8 + 8) > HEADROOM  # the whole-cube path's copies (float32 read, two float64) would not fit
    cap = _vm_peak_of_imports() + HEADROOM
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(cap)], capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["vm_peak_kb"] * 1024 <= cap
    lo, hi = side // 3, side // 3 + side // 20
    planted = {r * side + c for r in range(lo, hi) for c in range(lo, hi)}
    found = set(result["patches"])
    assert len(found & planted) >= 0.8 * len(planted)  # the change is found under the cap
