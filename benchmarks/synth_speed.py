"""Benchmark: time to generate and write the default synthetic AOI (1024 x 1024 px, 24 months).

Prints the wall time of ``make_aoi`` (generation + writing) against the 30 s budget, and, as the reference measured
in the same run, the time of the in-memory generation alone (``generate_aoi``). Asserts nothing.

Usage: ``python benchmarks/synth_speed.py [--size 1024] [--months 24] [--seed 0] [--repeat 1]``
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from changescope.synthetic import generate_aoi, make_aoi

BUDGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the best is reported")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"AOI: {args.size} x {args.size} px, {args.months} months, seed {args.seed}")

    in_memory = []
    for _ in range(args.repeat):
        began = time.perf_counter()
        generate_aoi(args.seed, args.size, args.months)
        in_memory.append(time.perf_counter() - began)

    written = []
    n_files = 0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            info = make_aoi(tmp, args.seed, args.size, args.months)
            written.append(time.perf_counter() - began)
            n_files = sum(1 for p in info.root.rglob("*") if p.is_file())
            n_bytes = sum(p.stat().st_size for p in info.root.rglob("*") if p.is_file())

    best_mem, best_write = min(in_memory), min(written)
    print(f"in-memory generation (reference): {best_mem:6.2f} s")
    print(f"make_aoi (generate + write):      {best_write:6.2f} s  ({n_files} files, {n_bytes / 2**20:.0f} MiB)")
    print(f"writing share:                    {best_write - best_mem:6.2f} s")
    print(f"budget {BUDGET_S:.0f} s: make_aoi uses {best_write / BUDGET_S:.2f} of it")
    print(f"per date: {best_write / args.months * 1000:.0f} ms")


if __name__ == "__main__":
    main()
