"""Semantic change events: where, when and how the land cover of a synthetic AOI changes.

Each event covers one connected region (its polygon) where every pixel had an eligible surface before, and no two
events overlap or touch (3 px apart at least). Its ``month`` (index ``start``) is drawn uniformly among the dates
from the fourth on (from ``min(3, months - 1)``), and is the first date the change is visible in the images.
What each type does to the labels inside its polygon (class ids as in
:data:`~changescope.synthetic.landscape.CLASS_NAMES`):

- ``deforestation``: forest -> **soil** (a clearing) from ``month``; on half of the events the clearing becomes
  **agriculture** (a new parcel with its own crop rotation) 2-6 months later, at ``end_month``.
- ``construction``: meadow or bare soil -> **impervious** from ``month``: a new block of buildings on paved ground
  (60 %) or a new road strip 3-6 px wide (40 %).
- ``flooding``: cropland, meadow, soil or wetland near water -> **water** (turbid flood water) from ``month``; on
  60 % of the events the water recedes 1-4 months later, at ``end_month``, and the land and its labels return to
  what they were.
- ``drought``: cropland, meadow or deciduous forest dries out gradually: from ``month`` the dryness rises linearly
  over 3-5 months (NIR down, red up) and reaches 1 at ``end_month``. The labels stay as they were until
  ``end_month`` and are **soil** from ``end_month`` on (the vegetation is dead). ``end_month`` is never after the
  last date.
- ``farmland_to_builtup``: agriculture -> **impervious** from ``month`` (a new block of buildings on paved ground).

``end_month`` is empty (NaT) for events with a single stage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import geopandas as gpd
import numpy as np
import pandas as pd
from affine import Affine
from numpy.typing import NDArray
from scipy import ndimage
from shapely.geometry import Polygon

from changescope.synthetic.fields import mask_to_polygon, rotated_coords, star_mask
from changescope.synthetic.landscape import (
    CLASS_NAMES,
    N_VARIANTS,
    SURFACE_LABEL,
    Landscape,
    Surface,
    building_pattern,
    rotate_crops,
)
from changescope.types import EventType

__all__ = ["EVENT_TYPES", "Event", "EventType", "Stage", "events_frame", "place_events", "state_at"]

EVENT_TYPES: tuple[EventType, ...] = ("deforestation", "construction", "flooding", "drought", "farmland_to_builtup")
"""The semantic change types, in placement order."""

_ELIGIBLE: dict[EventType, tuple[Surface, ...]] = {
    "deforestation": (Surface.DECIDUOUS, Surface.CONIFER),
    "construction": (Surface.GRASS, Surface.SOIL),
    "flooding": (Surface.CROP, Surface.GRASS, Surface.SOIL, Surface.WETLAND),
    "drought": (Surface.CROP, Surface.GRASS, Surface.DECIDUOUS),
    "farmland_to_builtup": (Surface.CROP,),
}
_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Stage:
    """The state of an event's pixels from one date on.

    Attributes:
        month: Index of the first date in this state.
        surface: Window-shaped :class:`Surface` values (used inside the event mask only).
        obj: Window-shaped object ids.
    """

    month: int
    surface: NDArray[np.uint8]
    obj: NDArray[np.int32]


@dataclass(frozen=True)
class Event:
    """One semantic change event (see the module docstring for the rules of each type).

    Attributes:
        event_id: Number of the event in the AOI.
        type: Event type.
        y0: First row of the event window.
        x0: First column of the event window.
        mask: Boolean pixels of the event inside its window.
        start: Index of the first date the change is visible.
        end: Index of the date of the last stage (``None`` for single-stage events).
        stages: The successive states of the pixels, by date.
        from_class: Label class id before the event (majority inside the mask).
        to_class: Label class id the pixels change to first (at ``start``; for droughts at ``end``).
        end_class: Majority label class id from ``end`` on (``None`` for single-stage events; for a receding
            flood, the class before the flood).
        polygon: Outline of ``mask`` in the AOI CRS.
    """

    event_id: int
    type: EventType
    y0: int
    x0: int
    mask: NDArray[np.bool_]
    start: int
    end: int | None
    stages: tuple[Stage, ...]
    from_class: int
    to_class: int
    end_class: int | None
    polygon: Polygon

    @property
    def window(self) -> tuple[slice, slice]:
        """Row and column slices of the event window in the AOI."""
        h, w = self.mask.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def dryness(self, t: int) -> float:
        """Drought dryness at date index ``t``: 0 before ``start``, rising linearly to 1 at ``end``."""
        if self.type != "drought" or t < self.start:
            return 0.0
        end = self.start if self.end is None else self.end
        return 1.0 if t >= end else (t - self.start + 1) / (end - self.start + 1)


class _Objects:
    """Appends objects (brightness, variant, crop rotation) created by events to a landscape's tables."""

    def __init__(self, landscape: Landscape, rng: np.random.Generator) -> None:
        self.landscape = landscape
        self.rng = rng
        self.parts: list[tuple[NDArray[np.float32], NDArray[np.int8], NDArray[np.int8]]] = []
        self.count = int(landscape.obj_gain.shape[0])

    def add(self, n: int) -> int:
        gain = self.rng.uniform(0.9, 1.1, n).astype(np.float32)
        variant = self.rng.integers(0, N_VARIANTS, n).astype(np.int8)
        crops = rotate_crops(self.rng, n, self.landscape.crops.shape[1], self.landscape.n_crops)
        self.parts.append((gain, variant, crops))
        first, self.count = self.count, self.count + n
        return first

    def extended(self) -> Landscape:
        ls = self.landscape
        if not self.parts:
            return ls
        return replace(
            ls,
            obj_gain=np.concatenate([ls.obj_gain, *(p[0] for p in self.parts)]),
            obj_variant=np.concatenate([ls.obj_variant, *(p[1] for p in self.parts)]),
            crops=np.concatenate([ls.crops, *(p[2] for p in self.parts)]),
        )


