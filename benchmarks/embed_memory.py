"""Peak memory of ``changescope embed`` on a large stack of COGs: bounded by the block size, not the AOI.

Writes a synthetic ``--size`` x ``--size`` px, ``--dates``-date, ``--bands``-band stack of Cloud-Optimised GeoTIFFs
(smooth fields, so they compress; optional smooth cloud masks), then runs ``changescope embed`` with the
``spectral`` encoder in a subprocess and reports its peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) against the
2 GiB target, and its wall time. The default is the full 8192 x 8192 x 12-date case; pass smaller sizes to try it
quickly.

Usage::

    python benchmarks/embed_memory.py [--size 8192] [--dates 12] [--bands 4] [--patch-size 32] [--block 1024]
        [--workers N] [--clouds 0.2] [--dir DIR (kept; default a temporary dir)]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import zoom

from changescope.io.writers import write_geotiff
from changescope.testing import TEST_CRS, utm_transform

TARGET_BYTES = 2 * 1024**3
BAND_NAMES = ("blue", "green", "red", "nir", "swir1", "swir2")


def smooth_field(rng: np.random.Generator, size: int, cell: int = 128) -> np.ndarray:
    """A smooth random field in [0, 1] (bilinear upsampling of a coarse random grid)."""
    coarse = rng.random((size // cell + 2, size // cell + 2))
    fine = zoom(coarse, cell, order=1)
    return fine[:size, :size]


def write_stack(folder: Path, size: int, dates: int, bands: int, clouds: float, seed: int = 0) -> float:
    """Write the stack; returns the seconds it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(BAND_NAMES[:bands])
    base = [smooth_field(rng, size) for _ in names]
    for day in pd.date_range("2021-01-01", periods=dates, freq="MS"):
        stem = day.strftime("%Y-%m-%d")
        drift = rng.normal(scale=0.05)
        img = np.stack([(1000 + 3000 * np.clip(b + drift, 0, 1)).astype(np.uint16) for b in base])
        write_geotiff(
            folder / f"{stem}.tif", img, crs=TEST_CRS, transform=utm_transform(), descriptions=names, cog=True
        )
        del img
        if clouds > 0:
            field = smooth_field(rng, size, cell=256)
            mask = (field > np.quantile(field[::16, ::16], 1 - clouds)).astype(np.uint8)
            write_geotiff(folder / f"{stem}.mask.tif", mask, crs=TEST_CRS, transform=utm_transform(), cog=True)
        print(f"  wrote {stem} ({time.perf_counter() - start:.0f} s)", flush=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--dates", type=int, default=12)
    parser.add_argument("--bands", type=int, default=4, choices=range(1, len(BAND_NAMES) + 1))
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--block", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--clouds", type=float, default=0.0, help="cloud fraction of the masks (0: no masks)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the stack and store (kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        series = root / "series"
        if not any(series.glob("*.tif")):
            print(f"writing {args.dates} dates of {args.size}x{args.size} px x {args.bands} bands (COG) to {series}")
            write_s = write_stack(series, args.size, args.dates, args.bands, args.clouds)
            print(f"  done in {write_s:.0f} s")
        on_disk = sum(f.stat().st_size for f in series.glob("*.tif"))
        cli = ["embed", str(series), "--encoder", "spectral", "--patch-size", str(args.patch_size)]
        cli += ["--out", str(root / "embeddings.zarr"), "--overwrite", "--quiet"]
        if args.block:
            cli += ["--block", str(args.block)]
        if args.workers:
            cli += ["--workers", str(args.workers)]
        code = f"from changescope.cli.app import main; main({cli!r})"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], check=False)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
        pixels = args.size * args.size * args.dates
        print(f"stack: {args.dates} x {args.size}x{args.size} px x {args.bands} bands, {on_disk / 1e9:.2f} GB of COGs")
        print(f"embed exit code {done.returncode}; wall {wall:.1f} s ({pixels / wall / 1e6:.1f} Mpx/s)")
        verdict = "OK" if peak <= TARGET_BYTES else "OVER"
        print(f"peak RSS of the embed process: {peak / 1024**3:.2f} GiB (target 2 GiB: {verdict})")
        if args.workers:
            print("note: with --workers the peak is that of the largest single process (client or one worker)")


if __name__ == "__main__":
    main()
