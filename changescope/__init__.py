"""changescope: find the changes that matter in satellite image time series.

Importing the package is cheap: heavy parts (torch, dask.distributed, training) are imported where used.
"""

from importlib.metadata import PackageNotFoundError, version

from changescope.errors import ChangescopeError
from changescope.grid import PatchGrid
from changescope.io.registry import open_series as open
from changescope.series import BandInfo, make_series

try:
    __version__ = version("changescope")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["BandInfo", "ChangescopeError", "PatchGrid", "__version__", "make_series", "open"]
