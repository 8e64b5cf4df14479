"""changescope.heap.release gives the allocator's free pages back to the system."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHILD = r"""
import numpy as np
from changescope.heap import release

def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

big = np.ones(30 * 2**20 // 8); del big  # glibc raises its mmap threshold: 1 MiB arrays now come from the heap
arrays = [np.ones(2**20 // 8) for _ in range(300)]
keep = arrays[-1]  # the top of the heap stays in use, so free() alone cannot shrink it
del arrays
before = rss()
done = release()
print(done, before, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_returns_freed_heap_memory() -> None:
    # glibc's tuning variables (CI's test process had MALLOC_TRIM_THRESHOLD_ set, which dask sets for its workers)
    # fix its thresholds and keep the arrays out of the heap: the child runs with the allocator's defaults
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=120, env=env
    )
    done, before, after = out.stdout.split()
    assert done == "True"
    assert int(before) - int(after) > 200  # of the ~300 MiB freed
