"""Give freed memory back to the operating system between the large steps of a run (glibc only).

The score stage of a whole tile allocates and frees arrays of every size date after date: a date's embeddings and
changes, chunks of neighbour lists, the inverted lists of a faiss index built for a cloudy date. glibc's allocator
keeps what is freed inside its heap for reuse, and raises its ``mmap`` threshold each time a large block is freed
(up to 32 MiB), so more and more mid-sized arrays land in that heap; fragmented, it is not given back. On the
24-date whole tile the process' heap held 750 MiB while its live arrays needed far less, and the stage's RSS grew
past its bound. dask's ``distributed`` does the same for its workers (``MALLOC_TRIM_THRESHOLD_``).

:func:`release` calls ``malloc_trim(0)``, which returns the free pages of every arena to the system; the stages call
it after each date and each store. Elsewhere (macOS, musl, Windows) it does nothing.
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
