"""Thin, error-translating helpers around rasterio and rioxarray shared by the readers."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, overload

import dask.array as da
import numpy as np
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from changescope.errors import CorruptFileError, NoImagesFoundError
from changescope.storepath import AnyPath, StorePath, as_path

__all__ = [
    "RASTER_SUFFIXES",
    "RasterMeta",
    "damaged",
    "grid_bounds",
    "is_raster",
    "lazy_blocks",
    "list_rasters",
    "open_raster",
    "raster_meta",
    "read_array",
    "read_lazy",
]

RASTER_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")

DEFAULT_CHUNK = 1024
"""Spatial chunk side (pixels) of lazily read rasters."""


@dataclass(frozen=True)
class RasterMeta:
    """What a reader needs to know about a raster file without reading its pixels."""

    path: AnyPath
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


def grid_bounds(transform: Affine, height: int, width: int) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of a north-up grid of ``height x width`` pixels."""
    xs = (transform.c, transform.c + width * transform.a)
    ys = (transform.f, transform.f + height * transform.e)
    return min(xs), min(ys), max(xs), max(ys)


def is_raster(path: AnyPath) -> bool:
    """Whether a path names a GeoTIFF by its suffix."""
    return path.is_file() and path.suffix in RASTER_SUFFIXES


def _dangling(path: AnyPath) -> bool:
    return path.is_symlink() and not path.exists()


@overload
def list_rasters(folder: Path, *, check_links: bool = True) -> list[Path]: ...
@overload
def list_rasters(folder: StorePath, *, check_links: bool = True) -> list[StorePath]: ...
def list_rasters(folder: AnyPath, *, check_links: bool = True) -> list[Path] | list[StorePath]:
    """The GeoTIFFs directly in ``folder`` (hidden files skipped), sorted by name.

    An object-store prefix is listed in one request (object stores have no links).

    Args:
        folder: The folder.
        check_links: Refuse a ``.tif`` symlink whose target is missing; with ``False`` such links are listed like
            files (cheap layout detection lists them, the open that follows refuses them).

    Raises:
        NoImagesFoundError: A ``.tif`` in ``folder`` is a symlink to a file that does not exist.
    """
    if isinstance(folder, StorePath):
        listed = folder.listing()
        return [p for p, is_file in listed if is_file and not p.name.startswith(".") and p.suffix in RASTER_SUFFIXES]
    out: list[Path] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix not in RASTER_SUFFIXES:
            continue
        if _dangling(p):
            if check_links:
                raise NoImagesFoundError(
                    f"{str(p)!r} is a symbolic link to {os.readlink(p)!r}, which does not exist; "
                    "restore the target or remove the link"
                )
            out.append(p)
        elif p.is_file():
            out.append(p)
    return out


def _detail(err: BaseException) -> str:
    """GDAL's own reason for a rasterio error (rasterio's message often only says "see previous exception")."""
    cause = err.__cause__ or err.__context__
    text = str(cause) if cause is not None and "previous exception" in str(err) else str(err)
    return " ".join(text.split()) or type(err).__name__


def damaged(path: AnyPath | str, err: BaseException) -> CorruptFileError:
    """The one-line :class:`CorruptFileError` for a raster whose pixels could not be read."""
    return CorruptFileError(
        f"{str(path)!r} could not be read ({_detail(err)}); the file is truncated or damaged, re-download or "
        "re-export it (or move it out of the input)"
    )


def _check_complete(src: Any, path: AnyPath) -> None:
    """Refuse a GeoTIFF whose last pixel block lies past the end of the file (a truncated copy or download)."""
    if src.driver != "GTiff" or not src.block_shapes:
        return
    rows, cols = src.block_shapes[0]
    last = f"{math.ceil(src.width / cols) - 1}_{math.ceil(src.height / rows) - 1}"
    end = 0
    for bidx in sorted({1, src.count}):
        offset = src.get_tag_item(f"BLOCK_OFFSET_{last}", "TIFF", bidx=bidx)
        size = src.get_tag_item(f"BLOCK_SIZE_{last}", "TIFF", bidx=bidx)
        if offset and size and int(offset) > 0:
            end = max(end, int(offset) + int(size))
    have = path.stat().st_size
    if end > have:
        raise CorruptFileError(
            f"{str(path)!r} is truncated: its pixel data runs to byte {end} but the file holds {have} bytes; "
            "re-download or re-export it (or move it out of the input)"
        )


def _open(p: AnyPath) -> rasterio.DatasetReader:
    with warnings.catch_warnings():
        # a mask or label file without georeference is legal; the readers check its shape instead
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if isinstance(p, StorePath):
            # GDAL reads through the fsspec filesystem (byte ranges on demand); it need not list the folder
            with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
                return rasterio.open(p.url, opener=p.fs)
        return rasterio.open(p)