def _shape(rng: np.random.Generator, kind: EventType, radius: float) -> tuple[NDArray[np.bool_], bool]:
    """Candidate footprint (a centred square mask) and whether it is a road strip."""
    if kind not in ("construction", "farmland_to_builtup"):
        return star_mask(rng, radius), False
    road = kind == "construction" and rng.random() < 0.4
    half = int(np.ceil(1.7 * radius))
    u, v = rotated_coords(2 * half + 1, 2 * half + 1, rng.uniform(0, np.pi), y0=-half - 0.5, x0=-half - 0.5)
    if road:
        along, across = 1.6 * radius, rng.uniform(1.5, 3.0)
    else:
        along, across = radius * rng.uniform(0.7, 1.0), radius * rng.uniform(0.45, 0.8)
    return (np.abs(u) <= along) & (np.abs(v) <= across), road


def _footprint(
    rng: np.random.Generator, kind: EventType, centre: tuple[int, int], radius: float, free: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], int, int, bool] | None:
    """Clip a candidate footprint to the free eligible pixels; ``(mask, y0, x0, road)`` or ``None`` if unusable."""
    cand, road = _shape(rng, kind, radius)
    half = cand.shape[0] // 2
    size = free.shape[0]
    cy, cx = centre
    y0, x0 = max(0, cy - half), max(0, cx - half)
    y1, x1 = min(size, cy + half + 1), min(size, cx + half + 1)
    cand = cand[y0 - (cy - half) : y1 - (cy - half), x0 - (cx - half) : x1 - (cx - half)]
    ok = free[y0:y1, x0:x1]
    mask = ndimage.binary_opening(cand & ok, structure=_CROSS)
    labelled, _ = ndimage.label(mask, structure=_CROSS)
    keep = labelled[cy - y0, cx - x0]
    if keep == 0:
        return None
    mask = ndimage.binary_fill_holes(labelled == keep)
    if (mask & ~ok).any() or mask.sum() < max(16, 0.4 * cand.sum()):
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    mask = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return mask, y0 + int(rows[0]), x0 + int(cols[0]), road


