"""Change events of a synthetic tile: placed once for the whole tile, rasterised block by block.

Events are placed before any pixel is written, from a generator seeded by the seed alone, on a coarse map of the
land cover (100 m spacing, or 64 points per side on small tiles). About ``events_per_km2`` events per km², the
types taken in turn:

- ``deforestation``: a forest stand (irregular polygon, radius 60-300 m) becomes a clearing (bare soil);
- ``construction``: a meadow or bare plot (rotated rectangle, 60-300 m) becomes buildings;
- ``farmland_to_builtup``: a cropland plot (rotated rectangle) becomes buildings;
- ``flooding``: cropland, meadow or wetland (irregular polygon) becomes turbid flood water; on half of the events
  the water recedes 1-3 months later (``end_month``) and the land is as before.

An event is kept where at least 80 % of the coarse map inside its bounding box (and its centre) has a surface of
its type, at least 16 pixel centres of the 10 m grid fall inside its polygon, and its box (grown by 30 m) touches
no other event. Its month (0-based date index ``start``) is drawn uniformly from the fourth date on (from
``min(3, months - 1)``); the change is visible from that date. A pixel of any grid belongs to an event when its
centre lies inside the polygon (``shapely.contains_xy``), so the polygons in the truth file rasterise back to the
changed pixels exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray
from shapely.geometry import Polygon

from changescope.synthetic.landscape import CLASS_NAMES, SURFACE_LABEL, Surface
from changescope.synthetic.tile_land import LandKeys, ground_at
from changescope.synthetic.tile_spec import CRS, ORIGIN, TileGrid, TileParams
from changescope.types import EventType

__all__ = ["TILE_EVENT_TYPES", "TileEvent", "event_masks", "events_frame", "place_events"]

TILE_EVENT_TYPES: tuple[EventType, ...] = ("deforestation", "construction", "farmland_to_builtup", "flooding")
"""The change types of a synthetic tile, in placement order."""

_FROM: dict[EventType, tuple[Surface, ...]] = {
    "deforestation": (Surface.DECIDUOUS, Surface.CONIFER),
    "construction": (Surface.GRASS, Surface.SOIL),
    "farmland_to_builtup": (Surface.CROP,),
    "flooding": (Surface.CROP, Surface.GRASS, Surface.WETLAND),
}
_TO: dict[EventType, Surface] = {
    "deforestation": Surface.CLEARED,
    "construction": Surface.ROOF,
    "farmland_to_builtup": Surface.ROOF,
    "flooding": Surface.FLOOD,
}
_GAP_M = 30.0
_MIN_PIXELS = 16
_TRIES = 400


@dataclass(frozen=True)
class TileEvent:
    """One change event of a tile.

    Attributes:
        event_id: Number of the event.
        type: Event type.
        start: Index of the first date showing the change.
        end: Index of the first date after a receding flood (``None`` when the change stays).
        from_surface: Majority surface before the event (on the coarse map).
        to_surface: Surface of the event's pixels from ``start`` on (until ``end``).
        polygon: Outline in the tile CRS.
        n_pixels: 10 m pixel centres inside the polygon.
    """

    event_id: int
    type: EventType
    start: int
    end: int | None
    from_surface: int
    to_surface: int
    polygon: Polygon
    n_pixels: int

    def active(self, t: int) -> bool:
        """Whether the event's pixels show the change at date index ``t``."""
        return self.start <= t and (self.end is None or t < self.end)


def _outline(rng: np.random.Generator, kind: EventType, cx: float, cy: float) -> Polygon:
    """A rotated rectangle (buildings) or an irregular 12-gon (clearings, floods) around ``(cx, cy)``, CRS metres."""
    angle = rng.uniform(0.0, math.pi)
    if kind in ("construction", "farmland_to_builtup"):
        half_w, half_h = rng.uniform(30.0, 150.0, 2)
        corners = np.array([(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)])
    else:
        theta = np.linspace(0.0, 2 * math.pi, 12, endpoint=False)
        radius = rng.uniform(60.0, 300.0) * rng.uniform(0.55, 1.0, 12)
        corners = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    cos, sin = math.cos(angle), math.sin(angle)
    xy = np.stack([cx + corners[:, 0] * cos - corners[:, 1] * sin, cy + corners[:, 0] * sin + corners[:, 1] * cos])
    return Polygon(np.round(xy.T, 2))


