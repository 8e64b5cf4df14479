"""changescope: find the changes that matter in satellite image time series.

Importing the package is cheap: it imports neither torch nor dask nor xarray. ``changescope.open``,
``make_series``, ``BandInfo`` and ``PatchGrid`` are loaded on first use, and the heavy parts (encoders, dask
clusters, training) are imported where they are used (``benchmarks/import_cost.py`` measures it).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from changescope.errors import ChangescopeError

if TYPE_CHECKING:
    from changescope.grid import PatchGrid
    from changescope.io.registry import open_series as open
    from changescope.series import BandInfo, make_series

try:
    __version__ = version("changescope")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["BandInfo", "ChangescopeError", "PatchGrid", "__version__", "make_series", "open"]

_LAZY = {
    "open": ("changescope.io.registry", "open_series"),
    "make_series": ("changescope.series", "make_series"),
    "BandInfo": ("changescope.series", "BandInfo"),
    "PatchGrid": ("changescope.grid", "PatchGrid"),
}


def __getattr__(name: str) -> Any:
    """Load the public names on first use (module docstring)."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'changescope' has no attribute {name!r}")