def _stages(
    rng: np.random.Generator,
    kind: EventType,
    objs: _Objects,
    window: tuple[int, int, int, int],
    base: tuple[NDArray[np.uint8], NDArray[np.int32]],
    road: bool,
    months: tuple[int, int],
) -> tuple[int, int | None, list[Stage]]:
    """Draw the dates and successive states of an event: ``(start, end, stages)``."""
    y0, x0, h, w = window
    first, n_months = months
    start = int(rng.integers(first, n_months))

    def full(surface: Surface, obj: int = 0) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
        return np.full((h, w), int(surface), dtype=np.uint8), np.full((h, w), obj, dtype=np.int32)

    if kind == "deforestation":
        stages = [Stage(start, *full(Surface.CLEARED, objs.add(1)))]
        k = int(rng.integers(2, 7))
        if rng.random() < 0.5 and start + k < n_months:
            stages.append(Stage(start + k, *full(Surface.CROP, objs.add(1))))
            return start, start + k, stages
        return start, None, stages
    if kind in ("construction", "farmland_to_builtup"):
        if road:
            return start, None, [Stage(start, *full(Surface.ASPHALT))]
        u, v = rotated_coords(h, w, rng.uniform(0, np.pi / 2), y0=y0, x0=x0)
        pattern, lot, n_lots = building_pattern(
            rng, u, v, block=rng.uniform(14.0, 22.0), street=2.0, yard=Surface.ASPHALT, park_fraction=0.0
        )
        first_lot = objs.add(n_lots)
        obj = np.where(pattern == Surface.ROOF, first_lot + lot, 0).astype(np.int32)
        return start, None, [Stage(start, pattern, obj)]
    if kind == "flooding":
        stages = [Stage(start, *full(Surface.FLOOD))]
        k = int(rng.integers(1, 5))
        if rng.random() < 0.6 and start + k < n_months:
            stages.append(Stage(start + k, base[0], base[1]))
            return start, start + k, stages
        return start, None, stages
    # drought: starts at least one date before the last so that it can be gradual
    start = int(rng.integers(min(first, n_months - 2), n_months - 1)) if n_months > 2 else 1
    end = min(start + int(rng.integers(3, 6)), n_months - 1)
    return start, end, [Stage(end, *full(Surface.SOIL, objs.add(1)))]


def place_events(
    rng: np.random.Generator,
    landscape: Landscape,
    n_months: int,
    per_type: int,
    transform: Affine,
) -> tuple[list[Event], Landscape]:
    """Place ``per_type`` non-overlapping events of each type on a landscape.

    Types take turns, so that each gets its share of space. A placement tries up to 80 random centres among the
    eligible pixels (for flooding: within ``max(8, size/20)`` px of water when there is water); an event that finds
    no room is skipped, so small AOIs may hold fewer events. Event radii are ``min(12, size/16)`` to
    ``min(36, size/8)`` px (36 to 108 m at 3 m): physical sizes, whatever the AOI size.

    Args:
        rng: Random generator.
        landscape: The land cover before any event.
        n_months: Number of dates.
        per_type: Events to place per type.
        transform: Affine transform of the AOI (for the polygons).

    Returns:
        ``(events, landscape)``: the events, and the landscape with the objects the events create appended.
    """
    size = landscape.size
    base = landscape.surface
    first = min(3, n_months - 1)
    objs = _Objects(landscape, rng)
    occupied = np.zeros(base.shape, dtype=bool)
    water = base == Surface.WATER
    near_water = ndimage.distance_transform_edt(~water) < max(8.0, size / 20) if water.any() else water
    eligible = {kind: np.isin(base, np.array(_ELIGIBLE[kind], dtype=np.uint8)) for kind in EVENT_TYPES}
    candidates = {kind: np.flatnonzero(eligible[kind]) for kind in EVENT_TYPES}
    flood_near = np.flatnonzero(eligible["flooding"] & near_water)
    if flood_near.size:
        candidates["flooding"] = flood_near
    r_lo, r_hi = min(12.0, size / 16), min(36.0, size / 8)
    events: list[Event] = []
    for _ in range(per_type):
        for kind in EVENT_TYPES:
            pool = candidates[kind]
            for _attempt in range(80 if pool.size else 0):
                cy, cx = divmod(int(pool[rng.integers(pool.size)]), size)
                if occupied[cy, cx]:
                    continue
                found = _footprint(rng, kind, (cy, cx), rng.uniform(r_lo, r_hi), eligible[kind] & ~occupied)
                if found is None:
                    continue
                mask, y0, x0, road = found
                h, w = mask.shape
                poly = mask_to_polygon(mask, transform * Affine.translation(x0, y0))
                if poly is None:
                    continue
                win = (slice(y0, y0 + h), slice(x0, x0 + w))
                base_win = (base[win].copy(), landscape.obj[win].copy())
                start, end, stages = _stages(rng, kind, objs, (y0, x0, h, w), base_win, road, (first, n_months))
                before = SURFACE_LABEL[base_win[0][mask]]
                first_after = SURFACE_LABEL[stages[0].surface[mask]]
                last_after = SURFACE_LABEL[stages[-1].surface[mask]]
                events.append(
                    Event(
                        event_id=len(events),
                        type=kind,
                        y0=y0,
                        x0=x0,
                        mask=mask,
                        start=start,
                        end=end,
                        stages=tuple(stages),
                        from_class=int(np.bincount(before).argmax()),
                        to_class=int(np.bincount(first_after).argmax()),
                        end_class=None if end is None else int(np.bincount(last_after).argmax()),
                        polygon=poly,
                    )
                )
                _occupy(occupied, mask, y0, x0, margin=3)
                break
    return events, objs.extended()


