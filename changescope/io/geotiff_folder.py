"""Reader for a folder of dated multi-band GeoTIFFs (one file per date).

Layout::

    FOLDER/
      2021-03-01.tif            one multi-band GeoTIFF per date; the date anywhere in the name
      2021-03-01.mask.tif       optional sidecar, nonzero = invalid pixel
      labels/2021-03-01.tif     optional class map on the same grid
      labels/classes.json       optional class table {"0": "water", ...}

Band names come from the GeoTIFF band descriptions (fallback ``b1..bn``); the GeoTIFF nodata value marks invalid
pixels too. A single GeoTIFF file can be opened as a one-date series; pass ``date=`` when its name has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import xarray as xr

from changescope.errors import CorruptFileError, DateError, NoImagesFoundError
from changescope.io.dates import date_from_name, parse_date
from changescope.io.raster import RASTER_SUFFIXES, is_raster, raster_meta, read_lazy
from changescope.io.registry import register_reader
from changescope.io.stack import DateImage, stack_dates
from changescope.series import BandInfo

__all__ = ["GeoTiffFolderReader", "read_class_table"]

MASK_SUFFIX = ".mask"


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if is_raster(p) and not p.stem.endswith(MASK_SUFFIX) and not p.name.startswith(".")
    )


def read_class_table(path: Path) -> dict[int, str]:
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

    def can_open(self, path: Path) -> bool:
        """A GeoTIFF file, or a folder holding GeoTIFFs directly."""
        if path.is_file():
            return path.suffix in RASTER_SUFFIXES
        return path.is_dir() and bool(_images_in(path))

    def open(self, path: Path, *, date: str | None = None, reproject: bool = False, **kwargs: Any) -> xr.Dataset:
        """Open the folder (or file) as a series.

        Args:
            path: The folder or a single GeoTIFF.
            date: Date of a single GeoTIFF whose name holds none.
            reproject: Reproject dates in another CRS onto the first date's grid.
            **kwargs: Ignored reader options of other layouts.

        Raises:
            NoImagesFoundError: The folder holds no GeoTIFF.
            DateError: A file name holds no date.
        """
        files = [path] if path.is_file() else _images_in(path)
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
                "(YYYY-MM-DD, YYYYMMDD or YYYY-MM)" + (" or pass date=..." if len(files) == 1 else "")
            )
        items = []
        for f in files:
            when = parse_date(date, source="date=") if date is not None else date_from_name(f.stem)
            items.append(self._date_image(f, pd.Timestamp(str(when))))
        first = items[0]
        scales = first.extra.get("scales") or (1.0,) * len(first.band_names)
        offsets = first.extra.get("offsets") or (0.0,) * len(first.band_names)
        bands = [
            BandInfo.from_name(n, float(s), float(o)) for n, s, o in zip(first.band_names, scales, offsets, strict=True)
        ]
        return stack_dates(items, sensor="geotiff", reproject=reproject, bands=bands, classes=classes)

    def _date_image(self, f: Path, when: pd.Timestamp) -> DateImage:
        meta = raster_meta(f)
        names = [d if d else f"b{i}" for i, d in enumerate(meta.descriptions, start=1)]
        if len(set(names)) != len(names):
            names = [f"b{i}" for i in range(1, meta.count + 1)]
        image = read_lazy(f)
        mask_path = f.with_name(f.stem + MASK_SUFFIX + f.suffix)
        invalid = read_lazy(mask_path).isel(band=0) != 0 if mask_path.exists() else None
        label_path = f.parent / "labels" / f.name
        labels = read_lazy(label_path).isel(band=0) if label_path.exists() else None
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
