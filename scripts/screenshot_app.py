"""Serve run folders with ``changescope serve``'s app and screenshot the workbench in headless Chromium.

    python scripts/screenshot_app.py RUN_DIR [RUN_DIR...] OUT.png [--view list|change|similar|types|evaluation|explore]
        [--width 1440 --height 900] [--small]

The default view, ``similar``, opens the top-ranked change and runs "find similar". ``--small`` stores the PNG with
a 256-colour palette (a fraction of the size), as for the README's docs/images/webapp.png:

    python scripts/screenshot_app.py demo_out/run docs/images/webapp.png --small
Needs Playwright (``pip install playwright``) and a Chromium: the system one (``chromium`` on PATH, e.g. Debian's
package) or Playwright's own (``playwright install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from pathlib import Path

VIEWS = ("list", "change", "similar", "types", "evaluation", "explore")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chromium_path() -> str | None:
    """The system Chromium, or ``None`` to use Playwright's own browser."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def serve(run_dirs: list[Path], port: int) -> object:
    """Start the app on 127.0.0.1:``port`` in a daemon thread; returns the uvicorn server once it is up."""
    import uvicorn

    from changescope.serve.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(run_dirs), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not start within 60 s")
        time.sleep(0.05)
    return server


def shoot(url: str, out: Path, view: str = "similar", size: tuple[int, int] = (1440, 900)) -> None:
    """Open ``url``, bring up ``view`` and save a PNG screenshot to ``out``."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"]) if exe else p.chromium.launch()
        page = browser.new_page(viewport={"width": size[0], "height": size[1]}, device_scale_factor=1)
        page.goto(url)
        first = page.get_by_test_id("change-item").first
        first.wait_for()
        if view in ("change", "similar"):
            first.click()
            page.get_by_test_id("detail").wait_for()
            if view == "similar":
                page.get_by_test_id("find-similar").click()
                page.get_by_test_id("similar-item").first.wait_for()
                # the chart, the clear dates, the type and the first results in view
                page.get_by_test_id("detail").evaluate(
                    "d => d.scrollTop = d.querySelector('.card').offsetTop - d.querySelector('.drawer-head').offsetHeight - 8"
                )
        elif view in ("types", "evaluation", "explore"):
            page.get_by_test_id(f"nav-{view}").click()
            page.get_by_test_id(f"{view}-page").wait_for()
        page.mouse.move(0, 0)  # no hover highlight
        page.wait_for_load_state("networkidle")
        # every thumbnail in view decoded, and the map's images faded in
        page.wait_for_function("[...document.images].every(i => i.complete || i.loading === 'lazy')")
        page.wait_for_timeout(800)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def shrink(path: Path) -> None:
    """Rewrite the PNG at ``path`` with a 256-colour palette."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main() -> None:
    """The command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="RUN_DIR [RUN_DIR...] OUT.png")
    parser.add_argument("--view", choices=VIEWS, default="similar")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--small", action="store_true", help="store the PNG with a 256-colour palette")
    args = parser.parse_args()
    if len(args.paths) < 2:
        parser.error("give at least one RUN_DIR and the OUT.png")
    *runs, out = args.paths
    port = free_port()
    server = serve(runs, port)
    try:
        shoot(f"http://127.0.0.1:{port}/", out, args.view, (args.width, args.height))
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
    if args.small:
        shrink(out)
    print(f"{out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