def _centres(
    grid: TileGrid, bounds: tuple[float, float, float, float], window: tuple[int, int, int, int] | None = None
) -> tuple[slice, slice, NDArray[np.float64]]:
    """Rows and columns of ``grid`` (inside ``window`` when given) whose pixel centres may lie in ``bounds`` (CRS).

    Returns:
        The row and column slices (absolute) and the ``(2, rows, cols)`` CRS coordinates ``X, Y`` of their centres.
    """
    res = grid.resolution
    left, bottom, right, top = bounds
    r_lo, c_lo, r_hi, c_hi = (0, 0, grid.size, grid.size)
    if window is not None:
        r_lo, c_lo, r_hi, c_hi = window[0], window[1], window[0] + window[2], window[1] + window[3]
    c0 = max(c_lo, math.floor((left - ORIGIN[0]) / res - 0.5))
    c1 = max(c0, min(c_hi, math.ceil((right - ORIGIN[0]) / res + 0.5)))
    r0 = max(r_lo, math.floor((ORIGIN[1] - top) / res - 0.5))
    r1 = max(r0, min(r_hi, math.ceil((ORIGIN[1] - bottom) / res + 0.5)))
    xs = ORIGIN[0] + grid.xs(c0, c1 - c0)
    ys = ORIGIN[1] - grid.ys(r0, r1 - r0)
    return slice(r0, r1), slice(c0, c1), np.stack(np.meshgrid(xs, ys))


