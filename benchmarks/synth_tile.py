"""Benchmark: write a synthetic Sentinel-2 L2A tile block by block; wall time, bytes written and peak memory.

Each measurement runs ``changescope.synthetic.write_s2_tile`` in a fresh subprocess, which reports its own peak
RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and wall time when it ends. With ``--blocks 512,1024`` the
same tile is written once per block size, which shows that memory follows the block, not the tile. Prints an
extrapolation to a whole tile (10980 x 10980 px, 24 months) from the time per 10 m megapixel-date. What it writes
is deleted unless ``--keep``. Asserts nothing.

Usage::

    python benchmarks/synth_tile.py [--size 4104] [--months 2] [--blocks 1024] [--bands s2] [--seed 0]
        [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
began = time.perf_counter()
from changescope.synthetic import write_s2_tile
imported = time.perf_counter()
info = write_s2_tile(sys.argv[1], seed=int(sys.argv[2]), size=int(sys.argv[3]), months=int(sys.argv[4]),
                     bands=sys.argv[5], block=int(sys.argv[6]))
done = time.perf_counter()
print(json.dumps({"wall_s": done - imported, "import_s": imported - began, "events": len(info.events),
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

WHOLE_TILE = 10980
WHOLE_MONTHS = 24


def measure(out: Path, args: argparse.Namespace, block: int) -> dict[str, float]:
    """Write one tile in a subprocess; its report plus the bytes and files it left."""
    cmd = [sys.executable, "-c", CHILD, str(out), str(args.seed), str(args.size), str(args.months), args.bands]
    done = subprocess.run([*cmd, str(block)], check=True, capture_output=True, text=True)
    report: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    files = [p for p in out.rglob("*") if p.is_file()]
    report["bytes"] = sum(p.stat().st_size for p in files)
    report["files"] = len(files)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4104, help="10 m grid side, a multiple of 6")
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--blocks", default="1024", help="block sizes to try, comma-separated")
    parser.add_argument("--bands", default="s2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep what was written")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"tile: {args.size} x {args.size} px at 10 m, {args.months} months, bands {args.bands}, seed {args.seed}")
    root = args.dir or Path(tempfile.mkdtemp(prefix="synth_tile_"))
    try:
        for block in (int(b) for b in args.blocks.split(",")):
            out = root / f"tile_b{block}"
            if out.exists():
                shutil.rmtree(out)
            r = measure(out, args, block)
            mpx_dates = args.size**2 * args.months / 1e6
            per = r["wall_s"] / mpx_dates
            whole = per * WHOLE_TILE**2 * WHOLE_MONTHS / 1e6
            whole_bytes = r["bytes"] / mpx_dates * WHOLE_TILE**2 * WHOLE_MONTHS / 1e6
            print(
                f"block {block:5d}: {r['wall_s']:7.1f} s ({per * 1000:.0f} ms per 10 m megapixel-date), "
                f"{r['bytes'] / 2**20:8.1f} MiB in {r['files']:.0f} files, {r['events']:.0f} events, "
                f"peak RSS {r['peak_rss_kib'] / 1024:6.0f} MiB (import {r['import_s']:.1f} s)"
            )
            print(
                f"    whole tile {WHOLE_TILE}^2 x {WHOLE_MONTHS} months at this rate: {whole / 3600:.1f} h, "
                f"{whole_bytes / 2**30:.0f} GiB"
            )
            if not args.keep:
                shutil.rmtree(out)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.keep:
        print(f"kept in {root}")


if __name__ == "__main__":
    main()