def _occupy(occupied: NDArray[np.bool_], mask: NDArray[np.bool_], y0: int, x0: int, margin: int) -> None:
    """Mark an event mask, grown by ``margin`` px, as taken."""
    size_y, size_x = occupied.shape
    h, w = mask.shape
    py0, px0 = max(0, y0 - margin), max(0, x0 - margin)
    py1, px1 = min(size_y, y0 + h + margin), min(size_x, x0 + w + margin)
    local = np.zeros((py1 - py0, px1 - px0), dtype=bool)
    local[y0 - py0 : y0 - py0 + h, x0 - px0 : x0 - px0 + w] = mask
    occupied[py0:py1, px0:px1] |= ndimage.binary_dilation(local, iterations=margin)


def state_at(
    landscape: Landscape, events: list[Event], t: int
) -> tuple[NDArray[np.uint8], NDArray[np.int32], NDArray[np.float32] | None]:
    """The surfaces, objects and drought dryness of every pixel at date index ``t``.

    Args:
        landscape: The land cover before any event.
        events: The AOI's events.
        t: Date index.

    Returns:
        ``(surface, obj, dryness)``; ``dryness`` is ``None`` when no drought is under way.
    """
    surface = landscape.surface.copy()
    obj = landscape.obj.copy()
    dryness: NDArray[np.float32] | None = None
    for ev in events:
        win = ev.window
        current = [st for st in ev.stages if st.month <= t]
        if current:
            st = current[-1]
            surface[win][ev.mask] = st.surface[ev.mask]
            obj[win][ev.mask] = st.obj[ev.mask]
        d = ev.dryness(t)
        if d > 0:
            if dryness is None:
                dryness = np.zeros(surface.shape, dtype=np.float32)
            dryness[win][ev.mask] = d
    return surface, obj, dryness


def events_frame(events: list[Event], dates: pd.DatetimeIndex, crs: str) -> gpd.GeoDataFrame:
    """The events as a GeoDataFrame (one row per event, polygons in ``crs``).

    Columns: ``event_id``, ``type``, ``month`` (first date the change is visible), ``end_month`` (date of the
    last stage, NaT for single-stage events), ``from_class`` (label class name before), ``to_class`` (the class
    the labels change to first: at ``month``, or at ``end_month`` for droughts), ``end_class`` (the class from
    ``end_month`` on, empty for single-stage events), ``n_pixels`` and ``geometry``.

    Args:
        events: The events.
        dates: The AOI dates (event months index into them).
        crs: CRS of the polygons.

    Returns:
        The GeoDataFrame.
    """
    return gpd.GeoDataFrame(
        {
            "event_id": pd.Series([ev.event_id for ev in events], dtype="int64"),
            "type": pd.Series([ev.type for ev in events], dtype="object"),
            "month": pd.DatetimeIndex([dates[ev.start] for ev in events]).as_unit("ns"),
            "end_month": pd.DatetimeIndex([pd.NaT if ev.end is None else dates[ev.end] for ev in events]).as_unit("ns"),
            "from_class": pd.Series([CLASS_NAMES[ev.from_class] for ev in events], dtype="object"),
            "to_class": pd.Series([CLASS_NAMES[ev.to_class] for ev in events], dtype="object"),
            "end_class": pd.Series(
                [None if ev.end_class is None else CLASS_NAMES[ev.end_class] for ev in events], dtype="object"
            ),
            "n_pixels": pd.Series([int(ev.mask.sum()) for ev in events], dtype="int64"),
        },
        geometry=[ev.polygon for ev in events],
        crs=crs,
    )
