"""Atomic writers: GeoTIFF/COG, series as a folder of dated GeoTIFFs, Zarr and NetCDF.

Every writer writes to a temporary sibling and renames it into place, so a crash or a kill never leaves a file
that looks complete but is not. A target in an object store (a :class:`~changescope.storepath.StorePath`,
``s3://...``) is written into a local temporary folder and uploaded once finished: a file is one PUT (an object
appears whole or not at all), a folder (a Zarr store) is uploaded with its metadata last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from affine import Affine

from changescope.errors import ParameterError
from changescope.series import LABEL_NODATA, class_table, series_crs, series_transform, validate_series
from changescope.storepath import AnyPath, StorePath, as_path

__all__ = ["atomic_path", "write_geotiff", "write_series_folder", "write_series_netcdf", "write_series_zarr"]


@contextmanager
def atomic_path(path: AnyPath | str) -> Iterator[Path]:
    """Yield a temporary local path for ``path``; move (or upload) it onto ``path`` only if the block succeeds.

    Works for files and directories (an existing target directory is replaced). For an object-store ``path`` the
    temporary path lies in a fresh local temporary folder (removed afterwards) and is uploaded whole
    (:meth:`~changescope.storepath.StorePath.upload`).
    """
    target = as_path(path)
    if isinstance(target, StorePath):
        with tempfile.TemporaryDirectory(prefix="changescope-") as folder:
            tmp = Path(folder) / target.name
            yield tmp
            if tmp.exists():
                target.upload(tmp)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@overload
def write_geotiff(
    path: StorePath,
    array: np.ndarray,
    *,
    crs: Any,
    transform: Affine,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    cog: bool = False,
    tags: dict[str, str] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
) -> StorePath: ...
@overload
def write_geotiff(
    path: Path | str,
    array: np.ndarray,
    *,
    crs: Any,
    transform: Affine,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    cog: bool = False,
    tags: dict[str, str] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
) -> Path: ...
def write_geotiff(
    path: AnyPath | str,
    array: np.ndarray,
    *,
    crs: Any,
    transform: Affine,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    cog: bool = False,
    tags: dict[str, str] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
) -> AnyPath:
    """Write a ``(bands, h, w)`` or ``(h, w)`` array as a (Cloud-Optimised) GeoTIFF, atomically.

    Args:
        path: Output file (local, or an object-store URL: written locally, then uploaded).
        array: Pixel values.
        crs: Raster CRS.
        transform: Affine transform.
        nodata: Nodata value to record.
        descriptions: One description (band name) per band.
        cog: Write a Cloud-Optimised GeoTIFF (tiled, with overviews) with GDAL's COG driver.
        tags: Dataset-level metadata tags.
        scales: Per-band scale factors (GDAL band metadata: reflectance = value * scale + offset).
        offsets: Per-band offsets.

    Returns:
        The path written.
    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ParameterError(f"array must be (bands, h, w) or (h, w), got shape {arr.shape!r}")
    if descriptions is not None and len(descriptions) != arr.shape[0]:
        raise ParameterError(f"{len(descriptions)} descriptions for {arr.shape[0]} bands")
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name if arr.dtype != np.bool_ else "uint8",
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.shape[1] >= 256 and arr.shape[2] >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    out = path if isinstance(path, StorePath) else Path(path)
    with atomic_path(out) as tmp:
        if cog:
            mem_profile = {**profile, "driver": "GTiff"}
            with rasterio.MemoryFile() as mem:
                with mem.open(**mem_profile) as dst:
                    dst.write(arr)
                    _describe(dst, descriptions, tags, scales, offsets)
                with mem.open() as src:
                    cog_profile = {k: v for k, v in profile.items() if k not in ("tiled", "blockxsize", "blockysize")}
                    cog_profile.update(driver="COG", blocksize=256, overview_resampling="average")
                    with rasterio.open(tmp, "w", **cog_profile) as dst:
                        dst.write(src.read())
                        _describe(dst, descriptions, tags, scales, offsets)
        else:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(arr)
                _describe(dst, descriptions, tags, scales, offsets)
    return out


def _describe(
    dst: Any,
    descriptions: Sequence[str] | None,
    tags: dict[str, str] | None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
) -> None:
    if scales is not None:
        dst.scales = tuple(float(v) for v in scales)
    if offsets is not None:
        dst.offsets = tuple(float(v) for v in offsets)
    if descriptions is not None:
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    if tags:
        dst.update_tags(**tags)


def write_series_folder(ds: xr.Dataset, out_dir: Path | str, *, cog: bool = False) -> Path:
    """Write a series as a folder of dated GeoTIFFs readable by the ``geotiff_folder`` reader.

    One multi-band ``YYYY-MM-DD.tif`` per date (band descriptions = band names), a ``YYYY-MM-DD.mask.tif``
    sidecar (1 = invalid) and, when the series has labels, ``labels/YYYY-MM-DD.tif`` (and, when they have a class
    table, ``labels/classes.json``).
    """
    validate_series(ds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crs = series_crs(ds)
    transform = series_transform(ds)
    names = [str(b) for b in ds["band"].values]
    for i, t in enumerate(pd.DatetimeIndex(ds["time"].values)):
        stem = t.strftime("%Y-%m-%d")
        img = np.asarray(ds["image"].isel(time=i).values)
        write_geotiff(
            out / f"{stem}.tif",
            img,
            crs=crs,
            transform=transform,
            descriptions=names,
            cog=cog,
            scales=[float(v) for v in ds["scale"].values] if "scale" in ds.coords else None,
            offsets=[float(v) for v in ds["offset"].values] if "offset" in ds.coords else None,
        )
        invalid = ~np.asarray(ds["valid"].isel(time=i).values, dtype=bool)
        write_geotiff(out / f"{stem}.mask.tif", invalid.astype(np.uint8), crs=crs, transform=transform)
        if "labels" in ds:
            lab = np.asarray(ds["labels"].isel(time=i).values).astype(np.int16)
            write_geotiff(out / "labels" / f"{stem}.tif", lab, crs=crs, transform=transform, nodata=LABEL_NODATA)
    table = class_table(ds)
    if table:
        with atomic_path(out / "labels" / "classes.json") as tmp:
            tmp.write_text(json.dumps({str(k): v for k, v in table.items()}, indent=1))
    return out


def _for_storage(ds: xr.Dataset) -> xr.Dataset:
    validate_series(ds)
    out = ds.copy()
    out["valid"] = out["valid"].astype("uint8")
    out["valid"].attrs["flag_meaning"] = "1 = valid pixel"
    return out


def write_series_zarr(ds: xr.Dataset, path: Path | str) -> Path:
    """Write a series to a Zarr store (atomically); :func:`changescope.open` reads it back."""
    with atomic_path(path) as tmp:
        # Zarr format 2: readable by every Zarr implementation, with consolidated metadata.
        _for_storage(ds).to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)
    return Path(path)


def write_series_netcdf(ds: xr.Dataset, path: Path | str) -> Path:
    """Write a series to NetCDF-4 (h5netcdf engine, atomically); :func:`changescope.open` reads it back."""
    with atomic_path(path) as tmp:
        _for_storage(ds).to_netcdf(tmp, engine="h5netcdf")
    return Path(path)
