"""Fingerprints of inputs and parameters: what a run's results were computed from.

:func:`input_fingerprint` describes an input path by its files: their relative paths, sizes, modification times and
a hash of their first :data:`HEADER_BYTES` (the header of a GeoTIFF, where size, tiling, CRS and tags live). A file
replaced by another of the same name changes its size, its time or its header, and so the fingerprint. Metadata
files of stores (Zarr ``.zattrs``/``.zarray``/``zarr.json``, STAC JSON) are hashed whole. An in-memory series is
fingerprinted by its content (dask's deterministic tokenisation). An object-store input (``s3://...``) is described
by its objects' relative keys, sizes and ETags (a content hash for S3), listed in one request per prefix, so a
replaced object changes the fingerprint without reading it.

:func:`digest` is the stable hash of any JSON-serialisable value (the configurations of the stages).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from changescope.errors import ParameterError
from changescope.storepath import StorePath, as_path, store_errors
from changescope.types import PathLike

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["HEADER_BYTES", "dataset_fingerprint", "digest", "input_fingerprint"]

HEADER_BYTES = 65536
"""Bytes hashed at the start of each input file."""
MAX_FILES = 200_000
"""Files listed at most (a bigger input is fingerprinted by its first files in order, and the count)."""
_WHOLE = {".zattrs", ".zarray", ".zgroup", ".zmetadata", "zarr.json", ".json", ".geojson", ".txt", ".csv"}


def digest(value: Any) -> str:
    """A stable SHA-256 of a JSON-serialisable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _file_entry(path: Path, rel: str) -> list[Any]:
    st = path.stat()
    h = hashlib.sha256()
    whole = path.name in _WHOLE or path.suffix.lower() in _WHOLE
    with open(path, "rb") as fh:
        h.update(fh.read() if whole else fh.read(HEADER_BYTES))
    return [rel, st.st_size, st.st_mtime_ns, h.hexdigest()[:16]]


def _store_fingerprint(p: StorePath) -> str:
    """The fingerprint of an object or a prefix: relative keys, sizes and ETags (else modification times)."""
    with store_errors(p):
        if not p.exists():
            raise ParameterError(f"input {p.url!r} does not exist; check the bucket and the prefix")
        found = p.fs.find(p.path, detail=True) if p.is_dir() else {p.path: p.fs.info(p.path)}
    entries: list[Any] = []
    for key in sorted(found):
        rel = str(key)[len(p.path) :].strip("/") or p.name
        if any(part.startswith(".") and part not in _WHOLE for part in rel.split("/")):
            continue
        info = found[key]
        tag = str(info.get("ETag") or info.get("etag") or info.get("md5") or "").strip('"')
        entries.append([rel, int(info.get("size") or 0), tag or str(info.get("LastModified") or info.get("mtime"))])
        if len(entries) >= MAX_FILES:
            return digest({"objects": entries, "truncated": True})
    return digest({"objects": entries})


def input_fingerprint(path: PathLike | StorePath) -> str:
    """The fingerprint of an input file or folder, or of an object-store object or prefix (module docstring).

    Other URLs (``http://``) are fingerprinted by their text.

    Raises:
        ParameterError: ``path`` does not exist.
    """
    text = str(path)
    if text.startswith(("http://", "https://")):
        return digest({"url": text})
    where = as_path(path)
    if isinstance(where, StorePath):
        return _store_fingerprint(where)
    p = where
    if not p.exists():
        raise ParameterError(f"input {text!r} does not exist; check the path")
    if p.is_file():
        return digest([_file_entry(p, p.name)])
    entries: list[Any] = []
    for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") or d in (".zattrs",))
        for name in sorted(filenames):
            f = Path(dirpath) / name
            if name.startswith(".") and name not in _WHOLE:
                continue
            if not f.exists():  # dangling link: listed as such
                entries.append([str(f.relative_to(p)), None])
                continue
            entries.append(_file_entry(f, str(f.relative_to(p))))
            if len(entries) >= MAX_FILES:
                return digest({"files": entries, "truncated": True})
    return digest({"files": entries})


def dataset_fingerprint(ds: xr.Dataset) -> str:
    """The fingerprint of an in-memory series: its values, coordinates and attributes."""
    from dask.base import tokenize

    return digest({"dataset": tokenize(ds)})
