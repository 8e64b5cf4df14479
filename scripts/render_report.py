"""Render a report with headless Chromium: a PNG screenshot, and how many of its images decoded.

Usage: ``python scripts/render_report.py REPORT.html OUT.png [--chromium /usr/bin/chromium]``

Prints ``images loaded: OK/TOTAL`` (read from the ``data-images-loaded`` attribute the report's inline script sets
on ``<body>`` once the page has loaded, via ``--dump-dom``) and exits 1 when the screenshot is missing or some image
did not decode. No network is used: Chromium runs with networking features off and a throw-away profile.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
)


def _chromium(binary: str, profile: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def render(report: Path, out: Path, binary: str = CHROMIUM, width: int = 1280, height: int = 4000) -> tuple[int, int]:
    """Screenshot ``report`` into ``out`` and return ``(images decoded, images)`` from the dumped DOM."""
    url = report.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        shot = _chromium(binary, profile, f"--screenshot={out.resolve()}", f"--window-size={width},{height}", url)
        if not out.exists():
            raise RuntimeError(f"chromium wrote no screenshot (exit {shot.returncode}): {shot.stderr[-2000:]}")
        dom = _chromium(binary, profile, "--dump-dom", url)
    found = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom.stdout)
    if found is None:
        raise RuntimeError(f"the dumped DOM has no data-images-loaded attribute (exit {dom.returncode})")
    return int(found.group(1)), int(found.group(2))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--chromium", default=CHROMIUM)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args(argv)
    try:
        ok, total = render(args.report, args.out, args.chromium, args.width, args.height)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"images loaded: {ok}/{total}")
    return 0 if ok == total and total > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
