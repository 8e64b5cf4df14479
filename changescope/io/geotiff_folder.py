"""Reader for a folder of dated multi-band GeoTIFFs (one file per date).

Layout::

    FOLDER/
      2021-03-01.tif            one multi-band GeoTIFF per date; the date anywhere in the name
      2021-03-01.mask.tif       optional sidecar, nonzero = invalid pixel
      labels/2021-03-01.tif     optional class map on the same grid
      labels/classes.json       optional class table {"0": "water", ...}

Band names come from the GeoTIFF band descriptions (fallback ``b1..bn``); the GeoTIFF nodata value marks invalid
pixels too. The folder may be an object-store prefix (``s3://bucket/series/``, :mod:`changescope.storepath`):
its GeoTIFFs/COGs are then read through fsspec, lazily and by windows. A single GeoTIFF file can be opened as a
one-date series; pass ``date=`` (``--date``) when its name has none. A mask sidecar must be on its image's grid.

Every date must store its values the same way. When the files' scale/offset tags differ (e.g. one date uint16
reflectance x 10000 tagged scale 1e-4, another float32 reflectance 0-1), every date is converted to float32
reflectance (``image * scale + offset``, series scale 1) and ``attrs["rescaled"]`` says so; an untagged float file
counts as reflectance already. Dates that differ in dtype under the same tags, or an untagged integer file beside
tagged ones, are refused: nothing says how to bring them onto one scale.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from changescope.errors import BandMismatchError, CorruptFileError, DateError, GridMismatchError, NoImagesFoundError
from changescope.io.dates import date_from_name, parse_date
from changescope.io.raster import RASTER_SUFFIXES, RasterMeta, list_rasters, raster_meta, read_lazy
from changescope.io.registry import register_reader
from changescope.io.stack import DateImage, stack_dates
from changescope.series import BandInfo
from changescope.storepath import AnyPath

__all__ = ["GeoTiffFolderReader", "read_class_table"]

MASK_SUFFIX = ".mask"


def _images_in(folder: AnyPath, *, check_links: bool = True) -> list[AnyPath]:
    found: list[AnyPath] = [*list_rasters(folder, check_links=check_links)]
    return [p for p in found if not p.stem.endswith(MASK_SUFFIX)]


def read_class_table(path: AnyPath) -> dict[int, str]:
    """Read a ``{"id": "name"}`` JSON class table.

    Raises:
        CorruptFileError: The file is not such a JSON object.
    """
    try:
        raw = json.loads(path.read_text())
        return {int(k): str(v) for k, v in raw.items()}
    except (ValueError, AttributeError) as err:
        raise CorruptFileError(f"{str(path)!r} is not a JSON object of {{class id: name}}: {err}") from err


@register_reader
class GeoTiffFolderReader:
    """Folder of dated multi-band GeoTIFFs, or a single GeoTIFF."""

    name: ClassVar[str] = "geotiff_folder"
    priority: ClassVar[int] = 100
    remote: ClassVar[bool] = True

    def can_open(self, path: AnyPath) -> bool:
        """A GeoTIFF file, or a folder holding GeoTIFFs directly."""
        if path.is_file():
            return path.suffix in RASTER_SUFFIXES
        return path.is_dir() and bool(_images_in(path, check_links=False))

    def open(
        self, path: AnyPath, *, date: str | None = None, reproject: bool = False, align: bool = False, **kwargs: Any
    ) -> xr.Dataset:
        """Open the folder (or file) as a series.

        Args:
            path: The folder or a single GeoTIFF (local, or an object-store location).
            date: Date of a single GeoTIFF whose name holds none (``--date``).
            reproject: Reproject dates in another CRS onto the first date's grid (``--reproject``).
            align: Resample dates on another grid of the same CRS onto the first date's grid (``--align``).
            **kwargs: Unused (:func:`changescope.open` passes only the options named above).

        Raises:
            NoImagesFoundError: The folder holds no GeoTIFF, or a ``.tif`` is a dangling symbolic link.
            DateError: A file name holds no date.
            CorruptFileError: A file is not a readable raster or is cut short.
            GridMismatchError: A mask sidecar is not on its image's grid.
            BandMismatchError: Dates store their values differently and nothing says how to convert them.
        """
        files: list[AnyPath] = [path] if path.is_file() else _images_in(path)
        if not files:
            raise NoImagesFoundError(
                f"no GeoTIFF (*.tif) found in {str(path)!r}; put one multi-band GeoTIFF per date there"
            )
        folder = path.parent if path.is_file() else path
        table_path = folder / "labels" / "classes.json"
        classes = read_class_table(table_path) if table_path.exists() else None
        undated = [f.name for f in files if date_from_name(f.stem) is None]
        if undated and not (date is not None and len(files) == 1):
            raise DateError(
                f"no date in the name of {undated[:5]!r} in {str(folder)!r}; name files like 2021-03-01.tif "
                "(YYYY-MM-DD, YYYYMMDD or YYYY-MM)"
                + (" or pass --date YYYY-MM-DD (date= in Python)" if len(files) == 1 else "")
            )
        items = []
        for f in files:
            when = parse_date(date, source="date=") if date is not None else date_from_name(f.stem)
            items.append(self._date_image(f, pd.Timestamp(str(when))))
        first = items[0]
        scales = first.extra.get("scales") or (1.0,) * len(first.band_names)
        offsets = first.extra.get("offsets") or (0.0,) * len(first.band_names)
        attrs: dict[str, Any] = {}
        if _needs_rescale(items):
            items = [_to_reflectance(it) for it in items]
            scales, offsets = (1.0,) * len(first.band_names), (0.0,) * len(first.band_names)
            attrs["rescaled"] = "dates differ in scale/offset tags; every date converted to float32 reflectance"
        bands = [
            BandInfo.from_name(n, float(s), float(o)) for n, s, o in zip(first.band_names, scales, offsets, strict=True)
        ]
        return stack_dates(
            items, sensor="geotiff", reproject=reproject, align=align, bands=bands, classes=classes, attrs=attrs
        )

    def _date_image(self, f: AnyPath, when: pd.Timestamp) -> DateImage:
        meta = raster_meta(f)
        names = [d if d else f"b{i}" for i, d in enumerate(meta.descriptions, start=1)]
        if len(set(names)) != len(names):
            names = [f"b{i}" for i in range(1, meta.count + 1)]
        image = read_lazy(f)
        mask_path = f.with_name(f.stem + MASK_SUFFIX + f.suffix)
        invalid = None
        if mask_path.exists():
            _check_sidecar(raster_meta(mask_path), meta)
            invalid = read_lazy(mask_path).isel(band=0) != 0
        label_path = f.parent / "labels" / f.name
        labels = read_lazy(label_path).isel(band=0) if label_path.exists() or label_path.is_symlink() else None
        return DateImage(
            time=when,
            image=image,
            source=f,
            band_names=names,
            invalid=invalid,
            labels=labels,
            nodata=meta.nodata,
            extra={"scales": meta.scales, "offsets": meta.offsets},
        )


def _check_sidecar(mask: RasterMeta, image: RasterMeta) -> None:
    """Refuse a mask sidecar that is not on its image's grid (a georeference-free mask needs only the shape)."""
    shape, want = (mask.height, mask.width), (image.height, image.width)
    tol = 1e-6 * max(1.0, abs(image.transform.a))
    off_grid = mask.crs is not None and (
        mask.crs != image.crs
        or not np.allclose(tuple(mask.transform)[:6], tuple(image.transform)[:6], rtol=0, atol=tol)
    )
    if shape != want or off_grid:
        where = f"shape {shape!r}" if shape != want else f"grid {tuple(mask.transform)[:6]!r} ({mask.crs})"
        raise GridMismatchError(
            f"mask sidecar {str(mask.path)!r} has {where} but its image {str(image.path)!r} is {want!r} px at "
            f"{tuple(image.transform)[:6]!r} ({image.crs}); write the mask on the image grid or remove it"
        )


