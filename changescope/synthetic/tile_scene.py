"""Pixels of a synthetic Sentinel-2 tile: one block of one grid at one date, from position-deterministic rules.

Reflectance (per L2A band, see :data:`~changescope.synthetic.tile_spec.L2A_BANDS`) mixes a background and a green
canopy spectrum by the vegetation cover ``fv`` of the surface and month (the phenology tables of
:mod:`~changescope.synthetic.radiometry`; crops follow their crop of the year)::

    surface = background * gain * moisture(month) * (1 - fv) + canopy * fv

Change events (:mod:`~changescope.synthetic.tile_events`) replace the surface inside their polygons from their
month on. Then the nuisances of the date (:class:`DateState`, drawn from the seed and the date index alone):

- a gain per band (a common ``±4 %`` plus ``±1 %`` per band) and haze, additive, strongest at short wavelengths
  (``∝ (490 nm / λ)^1.3``) and varying over 8 km;
- clouds on 65 % of the dates (cover 3-60 %): a cloud field (lattices of 6, 2, 0.6 and 0.15 km) above the
  date's threshold, with an opacity ramp over 0.08 of the field, and the shadows of their thicker parts (the
  field 0.03 above the threshold, shifted by the date's sun offset of 300-900 m) darkening by up to 55 %. The
  fields are evaluated at the 10 m pixel centres; a 20 m or 60 m pixel takes the mean opacity of the 10 m pixels
  it covers, as a sensor integrates its footprint;
- on 20 % of the dates a slanted swath edge: pixels beyond it are no data (0), as in partial tiles;
- sensor noise, uniform, 0.003 reflectance standard deviation.

The ``SCL`` band (20 m) classifies each pixel like the L2A scene classification: 0 no data, 3 cloud shadow,
4 vegetation (``fv >= 0.35``), 5 not vegetated, 6 water, 8 / 9 cloud of medium / high probability, 10 thin cirrus.
A 20 m pixel is cloud or shadow when any of its four 10 m pixels is, so the mask hides every cloudy or shaded
10 m pixel; its 8 neighbours are thin cirrus (a 20 m ring), which hides what bilinear resampling of the 20 m bands
spills beside a cloud. The 60 m bands (B01, B09) can still carry cloud light up to 90 m beyond the mask once
resampled to 10 m, as in real products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.synthetic.landscape import Surface
from changescope.synthetic.radiometry import _CROP_FV, _FV, _MOISTURE
from changescope.synthetic.tile_events import TileEvent, event_masks
from changescope.synthetic.tile_land import LandKeys, derive_key, fbm, ground_at, pixel_uniform, value_noise
from changescope.synthetic.tile_spec import L2A_BANDS, NODATA, TileGrid, TileParams

__all__ = ["DateState", "TileScene", "date_states"]

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

_N = len(Surface)
# background and canopy spectra per surface, bands B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12
_BG = np.zeros((_N, 12), dtype=np.float32)
_BG[Surface.ROOF] = (0.12, 0.13, 0.15, 0.18, 0.19, 0.20, 0.21, 0.22, 0.22, 0.22, 0.26, 0.24)
_BG[Surface.ASPHALT] = (0.08, 0.08, 0.09, 0.10, 0.11, 0.11, 0.12, 0.12, 0.13, 0.13, 0.15, 0.14)
_BG[Surface.CROP] = (0.07, 0.08, 0.11, 0.15, 0.17, 0.19, 0.21, 0.22, 0.23, 0.23, 0.30, 0.26)
_BG[Surface.DECIDUOUS] = (0.04, 0.05, 0.07, 0.09, 0.11, 0.14, 0.16, 0.18, 0.19, 0.19, 0.24, 0.17)
_BG[Surface.CONIFER] = (0.03, 0.035, 0.05, 0.05, 0.07, 0.10, 0.11, 0.12, 0.12, 0.12, 0.15, 0.10)
_BG[Surface.GRASS] = (0.06, 0.08, 0.11, 0.13, 0.16, 0.19, 0.21, 0.22, 0.23, 0.23, 0.30, 0.24)
_BG[Surface.WETLAND] = (0.04, 0.05, 0.06, 0.06, 0.07, 0.08, 0.08, 0.08, 0.08, 0.07, 0.07, 0.05)
_BG[Surface.SOIL] = (0.09, 0.11, 0.15, 0.19, 0.21, 0.23, 0.25, 0.26, 0.27, 0.27, 0.34, 0.30)
_BG[Surface.WATER] = (0.07, 0.06, 0.05, 0.03, 0.025, 0.02, 0.018, 0.015, 0.014, 0.012, 0.006, 0.004)
_BG[Surface.CLEARED] = (0.07, 0.09, 0.12, 0.15, 0.17, 0.20, 0.22, 0.23, 0.24, 0.24, 0.33, 0.28)
_BG[Surface.FLOOD] = (0.09, 0.10, 0.12, 0.11, 0.10, 0.08, 0.07, 0.06, 0.055, 0.05, 0.02, 0.015)
_CANOPY = np.tile(
    np.array((0.03, 0.035, 0.07, 0.035, 0.10, 0.30, 0.40, 0.44, 0.46, 0.44, 0.22, 0.10), np.float32), (_N, 1)
)
_CANOPY[Surface.CONIFER] = (0.02, 0.025, 0.05, 0.025, 0.07, 0.20, 0.26, 0.29, 0.30, 0.29, 0.14, 0.06)
_CANOPY[Surface.WETLAND] = (0.03, 0.035, 0.06, 0.035, 0.09, 0.25, 0.32, 0.35, 0.36, 0.34, 0.18, 0.08)
_CLOUD = np.array((0.50, 0.48, 0.47, 0.47, 0.47, 0.47, 0.47, 0.47, 0.47, 0.40, 0.33, 0.22), dtype=np.float32)
_BAND_INDEX = {b.token: i for i, b in enumerate(L2A_BANDS)}

_CLOUD_CELLS = (6000.0, 2000.0, 600.0, 150.0)
_CLOUD_WEIGHTS = (0.45, 0.3, 0.15, 0.1)
_RAMP = 0.08
_SHADOW_FROM = 0.03
_NOISE = 0.003
_SCL_WATER, _SCL_VEG, _SCL_BARE, _SCL_SHADOW = 6, 4, 5, 3
_SCL_CLOUD_MED, _SCL_CLOUD_HIGH, _SCL_CIRRUS = 8, 9, 10


def _box_mean(values: F32, k: int) -> F32:
    """Mean of each ``k x k`` box, summed in a fixed order (the same result whatever the array's size)."""
    if k == 1:
        return values
    acc = np.zeros((values.shape[0] // k, values.shape[1] // k), dtype=np.float32)
    for i in range(k):
        for j in range(k):
            acc += values[i::k, j::k]
    return acc * np.float32(1.0 / (k * k))


def _box_any(values: NDArray[np.bool_], k: int) -> NDArray[np.bool_]:
    """Whether any pixel of each ``k x k`` box is set."""
    h, w = values.shape[0] // k, values.shape[1] // k
    out: NDArray[np.bool_] = np.any(values.reshape(h, k, w, k), axis=(1, 3))
    return out


@dataclass(frozen=True)
class DateState:
    """The nuisances of one date (drawn from the seed and the date index alone).

    Attributes:
        index: Date index.
        date: The date.
        cover: Target cloud cover (0 = clear).
        threshold: Cloud-field value above which a pixel is cloudy (above 1 when clear).
        shadow_offset: ``(dx, dy)`` metres from a cloud to its shadow.
        gain: Multiplicative gain per L2A band, in :data:`L2A_BANDS` order.
        haze: Haze reflectance at 490 nm.
        edge: ``(cos, sin, d)``: pixels with ``x cos + y sin > d`` (metres) are no data; ``None`` for a full tile.
    """

    index: int
    date: pd.Timestamp
    cover: float
    threshold: float
    shadow_offset: tuple[float, float]
    gain: tuple[float, ...]
    haze: float
    edge: tuple[float, float, float] | None

    def as_record(self) -> dict[str, object]:
        """JSON-ready description of the date."""
        return {
            "date": f"{self.date:%Y-%m-%d}",
            "cloud_cover": round(self.cover, 4),
            "cloud_threshold": round(self.threshold, 6),
            "shadow_offset_m": [round(v, 2) for v in self.shadow_offset],
            "gain": {b.token: round(g, 5) for b, g in zip(L2A_BANDS, self.gain, strict=True)},
            "haze_490nm": round(self.haze, 5),
            "swath_edge": None if self.edge is None else [round(v, 6) for v in self.edge],
        }


def _cloud_key(seed: int, t: int) -> int:
    return derive_key(seed, 0xC10D, t)


def date_states(params: TileParams) -> list[DateState]:
    """The nuisances of every date of a tile (see the module docstring)."""
    extent = params.extent_m
    probe = (np.arange(96, dtype=np.float64) + 0.5) * extent / 96
    states = []
    for t, date in enumerate(params.dates):
        rng = np.random.default_rng([params.seed, 0xDA7E, t])
        cover = 0.0 if rng.random() < 0.35 else float(rng.uniform(0.03, 0.6))
        threshold = 2.0
        if cover > 0:
            field = fbm(_cloud_key(params.seed, t), probe, probe, _CLOUD_CELLS, _CLOUD_WEIGHTS)
            threshold = float(np.quantile(field, 1.0 - cover))
        angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(300.0, 900.0)
        common = rng.uniform(-0.04, 0.04)
        gain = tuple(float(1.0 + common + g) for g in rng.uniform(-0.01, 0.01, len(L2A_BANDS)))
        haze = float(rng.uniform(0.0, 0.03))
        edge = None
        if rng.random() < 0.2:
            a = rng.uniform(-0.25, 0.25)
            edge = (math.cos(a), math.sin(a), float(rng.uniform(0.55, 0.9) * extent))
        offset = (dist * math.cos(angle), dist * math.sin(angle))
        states.append(DateState(t, date, cover, threshold, offset, gain, haze, edge))
    return states


class TileScene:
    """Renders any block of any grid of a tile at any date (see the module docstring).

    Args:
        params: The tile parameters.
        events: The change events (placed by :func:`~changescope.synthetic.tile_events.place_events`).
    """

    def __init__(self, params: TileParams, events: list[TileEvent]) -> None:
        self.params = params
        self.events = events
        self.keys = LandKeys.from_seed(params.seed)
        self.states = date_states(params)

    def surface(self, grid: TileGrid, window: tuple[int, int, int, int], t: int) -> tuple[NDArray[np.uint8], F32, F32]:
        """Surfaces (after the events active at date ``t``), vegetation cover and background brightness."""
        row0, col0, height, width = window
        date = self.states[t].date
        ground = ground_at(self.keys, grid.xs(col0, width), grid.ys(row0, height), date.year - self.params.start.year)
        surface = ground.surface
        active = [ev for ev in self.events if ev.active(t)]
        for ev, rows, cols, mask in event_masks(active, grid, window):
            surface[rows, cols][mask] = ev.to_surface
        month = date.month - 1
        fv = np.where(surface == Surface.CROP, _CROP_FV[ground.crop, month], _FV[surface, month])
        fv *= np.float32(1.0) + np.float32(0.3) * ground.texture
        np.clip(fv, 0.0, 1.0, out=fv)
        return surface, fv, ground.gain * _MOISTURE[month]

    def cloud_fields(self, t: int, grid: TileGrid, window: tuple[int, int, int, int], pad: int = 0) -> tuple[F32, F32]:
        """Cloud field at the 10 m pixels of a window of ``grid``, and at their shadow-casting positions.

        The window is grown by ``pad`` pixels of ``grid`` on every side; both arrays are ``k * (height + 2 pad)``
        by ``k * (width + 2 pad)``, with ``k = resolution / 10``.
        """
        row0, col0, height, width = window
        k = grid.resolution // 10
        fine = TileGrid(10, grid.size * k)
        xs = fine.xs((col0 - pad) * k, (width + 2 * pad) * k)
        ys = fine.ys((row0 - pad) * k, (height + 2 * pad) * k)
        state = self.states[t]
        if state.cover == 0:
            zero = np.zeros((len(ys), len(xs)), dtype=np.float32)
            return zero, zero
        key = _cloud_key(self.params.seed, t)
        dx, dy = state.shadow_offset
        field = fbm(key, xs, ys, _CLOUD_CELLS, _CLOUD_WEIGHTS)
        shadow = fbm(key, xs - dx, ys - dy, _CLOUD_CELLS, _CLOUD_WEIGHTS)
        return field, shadow

    def opacity(self, t: int, grid: TileGrid, window: tuple[int, int, int, int]) -> tuple[F32, F32]:
        """Cloud opacity and shadow strength (in ``[0, 1]``) of a window: means over each pixel's 10 m pixels."""
        cloud, shadow, _ = self._cloud_layers(t, grid, window)
        return cloud, shadow

    def _cloud_layers(
        self,
        t: int,
        grid: TileGrid,
        window: tuple[int, int, int, int],
        scene: tuple[NDArray[np.uint8], F32, NDArray[np.bool_] | None] | None = None,
    ) -> tuple[F32, F32, NDArray[np.uint8] | None]:
        """Cloud opacity, shadow strength and (given ``scene = (surface, fv, nodata)``) the SCL of a window.

        The 10 m cloud fields of a coarse grid's window are ``k^2`` times its pixels (``k = resolution / 10``), so
        they are computed in strips of rows holding about as many 10 m pixels as the window has pixels.
        """
        row0, col0, height, width = window
        k, pad = grid.resolution // 10, int(scene is not None)
        step = max(1, -(-height // (k * k)))
        clouds, shadows, scls = [], [], []
        for r in range(0, height, step):
            rows = slice(r, min(height, r + step))
            n = rows.stop - rows.start
            field, shadow_field = self.cloud_fields(t, grid, (row0 + r, col0, n, width), pad)
            inner = (slice(pad * k, (pad + n) * k), slice(pad * k, (pad + width) * k))
            cloud, shadow = self._opacity(t, k, field[inner], shadow_field[inner])
            clouds.append(cloud)
            shadows.append(shadow)
            if scene is not None:
                surface, fv, nodata = scene
                part = None if nodata is None else nodata[rows]
                scls.append(self._scl(t, k, surface[rows], fv[rows], part, field, shadow_field))
        scl = np.concatenate(scls) if scls else None
        return np.concatenate(clouds), np.concatenate(shadows), scl

    def _opacity(self, t: int, k: int, field: F32, shadow: F32) -> tuple[F32, F32]:
        thr, ramp = np.float32(self.states[t].threshold), np.float32(_RAMP)
        cloud = np.clip((field - thr) / ramp, 0.0, 1.0)
        dark = np.clip((shadow - thr - np.float32(_SHADOW_FROM)) / ramp, 0.0, 1.0)
        return _box_mean(cloud, k), _box_mean(dark, k)

    def nodata(self, t: int, xs: F64, ys: F64) -> NDArray[np.bool_] | None:
        """Pixels beyond the date's swath edge (``None`` when the date covers the whole tile)."""
        edge = self.states[t].edge
        if edge is None:
            return None
        cos, sin, dist = edge
        out: NDArray[np.bool_] = xs[None, :] * cos + ys[:, None] * sin > dist
        return out

    def render(
        self, grid: TileGrid, window: tuple[int, int, int, int], t: int, tokens: tuple[str, ...]
    ) -> dict[str, NDArray[np.uint16] | NDArray[np.uint8]]:
        """The stored values of the bands ``tokens`` (and ``SCL``) of one window of ``grid`` at date ``t``.

        Args:
            grid: The native grid of the bands.
            window: ``(row0, col0, height, width)`` in pixels of ``grid``.
            t: Date index.
            tokens: L2A band tokens on this grid, and ``"SCL"`` (on the 20 m grid).

        Returns:
            Token to ``(height, width)`` array: uint16 reflectance x 10000 (0 = no data), uint8 SCL classes.
        """
        row0, col0, height, width = window
        xs, ys = grid.xs(col0, width), grid.ys(row0, height)
        state = self.states[t]
        surface, fv, background = self.surface(grid, window, t)
        nodata = self.nodata(t, xs, ys)
        scene = (surface, fv, nodata) if "SCL" in tokens else None
        cloud, shadow, scl = self._cloud_layers(t, grid, window, scene)
        haze_field = np.float32(0.5) + value_noise(derive_key(self.params.seed, 0x4A2E, t), xs, ys, 8000.0)
        dark = np.float32(1.0) - np.float32(0.55) * shadow
        out: dict[str, NDArray[np.uint16] | NDArray[np.uint8]] = {}
        for token in tokens:
            if token == "SCL" and scl is not None:
                out[token] = scl
                continue
            b = _BAND_INDEX[token]
            bg = _BG[:, b][surface] * background
            refl = bg + (_CANOPY[:, b][surface] - bg) * fv
            haze = np.float32(state.haze * (492.4 / L2A_BANDS[b].wavelength) ** 1.3)
            refl = refl * np.float32(state.gain[b]) * dark + haze * haze_field
            refl += (_CLOUD[b] * (np.float32(0.8) + np.float32(0.4) * cloud) - refl) * cloud
            noise = pixel_uniform(derive_key(self.params.seed, 0x2015E, t, b), row0, col0, height, width)
            refl += (noise - np.float32(0.5)) * np.float32(_NOISE * math.sqrt(12.0))
            dn = np.clip(np.rint(refl * np.float32(10000.0)), 1, 65535).astype(np.uint16)
            if nodata is not None:
                dn[nodata] = NODATA
            out[token] = dn
        return out

    def _scl(
        self,
        t: int,
        k: int,
        surface: NDArray[np.uint8],
        fv: F32,
        nodata: NDArray[np.bool_] | None,
        field: F32,
        shadow: F32,
    ) -> NDArray[np.uint8]:
        """Scene classification of a window from its surfaces and the cloud fields of its 10 m pixels.

        The fields cover the window grown by one pixel of its grid on every side (for the cirrus ring).
        """
        height, width = surface.shape
        scl = np.where(fv >= np.float32(0.35), np.uint8(_SCL_VEG), np.uint8(_SCL_BARE)).astype(np.uint8)
        scl[(surface == Surface.WATER) | (surface == Surface.FLOOD)] = _SCL_WATER
        if self.states[t].cover > 0:
            thr = np.float32(self.states[t].threshold)
            cloudy = _box_any(field > thr, k)
            shaded = _box_any(shadow > thr + np.float32(_SHADOW_FROM), k)
            either = cloudy | shaded
            ring = np.zeros((height, width), dtype=bool)
            for i in range(3):
                for j in range(3):
                    ring |= either[i : i + height, j : j + width]
            inner = (slice(1, 1 + height), slice(1, 1 + width))
            scl[ring] = _SCL_CIRRUS
            scl[shaded[inner]] = _SCL_SHADOW
            scl[cloudy[inner]] = _SCL_CLOUD_MED
            scl[_box_any(field > thr + np.float32(0.05), k)[inner]] = _SCL_CLOUD_HIGH
        if nodata is not None:
            scl[nodata] = NODATA
        return scl

    def change_month(self, grid: TileGrid, window: tuple[int, int, int, int], dtype: type) -> NDArray[np.generic]:
        """Truth of a window: 1 + the date index of the event covering each pixel, 0 where nothing changes."""
        out = np.zeros(window[2:], dtype=dtype)
        for ev, rows, cols, mask in event_masks(self.events, grid, window):
            out[rows, cols][mask] = ev.start + 1
        return out
