"""Give freed memory back to the operating system between the large steps of a run (glibc only).

A whole-tile run allocates and frees arrays of every size, block after block and date after date: blocks of pixels
in the reader thread, feature maps and chunks in the writer thread, a date's embeddings and changes, chunks of
neighbour lists, the inverted lists of a faiss index built for a cloudy date. glibc's allocator keeps what is freed
for reuse, in one arena per thread, and raises its ``mmap`` threshold each time a large block is freed (up to
32 MiB), so more and more mid-sized arrays land in those arenas; fragmented, they are not given back. Measured on the
24-date whole tile: the score stage's main heap held 750 MiB; during the embedding the RSS grew by ~35 MiB a minute,
981 MiB of it in thread arenas. dask's ``distributed`` trims its workers for the same reason
(``MALLOC_TRIM_THRESHOLD_``).

:func:`release` calls ``malloc_trim(0)``, which returns the free pages of every arena to the system; the embedding
calls it after each task, the score stage after each date, table and store. Elsewhere (macOS, musl, Windows) it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["release"]


@functools.cache
def _libc() -> Any:
    """glibc, or ``None`` where it is not the C library (or has no ``malloc_trim``)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release() -> bool:
    """Return the allocator's free memory to the operating system; whether anything could be returned."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
