"""Reader for the DynamicEarthNet layout (daily PlanetFusion images, monthly land-cover labels).

Layout of a dataset root::

    ROOT/
      planet/<zone>/<tile>/<aoi>/PF-SR/YYYY-MM-DD.tif        daily 4-band uint16 surface reflectance (B, G, R, NIR)
      planet/<zone>/<aoi>/PF-SR/YYYY-MM-DD.tif               (also accepted: no tile level)
      planet/.../PF-SR/YYYY-MM-DD.mask.tif                   optional changescope sidecar, nonzero = invalid
      labels/<aoi>_<zone>/Labels/Raster/<zone>-<aoi>/<zone>-<aoi>-YYYY_MM_01.tif
                                                             monthly labels, 7 one-hot bands (255 = class)

Bands are exposed as ``blue, green, red, nir`` with scale ``1e-4``. Pixels equal to the image nodata value (``0``
when the file declares none) in any band, or flagged in the sidecar mask, are invalid. Labels are decoded lazily to
class ids ``0..6`` (:data:`DEN_CLASSES`); a pixel with no band at 255 is ``-1`` (unlabelled).

Monthly selection (``selection=``):

- ``"label_day"`` (default): one image per month, the image of the label day (``YYYY-MM-01``); when that day has
  no image, the image of that month nearest to it (the earlier one on a tie). Months come from the label files, or
  from the image dates when the AOI has no labels. A month without any image is left out and named in
  ``attrs["months_without_images"]``.
- ``"monthly_median"``: per month, the per-pixel median of the valid daily images (lazy); a pixel is valid where
  any daily image was. The date is the first day of the month; ``image`` is float32 (NaN where no day was valid).
- ``"all"``: every daily image; labels sit on the label days and are ``-1`` on the other dates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from changescope.errors import (
    BandMismatchError,
    DateError,
    GridMismatchError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.io.dates import date_from_name
from changescope.io.den_layout import (
    IMAGE_FOLDER,
    MASK_SUFFIX,
    AoiRef,
    find_dataset_root,
    image_files,
    label_files,
    list_aois,
    resolve_aoi,
)
from changescope.io.raster import RasterMeta, raster_meta, read_lazy
from changescope.io.registry import register_reader
from changescope.io.stack import DateImage, stack_dates
from changescope.series import LABEL_NODATA, BandInfo
from changescope.types import MonthlySelection

__all__ = [
    "DEN_BANDS",
    "DEN_CLASSES",
    "AoiRef",
    "DynamicEarthNetReader",
    "decode_labels",
    "find_dataset_root",
    "list_aois",
    "open_aoi",
    "resolve_aoi",
]

DEN_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")
"""Band names of the PF-SR images, in file order."""

DEN_SCALE = 1e-4
"""Reflectance = stored value * scale."""

DEN_CLASSES: dict[int, str] = {
    0: "impervious surface",
    1: "agriculture",
    2: "forest & other vegetation",
    3: "wetlands",
    4: "soil",
    5: "water",
    6: "snow & ice",
}
"""DynamicEarthNet class table: label band ``i`` (0-based) set to 255 means class ``i``."""

ONE_HOT_VALUE = 255
SELECTIONS = ("label_day", "monthly_median", "all")
SENSOR = "planetfusion"

_LABEL_DATE = re.compile(r"(?<!\d)(\d{4})[-_](\d{2})[-_](\d{2})$")


def decode_labels(one_hot: xr.DataArray) -> xr.DataArray:
    """Decode 7 one-hot label bands ``(band, y, x)`` into class ids ``(y, x)`` (lazy when the input is).

    A pixel's class is the band holding 255; pixels with no band at 255 get ``-1``.
    """
    data = da.asarray(one_hot.data)
    ids = da.where(data.max(axis=0) == ONE_HOT_VALUE, data.argmax(axis=0), LABEL_NODATA).astype(np.int16)
    return xr.DataArray(ids, dims=("y", "x"), coords={"y": one_hot["y"], "x": one_hot["x"]}, name="labels")


def _image_dates(ref: AoiRef) -> dict[pd.Timestamp, Path]:
    files = image_files(ref.image_dir)
    if not files:
        raise NoImagesFoundError(
            f"no {IMAGE_FOLDER} images (*.tif) in {str(ref.image_dir)!r}; expected daily YYYY-MM-DD.tif files"
        )
    out: dict[pd.Timestamp, Path] = {}
    for f in files:
        when = date_from_name(f.stem)
        if when is None:
            raise DateError(f"no date in the image name {str(f)!r}; name daily images YYYY-MM-DD.tif")
        out[pd.Timestamp(when)] = f
    return out


def _label_dates(ref: AoiRef) -> dict[pd.Timestamp, Path]:
    out: dict[pd.Timestamp, Path] = {}
    for f in label_files(ref.label_dir):
        match = _LABEL_DATE.search(f.stem)
        when = None
        if match:
            try:
                when = pd.Timestamp(year=int(match[1]), month=int(match[2]), day=int(match[3]))
            except ValueError:
                when = None
        if when is None:
            raise DateError(f"cannot read the date of label file {str(f)!r}; name it <zone>-<aoi>-YYYY_MM_01.tif")
        out[when] = f
    return out


def _check_grid(meta: RasterMeta, ref: RasterMeta, what: str) -> None:
    same_shape = (meta.height, meta.width) == (ref.height, ref.width)
    georef = meta.crs is not None and ref.crs is not None
    tol = 1e-6 * max(1.0, abs(ref.transform.a))
    same_geo = not georef or (
        meta.crs == ref.crs and np.allclose(tuple(meta.transform)[:6], tuple(ref.transform)[:6], rtol=0, atol=tol)
    )
    if not (same_shape and same_geo):
        raise GridMismatchError(
            f"{what} {str(meta.path)!r} has grid {(meta.height, meta.width)!r} at {tuple(meta.transform)[:6]!r} "
            f"({meta.crs}) but the image {str(ref.path)!r} has {(ref.height, ref.width)!r} at "
            f"{tuple(ref.transform)[:6]!r} ({ref.crs}); it must be on the AOI's image grid"
        )


def _read_label(path: Path, ref_meta: RasterMeta) -> xr.DataArray:
    meta = raster_meta(path)
    if meta.count != len(DEN_CLASSES):
        raise BandMismatchError(
            f"label file {str(path)!r} has {meta.count} bands; DynamicEarthNet labels need "
            f"{len(DEN_CLASSES)} one-hot bands (one per class of {list(DEN_CLASSES.values())!r})"
        )
    _check_grid(meta, ref_meta, "label file")
    return decode_labels(read_lazy(path))


def _mask_path(image: Path) -> Path:
    return image.with_name(image.stem + MASK_SUFFIX + image.suffix)


def _daily(path: Path, when: pd.Timestamp, ref_meta: RasterMeta | None) -> DateImage:
    meta = raster_meta(path)
    if meta.count != len(DEN_BANDS):
        raise BandMismatchError(
            f"{str(path)!r} has {meta.count} bands; {IMAGE_FOLDER} images need {len(DEN_BANDS)} (B, G, R, NIR)"
        )
    if ref_meta is not None:
        _check_grid(meta, ref_meta, "image")
    mask = _mask_path(path)
    invalid = None
    if mask.exists():
        _check_grid(raster_meta(mask), meta, "mask sidecar")
        invalid = read_lazy(mask).isel(band=0) != 0
    return DateImage(
        time=when,
        image=read_lazy(path),
        source=path,
        band_names=list(DEN_BANDS),
        invalid=invalid,
        nodata=meta.nodata if meta.nodata is not None else 0,
    )


def _day_invalid(item: DateImage) -> Any:
    data = da.asarray(item.image.data)
    bad = da.zeros(data.shape[-2:], dtype=bool, chunks=data.chunksize[-2:])
    if item.nodata is not None:
        bad = bad | (data == item.nodata).any(axis=0)
    if item.invalid is not None:
        bad = bad | da.asarray(item.invalid.data).astype(bool)
    return bad


def _median_block(block: np.ndarray) -> np.ndarray:
    empty = np.isnan(block).all(axis=0)
    out = np.nanmedian(np.where(empty[None], np.float32(0), block), axis=0).astype(np.float32)
    out[empty] = np.nan
    return out


def _monthly_median(days: Sequence[DateImage], month: pd.Timestamp) -> DateImage:
    layers = [
        da.where(_day_invalid(d)[None], np.float32(np.nan), da.asarray(d.image.data).astype(np.float32)) for d in days
    ]
    stacked = da.stack(layers).rechunk({0: -1})
    median = stacked.map_blocks(_median_block, drop_axis=0, dtype=np.float32)
    first = days[0]
    return DateImage(
        time=month,
        image=first.image.copy(data=median),
        source=first.source,
        band_names=list(DEN_BANDS),
        nodata=None,
    )


def _nearest(day: pd.Timestamp, dates: Sequence[pd.Timestamp]) -> pd.Timestamp:
    return min(dates, key=lambda d: (abs((d - day).days), d))


def open_aoi(
    ref: AoiRef, *, selection: MonthlySelection = "label_day", reproject: bool = False, align: bool = False
) -> xr.Dataset:
    """Open one AOI as a lazy series.

    Args:
        ref: The AOI (from :func:`list_aois` or :func:`resolve_aoi`).
        selection: ``"label_day"``, ``"monthly_median"`` or ``"all"`` (see the module docstring).
        reproject: Reproject images in another CRS onto the first image's grid.
        align: Resample images on another grid of the same CRS onto the first image's grid.

    Raises:
        ParameterError: ``selection`` is unknown.
        NoImagesFoundError: The AOI has no images.
        DateError: An image or label name holds no date.
        BandMismatchError: An image does not have 4 bands or a label file 7.
        GridMismatchError: A label file, a mask sidecar or a daily image of a median is off the image grid.
    """
    if selection not in SELECTIONS:
        raise ParameterError(f"selection={selection!r} is unknown; choose one of {list(SELECTIONS)!r}")
    images = _image_dates(ref)
    labels = _label_dates(ref)
    dates = sorted(images)
    months = sorted(labels) if labels else sorted({d.to_period("M").to_timestamp() for d in dates})
    ref_meta = raster_meta(images[dates[0]])
    label_of = {when: _read_label(path, ref_meta) for when, path in labels.items()}
    items: list[DateImage] = []
    missing: list[str] = []
    if selection == "all":
        for d in dates:
            item = _daily(images[d], d, None)
            item.labels = label_of.get(d)
            items.append(item)
    else:
        for month in months:
            in_month = [d for d in dates if (d.year, d.month) == (month.year, month.month)]
            if not in_month:
                missing.append(month.strftime("%Y-%m"))
                continue
            if selection == "label_day":
                chosen = _nearest(month, in_month)
                item = _daily(images[chosen], chosen, None)
            else:
                days = [_daily(images[d], d, ref_meta) for d in in_month]
                item = _monthly_median(days, month.to_period("M").to_timestamp())
            item.labels = label_of.get(month)
            items.append(item)
    if not items:
        raise NoImagesFoundError(
            f"no image of {str(ref.image_dir)!r} falls in a label month ({[m.strftime('%Y-%m') for m in months]!r}); "
            'check the dates or use selection="all"'
        )
    attrs: dict[str, Any] = {
        "dataset": "dynamicearthnet",
        "aoi": ref.aoi,
        "zone": ref.zone or "",
        "tile": ref.tile or "",
        "selection": selection,
    }
    if missing:
        attrs["months_without_images"] = missing
    return stack_dates(
        items,
        sensor=SENSOR,
        reproject=reproject,
        align=align,
        bands=[BandInfo.from_name(n, scale=DEN_SCALE) for n in DEN_BANDS],
        classes=DEN_CLASSES if labels else None,
        attrs=attrs,
    )


@register_reader
class DynamicEarthNetReader:
    """DynamicEarthNet dataset root, AOI folder or ``PF-SR`` folder."""

    name: ClassVar[str] = "dynamicearthnet"
    priority: ClassVar[int] = 30

    def can_open(self, path: Path) -> bool:
        """A folder holding ``planet/``, a ``PF-SR`` folder, or a folder holding ``PF-SR/``."""
        if not path.is_dir():
            return False
        return (path / "planet").is_dir() or path.name == IMAGE_FOLDER or (path / IMAGE_FOLDER).is_dir()

    def open(
        self,
        path: Path,
        *,
        aoi: str | None = None,
        selection: MonthlySelection = "label_day",
        reproject: bool = False,
        align: bool = False,
        **kwargs: Any,
    ) -> xr.Dataset:
        """Open one AOI as a series.

        Args:
            path: Dataset root, AOI folder or its ``PF-SR`` folder (labels are found by walking up to the root).
            aoi: AOI id (or ``"zone/aoi"``) when ``path`` is a root with several AOIs (``--aoi``).
            selection: ``"label_day"`` (default), ``"monthly_median"`` or ``"all"``.
            reproject: Reproject images in another CRS onto the first image's grid (``--reproject``).
            align: Resample images on another grid of the same CRS onto the first image's grid (``--align``).
            **kwargs: Unused (:func:`changescope.open` passes only the options named above).

        Raises:
            ParameterError: ``aoi`` is missing, unknown or contradicts ``path``; ``selection`` is unknown.
            NoImagesFoundError: No ``PF-SR`` images.
        """
        return open_aoi(resolve_aoi(path, aoi), selection=selection, reproject=reproject, align=align)
