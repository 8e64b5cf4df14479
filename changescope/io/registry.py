"""The reader registry and :func:`open_series` (exported as ``changescope.open``).

An input may be an object-store URL (``s3://bucket/prefix/``, see :mod:`changescope.storepath`): the readers
whose class sets ``remote = True`` (the GeoTIFF/COG folder and Zarr) read it through fsspec; the others read local
files only and are neither detected nor accepted for a URL.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import xarray as xr

from changescope.errors import NoImagesFoundError, ParameterError, UnknownFormatError
from changescope.series import validate_series
from changescope.storepath import AnyPath, StorePath, as_path, store_errors
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

    A reader that also reads object stores sets the class attribute ``remote = True``; only such readers are
    handed a :class:`~changescope.storepath.StorePath` (the others get a :class:`~pathlib.Path`).

    Attributes:
        name: Format name used with ``format=``.
        priority: Auto-detection order; lower is tried first (specific layouts before generic ones).
    """

    name: ClassVar[str]
    priority: ClassVar[int]

    def can_open(self, path: AnyPath) -> bool:
        """Cheaply tell whether ``path`` looks like this layout (no pixel reads)."""
        ...

    def open(self, path: AnyPath, **kwargs: Any) -> xr.Dataset:
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


def _remote(name: str) -> bool:
    return bool(getattr(_REGISTRY[name], "remote", False))


def detect_format(path: PathLike | StorePath) -> str:
    """Return the name of the first reader (by priority) that recognises ``path`` (a path or an object-store URL).

    Raises:
        NoImagesFoundError: The path does not exist.
        UnknownFormatError: No reader recognises it.
    """
    p = as_path(path)
    with store_errors(p):
        if not p.exists():
            raise NoImagesFoundError(f"{str(p)!r} does not exist; check the path")
        names = [n for n in list_readers() if _remote(n) or not isinstance(p, StorePath)]
        for name in names:
            if _REGISTRY[name].can_open(p):
                return name
    if isinstance(p, StorePath):
        raise UnknownFormatError(
            f"no reader recognises {str(p)!r}; from an object store changescope reads a prefix of dated GeoTIFFs/COGs "
            f"or a Zarr series (formats {names!r}); copy other layouts to a local folder"
        )
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


def _route(name: str, path: AnyPath, kwargs: dict[str, Any]) -> dict[str, Any]:
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


def open_series(path: PathLike | StorePath, format: str | None = None, **kwargs: Any) -> xr.Dataset:
    """Open a satellite image time series.

    Args:
        path: A folder, file or store; or an object-store URL (``s3://bucket/prefix/``) of a GeoTIFF/COG folder or
            a Zarr series. Its endpoint and credentials come from the ``AWS_*`` variables and ``~/.aws``
            (:mod:`changescope.storepath`).
        format: A reader name (see :func:`list_readers`); auto-detected when omitted.
        **kwargs: Reader options (e.g. ``aoi=`` for DynamicEarthNet roots, ``reproject=True``). Each goes only to
            a reader that accepts it; an option that the chosen reader does not accept is refused, unless it is
            unset (``None`` or ``False``). ``storage_options=`` (a mapping) goes to the fsspec filesystem of an
            object-store URL (``{"endpoint_url": ..., "anon": True}``).

    Returns:
        The series (lazy where the format allows).

    Raises:
        NoImagesFoundError: The path does not exist.
        UnknownFormatError: No reader recognises it, or ``format`` is unknown.
        ParameterError: An option does not apply to the reader (``--city`` on a GeoTIFF folder), the reader
            reads local files only but ``path`` is a URL, or the object store refuses access or is unreachable.
    """
    storage_options: Mapping[str, Any] | None = kwargs.pop("storage_options", None)
    p = as_path(path, storage_options)
    name = format or detect_format(p)
    reader = get_reader(name)
    if isinstance(p, StorePath) and not _remote(name):
        remote = [n for n in list_readers() if _remote(n)]
        raise ParameterError(
            f"format {name!r} reads local files only, but {str(p)!r} is an object-store URL; object stores are read "
            f"as {remote!r}: copy the input to a local folder"
        )
    with store_errors(p):
        if not p.exists():
            raise NoImagesFoundError(f"{str(p)!r} does not exist; check the path")
        ds = reader.open(p, **_route(name, p, kwargs))
    ds.attrs.setdefault("source", str(p))
    ds.attrs.setdefault("format", name)
    return validate_series(ds)
