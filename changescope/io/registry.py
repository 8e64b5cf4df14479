"""The reader registry and :func:`open_series` (exported as ``changescope.open``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import xarray as xr

from changescope.errors import NoImagesFoundError, UnknownFormatError
from changescope.series import validate_series
from changescope.types import PathLike

__all__ = ["Reader", "detect_format", "get_reader", "list_readers", "open_series", "register_reader"]

_BUILTIN_MODULES = (
    "changescope.io.zarr_netcdf",
    "changescope.io.stac",
    "changescope.io.dynamicearthnet",
    "changescope.io.oscd",
    "changescope.io.perband",
    "changescope.io.geotiff_folder",
)


class Reader(Protocol):
    """What a series reader provides.

    Attributes:
        name: Format name used with ``format=``.
        priority: Auto-detection order; lower is tried first (specific layouts before generic ones).
    """

    name: ClassVar[str]
    priority: ClassVar[int]

    def can_open(self, path: Path) -> bool:
        """Cheaply tell whether ``path`` looks like this layout (no pixel reads)."""
        ...

    def open(self, path: Path, **kwargs: Any) -> xr.Dataset:
        """Open ``path`` as a series."""
        ...


_REGISTRY: dict[str, Reader] = {}
_loaded = False
R = TypeVar("R")


def register_reader(cls: Callable[[], R]) -> Callable[[], R]:
    """Class decorator: instantiate a reader class and register it under its ``name``."""
    inst: Any = cls()
    _REGISTRY[inst.name] = inst
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)
        _loaded = True


def list_readers() -> list[str]:
    """Names of the registered readers, in detection order."""
    _load_builtins()
    return [r.name for r in sorted(_REGISTRY.values(), key=lambda r: r.priority)]


def get_reader(name: str) -> Reader:
    """Return the reader registered under ``name``.

    Raises:
        UnknownFormatError: No reader has that name.
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise UnknownFormatError(f"format={name!r} is unknown; choose one of {list_readers()!r}")
    return _REGISTRY[name]


def detect_format(path: PathLike) -> str:
    """Return the name of the first reader (by priority) that recognises ``path``.

    Raises:
        NoImagesFoundError: The path does not exist.
        UnknownFormatError: No reader recognises it.
    """
    p = Path(path)
    if not p.exists():
        raise NoImagesFoundError(f"{str(p)!r} does not exist; check the path")
    for name in list_readers():
        if _REGISTRY[name].can_open(p):
            return name
    raise UnknownFormatError(
        f"no reader recognises {str(p)!r}; expected a folder of dated GeoTIFFs, per-band files, an OSCD city, "
        f"a DynamicEarthNet root or AOI, a STAC item collection, or a Zarr/NetCDF series. "
        f"Pass format= one of {list_readers()!r} to force one"
    )


def open_series(path: PathLike, format: str | None = None, **kwargs: Any) -> xr.Dataset:
    """Open a satellite image time series.

    Args:
        path: A folder, file or store.
        format: A reader name (see :func:`list_readers`); auto-detected when omitted.
        **kwargs: Reader options (e.g. ``aoi=`` for DynamicEarthNet roots, ``reproject=True``).

    Returns:
        The series (lazy where the format allows).
    """
    p = Path(path)
    name = format or detect_format(p)
    reader = get_reader(name)
    if not p.exists():
        raise NoImagesFoundError(f"{str(p)!r} does not exist; check the path")
    ds = reader.open(p, **kwargs)
    ds.attrs.setdefault("source", str(p))
    ds.attrs.setdefault("format", name)
    return validate_series(ds)
