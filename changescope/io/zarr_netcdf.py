"""Readers for series stored by xarray as Zarr or NetCDF (see :mod:`changescope.io.writers`).

A Zarr store may lie in an object store (``s3://bucket/series.zarr``, :mod:`changescope.storepath`); it is then
read lazily through an fsspec mapper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import xarray as xr

from changescope.errors import CorruptFileError, ParameterError
from changescope.io.registry import register_reader
from changescope.storepath import AnyPath, StorePath

__all__ = ["NetCDFReader", "ZarrReader"]

_NC_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5")


def _finish(ds: xr.Dataset, path: AnyPath) -> xr.Dataset:
    missing = [v for v in ("image", "valid") if v not in ds]
    if missing:
        raise ParameterError(
            f"{str(path)!r} has no variable(s) {missing!r}; it is not a changescope series "
            "(write one with changescope.io.writers.write_series_zarr)"
        )
    ds["valid"] = ds["valid"].astype(bool)
    ds["valid"].attrs.pop("flag_meaning", None)
    if "spatial_ref" in ds.data_vars:
        ds = ds.set_coords("spatial_ref")
    if "spatial_ref" in ds.coords:
        ds = ds.rio.write_grid_mapping("spatial_ref")
    return ds


@register_reader
class ZarrReader:
    """A series written with ``write_series_zarr`` (or any Zarr with the same variables)."""

    name: ClassVar[str] = "zarr"
    priority: ClassVar[int] = 10
    remote: ClassVar[bool] = True

    def can_open(self, path: AnyPath) -> bool:
        """A ``.zarr`` folder or a folder with Zarr v2/v3 metadata."""
        return path.is_dir() and (
            path.suffix == ".zarr" or any((path / m).exists() for m in (".zgroup", ".zmetadata", "zarr.json"))
        )

    def open(self, path: AnyPath, **kwargs: Any) -> xr.Dataset:
        """Open lazily with dask (a local store, or one in an object store through an fsspec mapper)."""
        try:
            ds = xr.open_zarr(path.mapper() if isinstance(path, StorePath) else path, chunks={})
        except (OSError, ValueError, KeyError) as err:
            raise CorruptFileError(f"{str(path)!r} is not a readable Zarr store ({err})") from err
        return _finish(ds, path)


@register_reader
class NetCDFReader:
    """A series written with ``write_series_netcdf`` (NetCDF-4 / HDF5)."""

    name: ClassVar[str] = "netcdf"
    priority: ClassVar[int] = 11

    def can_open(self, path: Path) -> bool:
        """A file with a NetCDF suffix."""
        return path.is_file() and path.suffix.lower() in _NC_SUFFIXES

    def open(self, path: Path, **kwargs: Any) -> xr.Dataset:
        """Open lazily with dask."""
        try:
            ds = xr.open_dataset(path, engine="h5netcdf", chunks={})
        except (OSError, ValueError) as err:
            raise CorruptFileError(f"{str(path)!r} is not a readable NetCDF file ({err})") from err
        return _finish(ds, path)
