"""What importing changescope costs: wall time and peak RSS of a fresh interpreter, against ``python -c pass``.

Usage: ``python benchmarks/import_cost.py [--repeat N]``

Each case runs in its own subprocess, ``--repeat`` times (default 5); the table shows the median wall time and the
peak resident set size (from ``wait4``), both also as a ratio to a bare ``python -c pass`` measured in the same run,
and whether torch, dask, xarray or timm ended up in ``sys.modules``. Cases:

- ``import changescope``;
- ``import changescope.encoders`` plus ``list_encoders()``, ``get_meta("resnet18")`` and ``list_weights()``;
- ``changescope --version`` (the console entry point, run in-process by the child).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

HEAVY = ("torch", "dask", "xarray", "timm")
_REPORT = "import json, sys; print(json.dumps([m for m in {heavy!r} if m in sys.modules]), file=sys.stderr)"

CASES: dict[str, str] = {
    "python -c pass": "pass",
    "import changescope": "import changescope",
    "import changescope.encoders + list": (
        "import changescope.encoders as e; e.list_encoders(); e.get_meta('resnet18'); e.list_weights()"
    ),
    "changescope --version": (
        "import sys; sys.argv = ['changescope', '--version']\n"
        "from changescope.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    ),
}


@dataclass(frozen=True)
class Measure:
    """One case: median wall seconds, peak RSS in MiB, and the heavy modules it imported."""

    seconds: float
    rss_mib: float
    heavy: tuple[str, ...]


def _run_once(code: str) -> tuple[float, float, tuple[str, ...]]:
    script = f"{code}\n{_REPORT.format(heavy=HEAVY)}"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"case failed ({proc.returncode}): {code!r}\n{err}")
    heavy = tuple(json.loads(err.strip().splitlines()[-1]))
    return seconds, usage.ru_maxrss / 1024, heavy  # ru_maxrss is in KiB on Linux


def measure(code: str, repeat: int) -> Measure:
    """Median wall time and peak RSS of ``repeat`` fresh interpreters running ``code``."""
    runs = [_run_once(code) for _ in range(repeat)]
    return Measure(
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs),
        runs[-1][2],
    )


def main() -> None:
    """Measure every case and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (the median is shown)")
    args = parser.parse_args()
    results = {name: measure(code, args.repeat) for name, code in CASES.items()}
    base = results["python -c pass"]
    print(f"{'case':38} {'wall s':>8} {'x pass':>7} {'RSS MiB':>8} {'x pass':>7}  heavy modules imported")
    for name, m in results.items():
        print(
            f"{name:38} {m.seconds:8.3f} {m.seconds / base.seconds:7.1f} {m.rss_mib:8.1f} "
            f"{m.rss_mib / base.rss_mib:7.1f}  {', '.join(m.heavy) or 'none'}"
        )


if __name__ == "__main__":
    main()
