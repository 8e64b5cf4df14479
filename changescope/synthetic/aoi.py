"""Write a synthetic AOI to disk in the DynamicEarthNet layout.

On-disk layout under ``OUT`` (zone ``synth``, tile ``0000``, AOI id e.g. ``aoi_0000``)::

    OUT/planet/synth/0000/<aoi>/PF-SR/YYYY-MM-DD.tif        4-band uint16 reflectance * 1e4 (B, G, R, NIR), nodata 0
    OUT/planet/synth/0000/<aoi>/PF-SR/YYYY-MM-DD.mask.tif   uint8 mask, 0 clear, 1 cloud, 2 shadow (nonzero = invalid)
    OUT/labels/<aoi>_synth/Labels/Raster/synth-<aoi>/synth-<aoi>-YYYY_MM_01.tif
                                                            7-band one-hot uint8 labels (255 = class), class ids 0..6
    OUT/events/<aoi>.parquet                                GeoParquet of the change events (CRS included)
    OUT/events/<aoi>.geojson                                the same events for human eyes (dates as ISO strings)
    OUT/events/<aoi>_nuisances.json                         parameters and the nuisances of every date

One image, one mask and one label file per month, dated the first of the month (the label day). Every file is
written atomically; the events GeoParquet is written last and marks the AOI as complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from affine import Affine

from changescope.errors import ParameterError
from changescope.io.writers import atomic_path, write_geotiff
from changescope.synthetic.generate import CRS, PIXEL_SIZE, AoiParams, Frame, aoi_transform, iter_frames, one_hot
from changescope.synthetic.landscape import CLASS_NAMES
from changescope.synthetic.radiometry import BANDS
from changescope.types import PathLike

__all__ = ["TILE", "ZONE", "AoiInfo", "AoiLayout", "make_aoi"]

ZONE = "synth"
"""Zone folder name of synthetic AOIs."""
TILE = "0000"
"""Tile folder name of synthetic AOIs."""


@dataclass(frozen=True)
class AoiLayout:
    """The paths of one AOI in the DynamicEarthNet layout (see the module docstring).

    Attributes:
        root: The dataset root ``OUT``.
        aoi: AOI id.
        zone: Zone folder name.
        tile: Tile folder name.
    """

    root: Path
    aoi: str
    zone: str = ZONE
    tile: str = TILE

    @property
    def image_dir(self) -> Path:
        """``OUT/planet/<zone>/<tile>/<aoi>/PF-SR``."""
        return self.root / "planet" / self.zone / self.tile / self.aoi / "PF-SR"

    @property
    def label_dir(self) -> Path:
        """``OUT/labels/<aoi>_<zone>/Labels/Raster/<zone>-<aoi>``."""
        return self.root / "labels" / f"{self.aoi}_{self.zone}" / "Labels" / "Raster" / f"{self.zone}-{self.aoi}"

    @property
    def events_path(self) -> Path:
        """``OUT/events/<aoi>.parquet``."""
        return self.root / "events" / f"{self.aoi}.parquet"

    @property
    def geojson_path(self) -> Path:
        """``OUT/events/<aoi>.geojson``."""
        return self.root / "events" / f"{self.aoi}.geojson"

    @property
    def nuisances_path(self) -> Path:
        """``OUT/events/<aoi>_nuisances.json``."""
        return self.root / "events" / f"{self.aoi}_nuisances.json"

    def image_path(self, date: pd.Timestamp) -> Path:
        """``.../PF-SR/YYYY-MM-DD.tif``."""
        return self.image_dir / f"{date:%Y-%m-%d}.tif"

    def mask_path(self, date: pd.Timestamp) -> Path:
        """``.../PF-SR/YYYY-MM-DD.mask.tif``."""
        return self.image_dir / f"{date:%Y-%m-%d}.mask.tif"

    def label_path(self, date: pd.Timestamp) -> Path:
        """``.../<zone>-<aoi>/<zone>-<aoi>-YYYY_MM_01.tif``."""
        return self.label_dir / f"{self.zone}-{self.aoi}-{date:%Y_%m}_01.tif"

    def owned_paths(self) -> list[Path]:
        """Every folder and file that belongs to this AOI alone (removed before it is rewritten)."""
        return [
            self.root / "planet" / self.zone / self.tile / self.aoi,
            self.root / "labels" / f"{self.aoi}_{self.zone}",
            self.events_path,
            self.geojson_path,
            self.nuisances_path,
        ]


@dataclass(frozen=True)
class AoiInfo:
    """What :func:`make_aoi` wrote.

    Attributes:
        layout: The AOI's paths.
        params: The generator parameters.
        dates: The monthly dates.
        events: The change events (as in the GeoParquet file).
        crs: CRS of every raster and polygon.
        transform: Affine transform of every raster (3 m pixels).
    """

    layout: AoiLayout
    params: AoiParams
    dates: pd.DatetimeIndex
    events: gpd.GeoDataFrame
    crs: str
    transform: Affine

    @property
    def root(self) -> Path:
        """The dataset root ``OUT``."""
        return self.layout.root

    @property
    def aoi(self) -> str:
        """The AOI id."""
        return self.layout.aoi


def _write_frame(layout: AoiLayout, frame: Frame, params: AoiParams) -> None:
    transform = aoi_transform(params.seed, params.size)
    day = f"{frame.date:%Y-%m-%d}"
    tags = {"CHANGESCOPE_SYNTHETIC": "1", "AOI": params.aoi, "SEED": str(params.seed), "DATE": day}
    write_geotiff(
        layout.image_path(frame.date),
        frame.image,
        crs=CRS,
        transform=transform,
        nodata=0,
        descriptions=BANDS,
        tags={**tags, "SCALE": "0.0001"},
    )
    write_geotiff(
        layout.mask_path(frame.date),
        frame.mask,
        crs=CRS,
        transform=transform,
        descriptions=("invalid",),
        tags={**tags, "VALUES": "0 clear, 1 cloud, 2 cloud shadow"},
    )
    write_geotiff(
        layout.label_path(frame.date),
        one_hot(frame.labels),
        crs=CRS,
        transform=transform,
        descriptions=CLASS_NAMES,
        tags=tags,
    )


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _events_geojson(events: gpd.GeoDataFrame) -> str:
    out = events.copy()
    for col in ("month", "end_month"):
        out[col] = [None if pd.isna(d) else f"{d:%Y-%m-%d}" for d in out[col]]
    text: str = out.to_json(na="null", drop_id=True)
    return text


def make_aoi(
    out_dir: PathLike,
    seed: int = 0,
    size: int = 1024,
    months: int = 24,
    *,
    aoi: str = "aoi_0000",
    start: str | pd.Timestamp = "2018-01-01",
    events_per_type: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> AoiInfo:
    """Generate a synthetic AOI and write it in the DynamicEarthNet layout (see the module docstring).

    The land cover, the change events and the nuisances follow the rules documented in
    :mod:`changescope.synthetic.landscape`, :mod:`~changescope.synthetic.radiometry`,
    :mod:`~changescope.synthetic.events` and :mod:`~changescope.synthetic.nuisance`. Several AOIs (different
    ``aoi`` ids) can share one ``out_dir``.

    Args:
        out_dir: Dataset root ``OUT`` (created if missing).
        seed: Random seed; the same parameters give byte-identical pixels.
        size: Image side in pixels (>= 64; 3 m pixels).
        months: Number of monthly dates (>= 2).
        aoi: AOI id (letters, digits and underscores).
        start: First date, the first day of a month.
        events_per_type: Events per type (default ``max(1, round(5 * size / 1024))``: 5 at 1024 px).
        overwrite: Replace an existing complete AOI of the same id; without it such an AOI is refused. An
            incomplete one (no events file, e.g. after a crash) is always replaced.
        progress: Called as ``progress(done, total)`` after each date is written.

    Returns:
        What was written: paths, parameters, dates and events.

    Raises:
        ParameterError: A parameter is out of range, ``out_dir`` is a file, or the AOI already exists and
            ``overwrite`` is False.
    """
    params = AoiParams.validate(seed, size, months, start=start, aoi=aoi, events_per_type=events_per_type)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise ParameterError(f"out_dir={str(root)!r} is a file; give a folder to write the AOI into")
    layout = AoiLayout(root, params.aoi)
    if layout.events_path.exists() and not overwrite:
        raise ParameterError(
            f"out_dir={str(root)!r} already holds a complete AOI {params.aoi!r}; pass overwrite=True "
            "(--overwrite) to replace it, or choose another folder or --aoi"
        )
    for path in layout.owned_paths():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    events, frames = iter_frames(
        params.seed, params.size, params.months, start=params.start, aoi=params.aoi, events_per_type=events_per_type
    )
    records: dict[str, dict[str, Any]] = {}
    for frame in frames:
        _write_frame(layout, frame, params)
        records[f"{frame.date:%Y-%m-%d}"] = frame.nuisance
        if progress is not None:
            progress(frame.index + 1, params.months)
    transform = aoi_transform(params.seed, params.size)
    from changescope import __version__

    log = {
        "generator": "changescope.synthetic",
        "version": __version__,
        "aoi": params.aoi,
        "zone": ZONE,
        "tile": TILE,
        "seed": params.seed,
        "size": params.size,
        "months": params.months,
        "start": f"{params.start:%Y-%m-%d}",
        "events_per_type": params.events_per_type,
        "crs": CRS,
        "pixel_size": PIXEL_SIZE,
        "transform": list(transform)[:6],
        "dates": records,
    }
    _write_text(layout.nuisances_path, json.dumps(log, indent=1))
    _write_text(layout.geojson_path, _events_geojson(events))
    with atomic_path(layout.events_path) as tmp:
        events.to_parquet(tmp)
    return AoiInfo(layout=layout, params=params, dates=params.dates, events=events, crs=CRS, transform=transform)
