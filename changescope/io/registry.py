"""The reader registry and :func:`open_series` (exported as ``changescope.open``)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import xarray as xr

from changescope.errors import NoImagesFoundError, ParameterError, UnknownFormatError
from changescope.series import validate_series
from changescope.types import PathLike

__all__ = [
    "CLI_FLAGS",
    "Reader",
    "detect_format",
    "get_reader",
    "list_readers",
    "open_series",
    "reader_options",
    "register_reader",
]

CLI_FLAGS: dict[str, str] = {
    "aoi": "--aoi",
    "align": "--align",
    "city": "--city",
    "date": "--date",
    "drop_incomplete": "--drop-incomplete",
    "reproject": "--reproject",
}
"""Reader options that the commands expose, and their flags (named in errors)."""

_TITLES = {
    "dynamicearthnet": "DynamicEarthNet",
    "geotiff_folder": "GeoTIFF-folder",
    "netcdf": "NetCDF",
    "oscd": "OSCD",
    "perband": "per-band",
    "stac": "STAC",
    "zarr": "Zarr",
}

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

    The options a reader accepts are the named keyword parameters of its ``open`` (plus the names in an optional
    ``extra_options`` class attribute, for options it forwards through ``**kwargs``); :func:`open_series` passes it
    only those and refuses the others.

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


def reader_options(name: str) -> frozenset[str]:
    """The keyword options the reader ``name`` accepts (named parameters of its ``open`` and ``extra_options``).

    Raises:
        UnknownFormatError: No reader has that name.
    """
    reader = get_reader(name)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {n for n, p in inspect.signature(reader.open).parameters.items() if p.kind in kinds and n != "path"}
    return frozenset(named | set(getattr(reader, "extra_options", ())))


def _option_name(key: str) -> str:
    return f"{CLI_FLAGS[key]} ({key}= in Python)" if key in CLI_FLAGS else f"{key}="


def _route(name: str, path: Path, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options of ``kwargs`` that reader ``name`` accepts; unset ones (``None``, ``False``) of others dropped.

    Raises:
        ParameterError: An option that the reader does not accept is set.
    """
    accepted = reader_options(name)
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in accepted:
            out[key] = value
        elif value is not None and value is not False:
            takers = [_TITLES.get(r, r) for r in list_readers() if key in reader_options(r)]
            applies = f"applies to {' and '.join(takers)} inputs only" if takers else "is not an option of any reader"
            raise ParameterError(
                f"{_option_name(key)} {applies}, but {str(path)!r} is read as {_TITLES.get(name, name)} "
                f"(format {name!r}); drop it, or pass --format for another reader"
            )
    return out


def open_series(path: PathLike, format: str | None = None, **kwargs: Any) -> xr.Dataset:
    """Open a satellite image time series.

    Args:
        path: A folder, file or store.
        format: A reader name (see :func:`list_readers`); auto-detected when omitted.
        **kwargs: Reader options (e.g. ``aoi=`` for DynamicEarthNet roots, ``reproject=True``). Each goes only to
            a reader that accepts it; an option that the chosen reader does not accept is refused, unless it is
            unset (``None`` or ``False``).

    Returns:
        The series (lazy where the format allows).

    Raises:
        NoImagesFoundError: The path does not exist.
        UnknownFormatError: No reader recognises it, or ``format`` is unknown.
        ParameterError: An option does not apply to the reader (``--city`` on a GeoTIFF folder).
    """
    p = Path(path)
    name = format or detect_format(p)
    reader = get_reader(name)
    if not p.exists():
        raise NoImagesFoundError(f"{str(p)!r} does not exist; check the path")
    ds = reader.open(p, **_route(name, p, kwargs))
    ds.attrs.setdefault("source", str(p))
    ds.attrs.setdefault("format", name)
    return validate_series(ds)
