"""End to end in headless Chromium: the analyst's loop of issue 14 on a seeded run.

Load the page, pick the top change, open it, find similar changes, mark two relevant and one irrelevant, check that
the ranking and the search follow the labels, reload and find the labels again. Screenshots of every step are saved
under ``$CHANGESCOPE_TEST_ARTIFACTS/browser`` (or pytest's tmp_path) and the folder is printed. The page must log no
console error and request nothing but 127.0.0.1.

Runs on the system Chromium (``chromium`` on PATH, e.g. Debian's package) or Playwright's own browser; skipped,
saying why, when neither is there.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
)
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")


def _chromium() -> tuple[str | None, str | None]:
    """(executable or None for Playwright's own, reason to skip or None)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found, None
    with playwright_api.sync_playwright() as p:
        bundled = Path(p.chromium.executable_path)
    if bundled.is_file():
        return None, None
    return None, "no Chromium: install Debian's `chromium` or run `playwright install chromium`"


@pytest.fixture(scope="module")
def app_url(browser_run: Path) -> Iterator[str]:
    """The app over the seeded run, served by uvicorn on 127.0.0.1 at a free port, in a thread."""
    from changescope.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app([browser_run]), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        assert thread.is_alive(), "the app's server stopped"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    root = os.environ.get("CHANGESCOPE_TEST_ARTIFACTS")
    out = (Path(root) / "browser") if root else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser test screenshots: {out}")
    return out


def _ranking(page: Any) -> list[str]:
    return [str(e) for e in page.get_by_test_id("change-item").evaluate_all("els => els.map(e => e.dataset.eventId)")]


def _similar(page: Any) -> list[str]:
    return [str(e) for e in page.get_by_test_id("similar-item").evaluate_all("els => els.map(e => e.dataset.eventId)")]


def test_the_analysts_loop(app_url: str, artefacts: Path) -> None:
    exe, skip = _chromium()
    if skip:
        pytest.skip(skip)
    expect = playwright_api.expect
    errors: list[str] = []
    outside: list[str] = []

    def on_request(request: Any) -> None:
        url = urlparse(request.url)
        if url.scheme not in ("data", "blob") and url.hostname != "127.0.0.1":
            outside.append(request.url)

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"]) if exe else p.chromium.launch()
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", on_request)
            page.set_default_timeout(15_000)

            # 1. load the page: the ranked list, the map and its imagery
            page.goto(app_url)
            items = page.get_by_test_id("change-item")
            items.first.wait_for()
            page.wait_for_load_state("networkidle")
            before = _ranking(page)
            assert len(before) >= 10, f"the seeded run should list at least 10 changes, got {len(before)}"
            expect(page.get_by_test_id("export-link")).to_have_attribute(
                "href", "/api/feedback/export.parquet?run=" + page.get_by_test_id("run-select").input_value()
            )
            page.screenshot(path=str(artefacts / "1_loaded.png"))

            # 2. pick the top change and open it
            top = before[0]
            items.first.click()
            drawer = page.get_by_test_id("detail")
            expect(drawer).to_have_attribute("data-event-id", top)
            expect(drawer.get_by_test_id("score-chart")).to_be_visible()
            expect(drawer.get_by_test_id("chart-event")).to_have_count(1)
            assert drawer.get_by_test_id("clear-thumb").count() >= 2, "before/after patches at every clear date"
            expect(drawer.get_by_test_id("type-path")).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(artefacts / "2_change.png"))

            # 3. find similar changes
            drawer.get_by_test_id("find-similar").click()
            gallery = drawer.get_by_test_id("similar-gallery")
            gallery.get_by_test_id("similar-item").first.wait_for()
            found = _similar(page)
            assert len(found) >= 3 and top not in found
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(artefacts / "3_similar.png"))

            # 4. two relevant (the change itself and a close match), one irrelevant (another match)
            # (picked so that each has room to move: the match below the top two, the other one above the bottom)
            match = next((e for e in found if before.index(e) >= 2), found[0])
            irrelevant = next(e for e in found if e != match and before.index(e) < len(before) - 1)
            relevant = [top, match]
            drawer.locator(".drawer-labels").get_by_test_id("mark-relevant").click()
            expect(drawer.locator(".drawer-labels").get_by_test_id("mark-relevant")).to_have_attribute(
                "aria-pressed", "true"
            )
            card = gallery.locator(f'[data-event-id="{match}"]')
            card.get_by_test_id("mark-relevant").click()
            expect(gallery.locator(f'[data-event-id="{match}"]')).to_have_attribute("data-label", "relevant")
            gallery.locator(f'[data-event-id="{irrelevant}"]').get_by_test_id("mark-irrelevant").click()

            # the search moved: the irrelevant one is gone from the results, the relevant match stays in them
            expect(gallery.locator(f'[data-event-id="{irrelevant}"]')).to_have_count(0)
            expect(drawer.get_by_test_id("similar-summary")).to_contain_text("2 relevant and 1 irrelevant")
            after_search = _similar(page)
            assert irrelevant not in after_search and match in after_search
            # ... and so did the ranking: the relevant ones first, the irrelevant one last
            expect(items.first).to_have_attribute("data-label", "relevant")
            expect(items.last).to_have_attribute("data-event-id", irrelevant)
            after = _ranking(page)
            assert set(after[:2]) == set(relevant), after[:5]
            assert after.index(irrelevant) > before.index(irrelevant)
            assert after.index(match) < before.index(match)
            expect(
                page.locator(f'[data-testid=change-item][data-event-id="{irrelevant}"] [data-testid=label-badge]')
            ).to_have_text("irrelevant")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(artefacts / "4_labelled.png"))

            # 5. the whole type of the best match marked relevant: its other changes move up past the unlabelled ones
            card = gallery.locator(f'[data-event-id="{match}"]')
            cluster = card.get_attribute("data-cluster")
            assert cluster is not None
            if int(cluster) >= 0:
                card.click()  # open the match: its drawer has the type buttons
                expect(drawer).to_have_attribute("data-event-id", match)
                drawer.get_by_test_id("type-relevant").click()
                expect(drawer.get_by_test_id("type-relevant")).to_have_attribute("aria-pressed", "true")
                unlabelled = page.locator(f'[data-testid=change-item][data-cluster="{cluster}"][data-label=""]')
                expect(unlabelled).to_have_count(0)
                rows = items.evaluate_all("els => els.map(e => [e.dataset.eventId, e.dataset.cluster])")
                rest = [c for e, c in rows if e not in relevant and e != irrelevant]
                n_type = rest.count(cluster)
                assert rest[:n_type] == [cluster] * n_type, f"the relevant type's changes first: {rows}"

            # 6. reload: the labels are still there (stored in the run folder)
            page.reload()
            # the address reopens the change, and an open drawer hides the list: wait for the rows, not their display
            items.first.wait_for(state="attached")
            expect(page.locator(f'[data-testid=change-item][data-event-id="{irrelevant}"]')).to_have_attribute(
                "data-label", "irrelevant"
            )
            for event in relevant:
                row = page.locator(f'[data-testid=change-item][data-event-id="{event}"]')
                expect(row).to_have_attribute("data-label", "relevant")
                expect(row.get_by_test_id("mark-relevant")).to_have_attribute("aria-pressed", "true")
            assert set(_ranking(page)[:2]) == set(relevant)
            # the open change is part of the address: it comes back with the reload; Escape closes it
            expect(drawer).to_have_attribute("data-event-id", match if int(cluster) >= 0 else top)
            page.keyboard.press("Escape")
            expect(drawer).to_be_hidden()
            page.get_by_test_id("label-select").select_option("irrelevant")
            expect(items).to_have_count(1)
            expect(items.first).to_have_attribute("data-event-id", irrelevant)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(artefacts / "5_reloaded.png"))

            # 7. the other pages render
            for name in ("types", "evaluation", "explore"):
                page.get_by_test_id(f"nav-{name}").click()
                expect(page.get_by_test_id(f"{name}-page")).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(artefacts / "6_explore.png"))
            page.get_by_test_id("nav-types").click()
            expect(page.get_by_test_id("type-node").first).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(artefacts / "7_types.png"))
        finally:
            browser.close()

    assert not errors, "the console shows errors:\n" + "\n".join(errors)
    assert not outside, f"requests left 127.0.0.1: {outside}"
