"""The CPU cores this process may use, for the stages that split their work among threads."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """CPU cores this process may run on, at least 1.

    The affinity mask where the OS has one (containers, ``taskset``), else every core of the machine.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)
