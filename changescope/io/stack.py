"""Assemble per-date rasters into one lazy series, with the consistency checks every reader needs."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from rasterio.enums import Resampling

from changescope.errors import (
    BandMismatchError,
    CRSMismatchError,
    DuplicateDateError,
    EmptySeriesError,
    GridMismatchError,
)
from changescope.series import LABEL_NODATA, BandInfo, make_series
from changescope.storepath import AnyPath

__all__ = ["DateImage", "align_to", "stack_dates"]


@dataclass
class DateImage:
    """One date of a series before stacking.

    Attributes:
        time: Acquisition date.
        image: Lazy ``(band, y, x)`` array with rioxarray CRS/transform (e.g. from :func:`read_lazy`).
        source: File the image came from (named in errors).
        band_names: Band names, one per band.
        invalid: Optional ``(y, x)`` bool array, ``True`` = invalid (cloud, shadow, ...).
        labels: Optional ``(y, x)`` integer class map on the same grid.
        nodata: Stored nodata value; pixels equal to it in any band are invalid.
    """

    time: pd.Timestamp
    image: xr.DataArray
    source: AnyPath
    band_names: list[str]
    invalid: xr.DataArray | None = None
    labels: xr.DataArray | None = None
    nodata: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _same_grid(a: xr.DataArray, b: xr.DataArray) -> bool:
    return a.shape[-2:] == b.shape[-2:] and np.allclose(
        tuple(a.rio.transform())[:6],
        tuple(b.rio.transform())[:6],
        rtol=0,
        atol=1e-9 * max(1.0, abs(a.rio.transform().a)),
    )


def align_to(arr: xr.DataArray, ref: xr.DataArray, resampling: Resampling = Resampling.nearest) -> xr.DataArray:
    """Resample ``arr`` onto the grid (CRS, transform, shape) of ``ref`` (no-op when already on it)."""
    if arr.rio.crs == ref.rio.crs and _same_grid(arr, ref):
        return arr
    out: xr.DataArray = arr.rio.reproject_match(ref, resampling=resampling)
    return out


def _moved_invalid(item: DateImage, moved: xr.DataArray) -> Any:
    """The item's invalid mask resampled with its image onto ``moved``'s grid; pixels outside its footprint invalid."""
    src = item.image
    flags = (
        da.zeros(src.shape[-2:], dtype=np.uint8, chunks=-1)
        if item.invalid is None
        else da.asarray(item.invalid.data).astype(np.uint8)
    )
    arr = xr.DataArray(flags, dims=("y", "x"), coords={"y": src["y"], "x": src["x"]})
    arr = arr.rio.write_crs(src.rio.crs).rio.write_transform(src.rio.transform()).rio.write_nodata(1)
    out = arr.rio.reproject_match(moved, resampling=Resampling.nearest)
    return da.asarray(out.data) != 0


def _invalid_from_nodata(image: xr.DataArray, nodata: float | None) -> Any:
    data = image.data
    bad = (
        da.zeros(data.shape[-2:], dtype=bool, chunks=data.chunksize[-2:])
        if isinstance(data, da.Array)
        else np.zeros(data.shape[-2:], dtype=bool)
    )
    if nodata is not None and np.isfinite(nodata):
        bad = bad | (data == nodata).any(axis=0)
    if np.issubdtype(image.dtype, np.floating):
        bad = bad | (~np.isfinite(data)).any(axis=0)
    return bad


def stack_dates(
    items: Sequence[DateImage],
    *,
    sensor: str,
    reproject: bool = False,
    align: bool = False,
    bands: Sequence[BandInfo] | None = None,
    classes: dict[int, str] | None = None,
    attrs: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Stack per-date images into a lazy series.

    Args:
        items: One :class:`DateImage` per date.
        sensor: Sensor / layout name for ``attrs["sensor"]``.
        reproject: Reproject images whose CRS differs from the first date's instead of refusing them.
        align: Resample images on the same CRS but a different grid onto the first date's grid (e.g. OSCD
            pairs whose extents differ by a few pixels) instead of refusing them.
        bands: Band metadata (defaults to the first item's band names with known wavelengths).
        classes: Class table for labels.
        attrs: Extra dataset attributes.

    Raises:
        EmptySeriesError: ``items`` is empty.
        DuplicateDateError: Two files have the same date.
        CRSMismatchError: CRSs differ and ``reproject`` is False.
        GridMismatchError: Grids differ and ``align`` is False, or labels are off-grid.
        BandMismatchError: Band counts or names differ, or dates store their values in different dtypes.
    """
    if not items:
        raise EmptySeriesError("no images to stack; the series would be empty")
    ordered = sorted(items, key=lambda it: it.time)
    for a, b in itertools.pairwise(ordered):
        if a.time == b.time:
            raise DuplicateDateError(
                f"{str(a.source)!r} and {str(b.source)!r} both have date {a.time.date().isoformat()}; "
                "keep one image per date"
            )
    ref = ordered[0]
    images, invalids, labels = [], [], []
    any_labels = any(it.labels is not None for it in ordered)
    for it in ordered:
        if it.band_names != ref.band_names:
            raise BandMismatchError(
                f"{str(it.source)!r} has bands {it.band_names!r} but {str(ref.source)!r} has {ref.band_names!r}; "
                "every date needs the same bands in the same order"
            )
        if it.image.dtype != ref.image.dtype:
            raise BandMismatchError(
                f"{str(it.source)!r} stores {it.image.dtype} values but {str(ref.source)!r} stores "
                f"{ref.image.dtype}; the dates would be on different scales: convert the files to one dtype and "
                "scale, or tag each file's scale/offset (gdal_edit.py -scale S -offset O) so that they can be converted"
            )
        img = it.image
        if img.rio.crs != ref.image.rio.crs:
            if not reproject:
                raise CRSMismatchError(
                    f"{str(it.source)!r} is in {img.rio.crs} but {str(ref.source)!r} is in {ref.image.rio.crs}; "
                    "pass --reproject (reproject=True in Python) to reproject onto the first date's grid"
                )
            img = align_to(img, ref.image)
        elif not _same_grid(img, ref.image):
            if not align:
                raise GridMismatchError(
                    f"{str(it.source)!r} has grid {img.shape[-2:]} at {tuple(img.rio.transform())[:6]} but "
                    f"{str(ref.source)!r} has {ref.image.shape[-2:]} at {tuple(ref.image.rio.transform())[:6]}; "
                    "co-register the images or pass --align (align=True in Python)"
                )
            img = align_to(img, ref.image)
        bad = _invalid_from_nodata(img, it.nodata)
        if it.invalid is not None and tuple(it.invalid.shape) != tuple(it.image.shape[-2:]):
            raise GridMismatchError(
                f"the invalid-pixel mask of {str(it.source)!r} has shape {tuple(it.invalid.shape)!r} but the image "
                f"is {tuple(it.image.shape[-2:])!r}; write the mask on the image grid"
            )
        if img is not it.image:
            bad = bad | _moved_invalid(it, img)
        elif it.invalid is not None:
            bad = bad | da.asarray(it.invalid.data).astype(bool)
        images.append(img.data)
        invalids.append(bad)
        if any_labels:
            if it.labels is None:
                labels.append(da.full(img.shape[-2:], LABEL_NODATA, dtype=np.int16, chunks=img.data.chunksize[-2:]))
            else:
                if it.labels.shape[-2:] != img.shape[-2:]:
                    raise GridMismatchError(
                        f"labels for {str(it.source)!r} have shape {it.labels.shape[-2:]!r} but the image is "
                        f"{img.shape[-2:]!r}; labels must be on the image grid"
                    )
                labels.append(da.asarray(it.labels.data).astype(np.int16))
    band_meta = list(bands) if bands is not None else [BandInfo.from_name(n) for n in ref.band_names]
    return make_series(
        da.stack([da.asarray(i) for i in images]),
        times=[it.time for it in ordered],
        bands=band_meta,
        crs=ref.image.rio.crs,
        transform=ref.image.rio.transform(),
        valid=~da.stack([da.asarray(b) for b in invalids]),
        labels=da.stack(labels) if any_labels else None,
        classes=classes,
        sensor=sensor,
        attrs={"files": [str(it.source) for it in ordered], **(attrs or {})},
    )