@contextmanager
def open_raster(path: AnyPath | str) -> Iterator[rasterio.DatasetReader]:
    """Open a raster (a local file or an object-store URL), turning rasterio's errors into changescope errors.

    Raises:
        NoImagesFoundError: The file does not exist.
        CorruptFileError: The file exists but is not a readable raster.
    """
    p = as_path(path)
    if not p.exists():
        raise NoImagesFoundError(f"{str(p)!r} does not exist; check the path")
    try:
        src = _open(p)
    except RasterioError as err:
        raise CorruptFileError(
            f"{str(p)!r} is not a readable raster ({_detail(err)}); re-download or remove it"
        ) from err
    try:
        yield src
    finally:
        src.close()


def raster_meta(path: AnyPath | str) -> RasterMeta:
    """Read the metadata of a raster (no pixels).

    Raises:
        NoImagesFoundError: The file does not exist.
        CorruptFileError: It is not a readable raster, or a GeoTIFF cut short.
    """
    p = as_path(path)
    with open_raster(p) as src:
        _check_complete(src, p)
        return RasterMeta(
            path=p,
            crs=src.crs,
            transform=src.transform,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=str(src.dtypes[0]) if src.count else "",
            nodata=src.nodata,
            descriptions=tuple(src.descriptions),
            scales=tuple(float(v) for v in src.scales),
            offsets=tuple(float(v) for v in src.offsets),
        )


def _located(block: Callable[[Window], np.ndarray], block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Read the chunk that dask's ``block_info`` locates (its last two axes) with ``block(window)``."""
    if block_info is None:  # dask always passes it to a function that names it
        raise CorruptFileError("a lazily read raster chunk was computed without its location; recompute it")
    (row0, row1), (col0, col1) = block_info[None]["array-location"][-2:]
    return block(Window(col0, row0, col1 - col0, row1 - row0))


def _splits(size: int, chunk: int) -> tuple[int, ...]:
    return tuple(min(chunk, size - start) for start in range(0, size, chunk))


def lazy_blocks(shape: tuple[int, ...], chunk: int, dtype: Any, block: Callable[[Window], np.ndarray]) -> Any:
    """A dask array of ``shape`` chunked along its last two axes, each ``chunk``-sided block one ``block(window)``.

    Leading axes (bands) are whole in every block. The array is one blockwise layer (``map_blocks`` without inputs),
    not a layer per chunk: a series of a whole Sentinel-2 tile has ~10 000 chunks per date, and culling a graph of
    one layer per chunk (to read one date, or one window) took seconds per date at 2 dates and grew with the
    square of the dates.
    """
    lead, (height_all, width_all) = tuple(shape[:-2]), shape[-2:]
    chunks = (*((n,) for n in lead), _splits(height_all, chunk), _splits(width_all, chunk))
    # the reader rides in a partial so that dask does not traverse (and rebuild) its arguments as collections
    return da.map_blocks(
        partial(_located, block), dtype=dtype, chunks=chunks, meta=np.empty((0,) * len(shape), dtype=dtype)
    )


def _read_window(window: Window, *, path: AnyPath) -> np.ndarray:
    with open_raster(path) as src:
        try:
            out: np.ndarray = src.read(window=window)
            return out
        except RasterioError as err:
            raise damaged(path, err) from err


def read_lazy(path: AnyPath | str, chunk: int = DEFAULT_CHUNK) -> xr.DataArray:
    """Open a raster lazily as a dask-backed ``(band, y, x)`` array of its stored values.

    The array carries the file's CRS, transform and nodata (rioxarray). Each chunk is one windowed read in its own
    dask task; a read that fails later (the file was cut short or replaced since) raises
    :class:`CorruptFileError` naming the file, not rasterio's error.

    Raises:
        NoImagesFoundError: The file does not exist.
        CorruptFileError: The file cannot be opened, is cut short, or holds no band (subdatasets).
    """
    p = as_path(path)
    meta = raster_meta(p)
    if meta.count == 0:
        raise CorruptFileError(f"{str(p)!r} holds subdatasets, not one raster; point at a single GeoTIFF")
    data = lazy_blocks((meta.count, meta.height, meta.width), chunk, meta.dtype, partial(_read_window, path=p))
    t = meta.transform
    coords = {
        "band": np.arange(1, meta.count + 1),
        "y": t.f + (np.arange(meta.height) + 0.5) * t.e,
        "x": t.c + (np.arange(meta.width) + 0.5) * t.a,
    }
    arr = xr.DataArray(data, dims=("band", "y", "x"), coords=coords)
    if meta.crs is not None:
        arr = arr.rio.write_crs(meta.crs)
    arr = arr.rio.write_transform(meta.transform)
    if meta.nodata is not None:
        arr = arr.rio.write_nodata(meta.nodata, encoded=False)
    out: xr.DataArray = arr
    return out


def read_array(path: AnyPath | str, band: int | None = None) -> np.ndarray:
    """Read a raster eagerly: ``(bands, h, w)``, or ``(h, w)`` for one ``band`` (1-based).

    Raises:
        NoImagesFoundError: The file does not exist.
        CorruptFileError: It is not a readable raster, or its pixels cannot be read.
    """
    with open_raster(path) as src:
        try:
            out: np.ndarray = src.read(band) if band is not None else src.read()
            return out
        except RasterioError as err:
            raise damaged(path, err) from err
