"""Rasters kept open between the lazy chunk reads of a process, so that GDAL's block cache serves them again.

A lazily read series (:func:`changescope.io.raster.lazy_blocks`) reads one window of a file per chunk, and used to
open and close the file around each window. Closing a dataset drops its decoded blocks from GDAL's block cache, so a
window that reaches one pixel into the next internal tile decodes that whole tile again when the next window is
read. Resampled bands do exactly that: bilinear resampling of a 20 m Sentinel-2 band onto a 1024 px block of the 10 m
grid needs a one-pixel ring around its 512 px window, which lies in the eight neighbouring 512 px tiles; read
block by block, every tile was decoded up to nine times (on a whole synthetic tile, the six 20 m bands of a block:
0.18 s of decoding for 0.6 Mpx of pixels, against 0.07 s for the four 10 m bands' 4 Mpx).

:func:`cached_raster` keeps up to :data:`MAX_OPEN` local files open (least recently used closed first), each with a
lock: one thread reads a dataset at a time, as GDAL requires. A file is identified by its path, size and modification
time, so a file replaced or cut short since is opened again (and its damage reported). Object-store files are
opened per read (:func:`changescope.io.raster.open_raster`). Memory: the decoded blocks are GDAL's block cache,
bounded by ``GDAL_CACHEMAX``: the embedding, the report and the workbench read under :func:`bounded_block_cache`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import rasterio

from changescope.io.raster import open_raster
from changescope.storepath import AnyPath, StorePath, as_path

__all__ = ["GDAL_CACHE_BYTES", "MAX_OPEN", "bounded_block_cache", "cached_raster", "close_cached"]

GDAL_CACHE_BYTES = 48 * 2**20
"""GDAL block cache while changescope reads pixels. GDAL's default (5 % of the machine's RAM) grows every process by
gigabytes on large stacks, while each read needs its pixels once but for the ring around a window, which lies in
the neighbouring internal tiles. On a whole tile, 48 MiB read 66 blocks of 1024 px in the time 128 MiB did (34.1 s
against 33.5-35.9 s) and kept 0.08 GiB less resident; the report of a 3072 px x 12-date tile peaked at 0.63 GiB
RSS with it and 0.95 GiB without (a whole tile's passed 2 GiB)."""

MAX_OPEN = 32
"""Most files kept open per process: two dates of a Sentinel-2 L2A series (13 files each), the date being embedded
and the next, which the reader thread starts early (tasks run date by date). Each open file holds its share of GDAL's
block cache and its own state: on a whole tile, 64 open files kept 0.09 GiB more than 16 after 6 dates."""

_Key = tuple[str, int, int]


@contextmanager
def bounded_block_cache() -> Iterator[None]:
    """Read inside this context with GDAL's block cache held to :data:`GDAL_CACHE_BYTES`."""
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        yield


class _Entry:
    """An open dataset, the lock its readers take, and how many threads hold or wait for it."""

    def __init__(self, path: AnyPath) -> None:
        self.manager = open_raster(path)  # its checks and one-line errors
        self.src = self.manager.__enter__()
        self.lock = threading.Lock()
        self.users = 0

    def close(self) -> None:
        """Close the dataset."""
        self.manager.__exit__(None, None, None)


_OPEN: OrderedDict[_Key, _Entry] = OrderedDict()
_LOCK = threading.Lock()


def _drop(keep: int, path: str | None = None) -> None:
    """Close unused datasets, least recently used first, until ``keep`` remain (call under ``_LOCK``).

    With ``path``, only that file's (stale versions of a file replaced since).
    """
    for key in list(_OPEN):
        if len(_OPEN) <= keep:
            return
        entry = _OPEN[key]
        if entry.users == 0 and (path is None or key[0] == path):
            del _OPEN[key]
            entry.close()


@contextmanager
def cached_raster(path: AnyPath | str) -> Iterator[rasterio.DatasetReader]:
    """An open dataset of ``path``, kept open for later reads of this process (module docstring).

    The caller holds the dataset's lock while inside the block: read, do not keep it.

    Raises:
        NoImagesFoundError: The file does not exist.
        CorruptFileError: It is not a readable raster.
    """
    p = as_path(path)
    st = None
    if not isinstance(p, StorePath):
        try:
            st = os.stat(p)
        except OSError:
            st = None
    if st is None:  # an object store, or a missing file (whose error open_raster raises)
        with open_raster(p) as src:
            yield src
        return
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _LOCK:
        entry = _OPEN.get(key)
        if entry is None:
            _drop(0, str(p))  # the file changed since it was opened
            entry = _OPEN[key] = _Entry(p)
        _OPEN.move_to_end(key)
        entry.users += 1
        _drop(MAX_OPEN)
    try:
        with entry.lock:
            yield entry.src
    finally:
        with _LOCK:
            entry.users -= 1


def close_cached() -> None:
    """Close every dataset no thread is reading (tests; a long-lived process that is done reading)."""
    with _LOCK:
        _drop(0)
