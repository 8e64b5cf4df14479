"""STAC items from files: finding ItemCollection JSON files, reading them, and turning dicts into items.

Split from :mod:`changescope.io.stac` (the reader); needs the optional extra ``stac`` (pystac).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from changescope.errors import CorruptFileError, EmptySeriesError, MissingDependencyError, ParameterError

__all__ = [
    "absolute_href",
    "as_items",
    "item_errors",
    "looks_like_stac",
    "read_item_collection",
    "require",
    "stac_files",
]

_SNIFF_BYTES = 1 << 16
_MAX_JSON_IN_FOLDER = 16
_FEATURE_COLLECTION = re.compile(rb'"type"\s*:\s*"FeatureCollection"')
_INSTALL_HINT = "pip install changescope[stac]"


def require(module: str) -> ModuleType:
    """Import an optional module, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"reading STAC needs the optional package {module.split('.')[0]!r}; install it with `{_INSTALL_HINT}`"
        ) from err


def looks_like_stac(file: Path) -> bool:
    """Sniff the head and tail of a JSON file for a STAC FeatureCollection (no full parse)."""
    if not (file.is_file() and file.suffix.lower() == ".json"):
        return False
    try:
        with file.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
            size = fh.seek(0, 2)
            fh.seek(max(size - _SNIFF_BYTES, len(head)))
            tail = fh.read()
    except OSError:
        return False
    text = head + tail
    return bool(_FEATURE_COLLECTION.search(text)) and b'"stac_version"' in text


def stac_files(folder: Path) -> list[Path]:
    """The STAC JSON files of a folder (a few at most)."""
    candidates = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    if len(candidates) > _MAX_JSON_IN_FOLDER:
        return []
    return [p for p in candidates if looks_like_stac(p)]


def item_errors(pystac: ModuleType) -> tuple[type[Exception], ...]:
    """Exceptions pystac raises for a malformed item dict."""
    errors = pystac.errors
    return (
        errors.STACError,
        errors.STACTypeError,
        errors.RequiredPropertyMissing,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    )


def absolute_href(href: str, folder: Path) -> str:
    """An asset href made absolute against the folder of its JSON file (URLs stay as they are)."""
    if "://" in href or Path(href).is_absolute():
        return href
    return str((folder / href).resolve())


def read_item_collection(path: Path | str) -> list[Any]:
    """Read a local ItemCollection / FeatureCollection JSON (or a single Item) as :class:`pystac.Item` objects.

    Relative asset hrefs are made absolute against the file's folder.

    Raises:
        MissingDependencyError: pystac is not installed.
        CorruptFileError: The file is not valid JSON or not STAC items.
        EmptySeriesError: The collection holds no item.
    """
    pystac = require("pystac")
    file = Path(path)
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptFileError(f"{str(file)!r} is not readable JSON ({err}); re-export the item collection") from err
    if not isinstance(raw, dict) or raw.get("type") not in ("FeatureCollection", "Feature"):
        raise CorruptFileError(
            f"{str(file)!r} is not a STAC ItemCollection (top-level 'type' is "
            f"{raw.get('type') if isinstance(raw, dict) else type(raw).__name__!r}, expected 'FeatureCollection')"
        )
    features = raw.get("features", []) if raw["type"] == "FeatureCollection" else [raw]
    if not isinstance(features, list):
        raise CorruptFileError(f"{str(file)!r} has a 'features' member that is not a list")
    if not features:
        raise EmptySeriesError(f"{str(file)!r} holds no STAC item; search again with a wider bbox or date range")
    items = []
    for i, feature in enumerate(features):
        try:
            item = pystac.Item.from_dict(feature, preserve_dict=False)
        except item_errors(pystac) as err:
            raise CorruptFileError(f"feature {i} of {str(file)!r} is not a valid STAC item: {err!r}") from err
        for asset in item.assets.values():
            asset.href = absolute_href(asset.href, file.parent)
        items.append(item)
    return items


def as_items(items: Iterable[Any]) -> list[Any]:
    """STAC items from items or their dicts.

    Raises:
        ParameterError: A dict is not a valid STAC item.
    """
    pystac = require("pystac")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            try:
                item = pystac.Item.from_dict(dict(item))
            except item_errors(pystac) as err:
                raise ParameterError(f"items[{i}] is not a valid STAC item: {err!r}") from err
        out.append(item)
    return out
