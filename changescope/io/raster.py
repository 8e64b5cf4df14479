"""Thin, error-translating helpers around rasterio and rioxarray shared by the readers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rioxarray
import xarray as xr
from affine import Affine
from rasterio.errors import RasterioError

from changescope.errors import CorruptFileError, NoImagesFoundError

__all__ = ["RASTER_SUFFIXES", "RasterMeta", "is_raster", "open_raster", "raster_meta", "read_lazy"]

RASTER_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")

DEFAULT_CHUNK = 1024
"""Spatial chunk side (pixels) of lazily read rasters."""


@dataclass(frozen=True)
class RasterMeta:
    """What a reader needs to know about a raster file without reading its pixels."""

    path: Path
    crs: Any
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()


def is_raster(path: Path) -> bool:
    """Whether a path names a GeoTIFF by its suffix."""
    return path.is_file() and path.suffix in RASTER_SUFFIXES


@contextmanager
def open_raster(path: Path | str) -> Iterator[rasterio.DatasetReader]:
    """Open a raster, turning rasterio's errors into changescope errors that name the file.

    Raises:
        NoImagesFoundError: The file does not exist.
        CorruptFileError: The file exists but is not a readable raster.
    """
    p = Path(path)
    if not p.exists():
        raise NoImagesFoundError(f"{str(p)!r} does not exist; check the path")
    try:
        src = rasterio.open(p)
    except RasterioError as err:
        raise CorruptFileError(f"{str(p)!r} is not a readable raster ({err}); re-download or remove it") from err
    try:
        yield src
    finally:
        src.close()


def raster_meta(path: Path | str) -> RasterMeta:
    """Read the metadata of a raster (no pixels)."""
    with open_raster(path) as src:
        return RasterMeta(
            path=Path(path),
            crs=src.crs,
            transform=src.transform,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=str(src.dtypes[0]),
            nodata=src.nodata,
            descriptions=tuple(src.descriptions),
            scales=tuple(float(v) for v in src.scales),
            offsets=tuple(float(v) for v in src.offsets),
        )


def read_lazy(path: Path | str, chunk: int = DEFAULT_CHUNK) -> xr.DataArray:
    """Open a raster lazily as a dask-backed ``(band, y, x)`` array of its stored values.

    Raises:
        CorruptFileError: The file cannot be opened.
    """
    try:
        arr = rioxarray.open_rasterio(
            Path(path), chunks={"band": -1, "y": chunk, "x": chunk}, masked=False, lock=False, cache=False
        )
    except (RasterioError, OSError) as err:
        raise CorruptFileError(f"{str(path)!r} is not a readable raster ({err}); re-download or remove it") from err
    if not isinstance(arr, xr.DataArray):
        raise CorruptFileError(f"{str(path)!r} holds subdatasets, not one raster; point at a single GeoTIFF")
    return arr


def read_array(path: Path | str, band: int | None = None) -> np.ndarray:
    """Read a raster eagerly: ``(bands, h, w)``, or ``(h, w)`` for one ``band`` (1-based)."""
    with open_raster(path) as src:
        try:
            out: np.ndarray = src.read(band) if band is not None else src.read()
            return out
        except RasterioError as err:
            raise CorruptFileError(f"{str(path)!r} could not be read ({err}); the file is damaged") from err
