"""The committed web-app bundle (changescope/serve/static/) is built from the current web/ sources.

The bundle ships inside the package so that users need no Node. ``web/build.mjs`` stamps the SHA-256 of the
sources into each built file; this test recomputes it here (no Node needed) and fails when the bundle is stale.
Rebuild with ``make web``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
STATIC = REPO / "changescope" / "serve" / "static"
STAMP = re.compile(r"changescope-web sources sha256:([0-9a-f]{64})")
REBUILD = "the committed bundle is stale: rebuild it with `make web` (cd web && npm ci && npm run build)"


def _source_files() -> list[str]:
    """What web/build.mjs hashes (keep in step with ``sourceFiles`` there), relative to web/, sorted."""
    files = ["build.mjs", "index.html", "package.json", "package-lock.json", "tsconfig.json"]
    files += [p.relative_to(WEB).as_posix() for p in (WEB / "src").rglob("*") if p.is_file()]
    return sorted(files)


def _source_hash() -> str:
    """SHA-256 over (path NUL length NUL content) of every source, CRLF read as LF (``sourceHash`` in build.mjs)."""
    digest = hashlib.sha256()
    for rel in _source_files():
        text = (WEB / rel).read_bytes().replace(b"\r\n", b"\n")
        digest.update(f"{rel}\0{len(text)}\0".encode())
        digest.update(text)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def source_hash() -> str:
    if not (WEB / "package-lock.json").is_file():
        pytest.skip("no web/ sources in this checkout (an installed package)")
    return _source_hash()


@pytest.mark.parametrize("name", ["app.js", "app.css"])
def test_bundle_first_line_carries_the_source_hash(name: str, source_hash: str) -> None:
    first = (STATIC / name).read_text(encoding="utf-8").split("\n", 1)[0]
    found = STAMP.search(first)
    assert found, f"{name}: no source stamp on its first line; {REBUILD}"
    assert found.group(1) == source_hash, f"{name}: {REBUILD}"


def test_index_html_is_built_from_the_current_sources(source_hash: str) -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    found = STAMP.search(html)
    assert found and found.group(1) == source_hash, f"index.html: {REBUILD}"
    assert '<script src="/static/app.js">' in html and 'href="/static/app.css"' in html


def test_bundle_fetches_nothing_from_outside() -> None:
    """No CDN, web font or tile server: every URL the bundle names is the app's own."""
    for name in ("index.html", "app.js", "app.css"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert "@import url(" not in text and "fonts.googleapis" not in text, name
    css = (STATIC / "app.css").read_text(encoding="utf-8")
    assert not re.search(r"url\(\s*['\"]?https?:", css), "app.css loads something from the internet"
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']https?:""", html), "index.html loads something from the internet"


def test_bundle_is_small() -> None:
    sizes = {name: (STATIC / name).stat().st_size for name in ("index.html", "app.js", "app.css")}
    assert sizes["app.js"] < 600_000, sizes
    assert sizes["app.css"] < 60_000, sizes