def _tags(item: DateImage) -> tuple[tuple[float, ...], tuple[float, ...]]:
    n = len(item.band_names)
    return tuple(item.extra.get("scales") or (1.0,) * n), tuple(item.extra.get("offsets") or (0.0,) * n)


def _needs_rescale(items: list[DateImage]) -> bool:
    """Whether the dates must be converted to reflectance (their scale/offset tags differ).

    Raises:
        BandMismatchError: The dates differ in dtype under the same tags, or an untagged integer file sits beside
            tagged ones: nothing says how to bring them onto one scale.
    """
    tags = [_tags(it) for it in items]
    if len(set(tags)) == 1:
        ref = items[0]
        for it in items[1:]:
            if it.image.dtype != ref.image.dtype:
                raise BandMismatchError(
                    f"{str(it.source)!r} stores {it.image.dtype} values but {str(ref.source)!r} stores "
                    f"{ref.image.dtype}, both with scale {tags[0][0][0]:g} and offset {tags[0][1][0]:g}, so the "
                    "dates would be on different scales (e.g. reflectance x 10000 against 0-1); convert the files to "
                    "one dtype, or tag the scale of each (gdal_edit.py -scale 0.0001 FILE on the x 10000 files)"
                )
        return False
    for it, tag in zip(items, tags, strict=True):
        untagged = all(v == 1.0 for v in tag[0]) and not any(tag[1])
        if untagged and not np.issubdtype(it.image.dtype, np.floating):
            other = next(o for o, t in zip(items, tags, strict=True) if t != tag)
            raise BandMismatchError(
                f"{str(it.source)!r} ({it.image.dtype}) has no scale/offset tag but {str(other.source)!r} has scale "
                f"{_tags(other)[0][0]:g}, offset {_tags(other)[1][0]:g}; tag the scale of {it.source.name!r} "
                "(gdal_edit.py -scale S -offset O FILE) or convert the files to one dtype and scale"
            )
    return True


def _to_reflectance(item: DateImage) -> DateImage:
    """The date as float32 ``value * scale + offset``, its nodata pixels folded into ``invalid``."""
    scales, offsets = _tags(item)
    data = da.asarray(item.image.data)
    bad = da.zeros(data.shape[-2:], dtype=bool, chunks=data.chunksize[-2:])
    if item.nodata is not None and np.isfinite(item.nodata):
        bad = (data == item.nodata).any(axis=0)
    if item.invalid is not None:
        bad = bad | da.asarray(item.invalid.data).astype(bool)
    scale = np.asarray(scales, dtype=np.float32)[:, None, None]
    offset = np.asarray(offsets, dtype=np.float32)[:, None, None]
    image = item.image.copy(data=data.astype(np.float32) * scale + offset)
    invalid = xr.DataArray(bad, dims=("y", "x"), coords={"y": item.image["y"], "x": item.image["x"]})
    extra = {**item.extra, "scales": (1.0,) * len(scales), "offsets": (0.0,) * len(offsets)}
    return DateImage(item.time, image, item.source, item.band_names, invalid, item.labels, None, extra)
