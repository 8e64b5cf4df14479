"""The in-memory synthetic AOI generator: parameters, the per-date frame iterator and the assembled arrays.

:func:`generate_aoi` returns every array of an AOI without touching the disk; :func:`iter_frames` yields the same
arrays one date at a time, which is what :func:`changescope.synthetic.make_aoi` writes. Both draw everything from
``numpy.random.default_rng(seed)`` in a fixed order (landscape, events, nuisance parameters; each date's random
fields from a seed drawn there), so the same parameters give byte-identical arrays.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.series import BandInfo, make_series
from changescope.synthetic.events import Event, events_frame, place_events, state_at
from changescope.synthetic.landscape import CLASS_NAMES, SURFACE_LABEL, Landscape, make_landscape
from changescope.synthetic.nuisance import NuisanceDraw, apply_nuisances, draw_nuisances, noise_bank
from changescope.synthetic.radiometry import BANDS, CROP_NAMES, render_scene

__all__ = [
    "CRS",
    "PIXEL_SIZE",
    "AoiParams",
    "Frame",
    "SyntheticAoi",
    "aoi_transform",
    "generate_aoi",
    "iter_frames",
    "one_hot",
]

CRS = "EPSG:32633"
"""CRS of synthetic AOIs (UTM zone 33N, central Europe, matching the temperate phenology)."""
PIXEL_SIZE = 3.0
"""Pixel side in metres (PlanetFusion)."""
SCALE = 1e-4
"""Reflectance = stored value * SCALE."""
_AOI_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class AoiParams:
    """Validated generator parameters.

    Attributes:
        seed: Random seed (non-negative).
        size: Image side in pixels (>= 64).
        months: Number of monthly dates (>= 2).
        start: First date (the first day of a month).
        aoi: AOI id (letters, digits and underscores).
        events_per_type: Events to place per type.
    """

    seed: int
    size: int
    months: int
    start: pd.Timestamp
    aoi: str
    events_per_type: int

    @classmethod
    def validate(
        cls,
        seed: int = 0,
        size: int = 1024,
        months: int = 24,
        *,
        start: str | pd.Timestamp = "2018-01-01",
        aoi: str = "aoi_0000",
        events_per_type: int | None = None,
    ) -> AoiParams:
        """Check the parameters and fill defaults.

        Raises:
            ParameterError: A parameter is out of range; the message names it and the accepted values.
        """
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ParameterError(f"seed={seed!r} must be a non-negative integer")
        if not isinstance(size, int | np.integer) or not 64 <= size <= 8192:
            raise ParameterError(f"size={size!r} is out of range; use an integer from 64 to 8192 pixels")
        if not isinstance(months, int | np.integer) or not 2 <= months <= 600:
            raise ParameterError(f"months={months!r} is out of range; use an integer from 2 to 600 monthly dates")
        try:
            first = pd.Timestamp(start)
        except (ValueError, TypeError) as err:
            raise ParameterError(f"start={start!r} is not a date; pass e.g. '2018-01-01'") from err
        if first.day != 1 or first != first.normalize():
            raise ParameterError(f"start={start!r} must be the first day of a month (the label day), e.g. '2018-01-01'")
        if not _AOI_NAME.match(aoi):
            raise ParameterError(f"aoi={aoi!r} may hold only letters, digits and underscores, e.g. 'aoi_0000'")
        per_type = max(1, round(5 * size / 1024)) if events_per_type is None else events_per_type
        if not isinstance(per_type, int | np.integer) or per_type < 0:
            raise ParameterError(f"events_per_type={events_per_type!r} must be a non-negative integer or None")
        return cls(int(seed), int(size), int(months), first, aoi, int(per_type))

    @property
    def dates(self) -> pd.DatetimeIndex:
        """The monthly dates (first day of each month)."""
        return pd.date_range(self.start, periods=self.months, freq="MS").as_unit("ns")


def aoi_transform(seed: int, size: int) -> Affine:
    """North-up 3 m transform of an AOI: top-left corner at ``(400000 + 4000 * (seed % 50), 5100000)`` in UTM 33N."""
    return Affine(PIXEL_SIZE, 0.0, 400_000.0 + 4_000.0 * (seed % 50), 0.0, -PIXEL_SIZE, 5_100_000.0)


def one_hot(labels: NDArray[np.uint8], n_classes: int = len(CLASS_NAMES)) -> NDArray[np.uint8]:
    """Encode ``(h, w)`` class ids as ``(n_classes, h, w)`` uint8 bands with 255 at the class and 0 elsewhere."""
    out: NDArray[np.uint8] = (labels[None] == np.arange(n_classes, dtype=labels.dtype)[:, None, None]).astype(
        np.uint8
    ) * np.uint8(255)
    return out


@dataclass(frozen=True)
class Frame:
    """One date of a synthetic AOI.

    Attributes:
        index: Date index.
        date: The date.
        image: ``(4, h, w)`` uint16 reflectance * 10000 (B, G, R, NIR), never 0 (0 is nodata).
        mask: ``(h, w)`` uint8, 0 clear, 1 cloud, 2 cloud shadow.
        labels: ``(h, w)`` uint8 class ids (see :data:`CLASS_NAMES`).
        nuisance: JSON-ready log of this date's nuisances.
    """

    index: int
    date: pd.Timestamp
    image: NDArray[np.uint16]
    mask: NDArray[np.uint8]
    labels: NDArray[np.uint8]
    nuisance: dict[str, Any]


@dataclass(frozen=True)
class _Plan:
    params: AoiParams
    landscape: Landscape
    events: list[Event]
    draws: list[NuisanceDraw]
    noise: NDArray[np.float32]


def _plan(params: AoiParams) -> _Plan:
    rng = np.random.default_rng(params.seed)
    dates = params.dates
    n_years = dates[-1].year - dates[0].year + 1
    landscape = make_landscape(rng, params.size, n_years, len(CROP_NAMES))
    transform = aoi_transform(params.seed, params.size)
    events, landscape = place_events(rng, landscape, params.months, params.events_per_type, transform)
    draws = draw_nuisances(rng, params.months, params.size)
    return _Plan(params, landscape, events, draws, noise_bank(rng, (params.size, params.size)))


def _frames(plan: _Plan) -> Iterator[Frame]:
    dates = plan.params.dates
    n = len(dates)

    def scene(t: int) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        surface, obj, dryness = state_at(plan.landscape, plan.events, t)
        date = dates[t]
        refl = render_scene(plan.landscape, surface, obj, date.month - 1, date.year - dates[0].year, dryness)
        return refl, SURFACE_LABEL[surface]

    window = {0: scene(0)}
    for t in range(n):
        if t + 1 < n:
            window[t + 1] = scene(t + 1)
        window.pop(t - 2, None)
        prev = window[t - 1 if t > 0 else t + 1][0]
        nxt = window[t + 1 if t + 1 < n else t - 1][0]
        refl, labels = window[t]
        image, mask = apply_nuisances(refl, plan.draws[t], prev, nxt, plan.noise)
        image *= np.float32(1 / SCALE)
        np.rint(image, out=image)
        np.clip(image, 1, 10_000, out=image)
        record = plan.draws[t].to_record(float(np.count_nonzero(mask)) / mask.size)
        yield Frame(t, dates[t], image.astype(np.uint16), mask, labels, record)


def iter_frames(
    seed: int = 0,
    size: int = 1024,
    months: int = 24,
    *,
    start: str | pd.Timestamp = "2018-01-01",
    aoi: str = "aoi_0000",
    events_per_type: int | None = None,
) -> tuple[gpd.GeoDataFrame, Iterator[Frame]]:
    """Plan an AOI and return its events with an iterator over its dates (memory for about three dates).

    Args:
        seed: Random seed.
        size: Image side in pixels (>= 64).
        months: Number of monthly dates (>= 2).
        start: First date, the first day of a month.
        aoi: AOI id.
        events_per_type: Events per type (default ``max(1, round(5 * size / 1024))``: 5 at 1024 px).

    Returns:
        ``(events, frames)``.

    Raises:
        ParameterError: A parameter is out of range.
    """
    params = AoiParams.validate(seed, size, months, start=start, aoi=aoi, events_per_type=events_per_type)
    plan = _plan(params)
    return events_frame(plan.events, params.dates, CRS), _frames(plan)


@dataclass(frozen=True)
class SyntheticAoi:
    """A whole synthetic AOI in memory.

    Attributes:
        params: The generator parameters.
        dates: Monthly dates.
        images: ``(time, 4, h, w)`` uint16 reflectance * 10000, band order B, G, R, NIR.
        masks: ``(time, h, w)`` uint8, 0 clear, 1 cloud, 2 cloud shadow.
        labels: ``(time, h, w)`` uint8 class ids (see :data:`CLASS_NAMES`).
        events: GeoDataFrame of the change events (see :func:`changescope.synthetic.events.events_frame`).
        nuisances: One JSON-ready nuisance record per date.
        landscape: The land cover before any event, with the object tables (crop rotation in ``crops``).
        event_list: The events with their pixel masks and stages.
        crs: CRS of the grid.
        transform: Affine transform of the grid (3 m pixels).
    """

    params: AoiParams
    dates: pd.DatetimeIndex
    images: NDArray[np.uint16]
    masks: NDArray[np.uint8]
    labels: NDArray[np.uint8]
    events: gpd.GeoDataFrame
    nuisances: list[dict[str, Any]]
    landscape: Landscape
    event_list: list[Event]
    crs: str
    transform: Affine

    def to_series(self) -> xr.Dataset:
        """The AOI as a changescope series (``valid`` = mask 0, ``labels`` = class ids, scale 1e-4)."""
        return make_series(
            self.images,
            times=self.dates,
            bands=[BandInfo.from_name(b, scale=SCALE) for b in BANDS],
            crs=self.crs,
            transform=self.transform,
            valid=self.masks == 0,
            labels=self.labels.astype(np.int16),
            classes=dict(enumerate(CLASS_NAMES)),
            sensor="changescope.synthetic",
            attrs={"aoi": self.params.aoi, "seed": self.params.seed},
        )


def generate_aoi(
    seed: int = 0,
    size: int = 1024,
    months: int = 24,
    *,
    start: str | pd.Timestamp = "2018-01-01",
    aoi: str = "aoi_0000",
    events_per_type: int | None = None,
) -> SyntheticAoi:
    """Generate a synthetic AOI in memory (no files).

    Args:
        seed: Random seed; the same parameters give byte-identical arrays.
        size: Image side in pixels (>= 64).
        months: Number of monthly dates (>= 2).
        start: First date, the first day of a month.
        aoi: AOI id.
        events_per_type: Events per type (default ``max(1, round(5 * size / 1024))``: 5 at 1024 px).

    Returns:
        The AOI's arrays, events and nuisance log.

    Raises:
        ParameterError: A parameter is out of range.
    """
    params = AoiParams.validate(seed, size, months, start=start, aoi=aoi, events_per_type=events_per_type)
    plan = _plan(params)
    shape = (params.months, params.size, params.size)
    images = np.empty((params.months, len(BANDS), params.size, params.size), dtype=np.uint16)
    masks = np.empty(shape, dtype=np.uint8)
    labels = np.empty(shape, dtype=np.uint8)
    records = []
    for frame in _frames(plan):
        images[frame.index], masks[frame.index], labels[frame.index] = frame.image, frame.mask, frame.labels
        records.append({"date": frame.date.strftime("%Y-%m-%d"), **frame.nuisance})
    return SyntheticAoi(
        params=params,
        dates=params.dates,
        images=images,
        masks=masks,
        labels=labels,
        events=events_frame(plan.events, params.dates, CRS),
        nuisances=records,
        landscape=plan.landscape,
        event_list=plan.events,
        crs=CRS,
        transform=aoi_transform(params.seed, params.size),
    )