def place_events(params: TileParams) -> list[TileEvent]:
    """Place the change events of a tile (see the module docstring); the same parameters give the same events."""
    extent = params.extent_m
    n_events = round(params.events_per_km2 * (extent / 1000.0) ** 2)
    if n_events == 0:
        return []
    rng = np.random.default_rng([params.seed, 0xE7E7])
    step = min(100.0, extent / 64)
    coarse: NDArray[np.float64] = (np.arange(int(extent // step), dtype=np.float64) + 0.5) * step
    keys = LandKeys.from_seed(params.seed)
    land = np.concatenate([ground_at(keys, coarse, coarse[i : i + 256], 0).surface for i in range(0, len(coarse), 256)])
    first = min(3, params.months - 1)
    grid = params.grid(10)
    allowed_of = {kind: np.isin(land, [int(s) for s in _FROM[kind]]) for kind in TILE_EVENT_TYPES}
    boxes = np.empty((0, 4))
    events: list[TileEvent] = []
    for k in range(n_events):
        kind = TILE_EVENT_TYPES[k % len(TILE_EVENT_TYPES)]
        allowed = allowed_of[kind]
        for _ in range(_TRIES):
            ci, cj = (int(v) for v in rng.integers(0, land.shape[0], 2))
            polygon = _outline(rng, kind, ORIGIN[0] + coarse[cj], ORIGIN[1] - coarse[ci])
            left, bottom, right, top = polygon.bounds
            inside = (left >= ORIGIN[0]) & (right <= ORIGIN[0] + extent) & (bottom >= ORIGIN[1] - extent)
            if not (allowed[ci, cj] and inside and top <= ORIGIN[1]):
                continue
            grown = np.array([left - _GAP_M, bottom - _GAP_M, right + _GAP_M, top + _GAP_M])
            hits = (
                (boxes[:, 0] < grown[2])
                & (boxes[:, 2] > grown[0])
                & (boxes[:, 1] < grown[3])
                & (boxes[:, 3] > grown[1])
            )
            if hits.any():
                continue
            rows = slice(math.ceil((ORIGIN[1] - top) / step - 0.5), math.floor((ORIGIN[1] - bottom) / step - 0.5) + 1)
            cols = slice(math.ceil((left - ORIGIN[0]) / step - 0.5), math.floor((right - ORIGIN[0]) / step - 0.5) + 1)
            box = allowed[rows, cols]
            if box.size and box.mean() < 0.8:
                continue
            _, _, xy = _centres(grid, polygon.bounds)
            n_pixels = int(shapely.contains_xy(polygon, xy[0], xy[1]).sum())
            if n_pixels < _MIN_PIXELS:
                continue
            start = int(rng.integers(first, params.months))
            end = None
            if kind == "flooding" and rng.random() < 0.5:
                end = start + int(rng.integers(1, 4))
                end = end if end < params.months else None
            patch = land[rows, cols][box] if box.any() else land[ci : ci + 1, cj]
            from_surface = int(np.bincount(patch).argmax())
            events.append(TileEvent(len(events), kind, start, end, from_surface, int(_TO[kind]), polygon, n_pixels))
            boxes = np.vstack([boxes, [left, bottom, right, top]])
            break
    return events


def event_masks(
    events: list[TileEvent], grid: TileGrid, window: tuple[int, int, int, int]
) -> Iterator[tuple[TileEvent, slice, slice, NDArray[np.bool_]]]:
    """The events that cover pixels of a window of ``grid``, with their pixels.

    Args:
        events: The tile's events.
        grid: The grid of the window.
        window: ``(row0, col0, height, width)``.

    Yields:
        ``(event, rows, cols, mask)``: row and column slices relative to the window and the pixels of the event in
        that sub-window (pixel centres inside its polygon).
    """
    row0, col0, height, width = window
    res = grid.resolution
    x0, y0 = ORIGIN[0] + col0 * res, ORIGIN[1] - row0 * res
    x1, y1 = x0 + width * res, y0 - height * res
    for ev in events:
        left, bottom, right, top = ev.polygon.bounds
        if left >= x1 or right <= x0 or bottom >= y0 or top <= y1:
            continue
        rows, cols, xy = _centres(grid, ev.polygon.bounds, window)
        mask = shapely.contains_xy(ev.polygon, xy[0], xy[1])
        if mask.any():
            yield ev, slice(rows.start - row0, rows.stop - row0), slice(cols.start - col0, cols.stop - col0), mask


def events_frame(events: list[TileEvent], dates: pd.DatetimeIndex) -> gpd.GeoDataFrame:
    """The events as a GeoDataFrame (one row per event, polygons in the tile CRS).

    Columns: ``event_id``, ``type``, ``month`` (first date showing the change), ``month_index`` (its 0-based
    date index), ``end_month`` (first date after a receding flood, NaT otherwise), ``from_class`` and ``to_class``
    (DynamicEarthNet class names, :data:`~changescope.synthetic.landscape.CLASS_NAMES`), ``n_pixels`` (10 m
    pixels) and ``geometry``.
    """
    return gpd.GeoDataFrame(
        {
            "event_id": pd.Series([ev.event_id for ev in events], dtype="int64"),
            "type": pd.Series([ev.type for ev in events], dtype="object"),
            "month": pd.DatetimeIndex([dates[ev.start] for ev in events]).as_unit("ns"),
            "month_index": pd.Series([ev.start for ev in events], dtype="int64"),
            "end_month": pd.DatetimeIndex([pd.NaT if ev.end is None else dates[ev.end] for ev in events]).as_unit("ns"),
            "from_class": pd.Series([CLASS_NAMES[SURFACE_LABEL[ev.from_surface]] for ev in events], dtype="object"),
            "to_class": pd.Series([CLASS_NAMES[SURFACE_LABEL[ev.to_surface]] for ev in events], dtype="object"),
            "n_pixels": pd.Series([ev.n_pixels for ev in events], dtype="int64"),
        },
        geometry=[ev.polygon for ev in events],
        crs=CRS,
    )
