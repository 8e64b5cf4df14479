"""The land-cover map of a synthetic AOI: surfaces, objects (parcels, stands, lots) and textures.

A landscape is built from quantiles of random fields, so every AOI, whatever its seed or size, holds every
surface in similar proportions:

- **water**: lakes (the lowest 5 % of a smooth "elevation" field) and, from 128 px up, a meandering river;
- **wetlands**: a ring around the lakes (the next 4 % of elevation);
- **forest**: the highest 26 % of elevation, cut into Voronoi stands, each deciduous (65 %) or coniferous;
- **town**: a noisy disc (radius 16 % of the side) with a rotated street grid, lots with one building each
  (roofs of three kinds) and a few parks;
- **farmland**: everything else, cut into rotated strips of rectangular parcels separated by 1 px grass margins;
  a parcel is cropland (72 %), meadow (16 %) or bare soil (12 %);
- **roads**: two or three gently curving roads, 3-6 px (9-18 m) wide, one through the town centre.

No snow or ice is generated (class 6 never occurs). Every pixel is labelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from changescope.synthetic.fields import fractal_noise, rotated_coords, smooth_noise

__all__ = [
    "CLASS_NAMES",
    "SURFACE_LABEL",
    "Landscape",
    "Surface",
    "building_pattern",
    "make_landscape",
]

CLASS_NAMES: tuple[str, ...] = (
    "impervious surface",
    "agriculture",
    "forest & other vegetation",
    "wetlands",
    "soil",
    "water",
    "snow & ice",
)
"""DynamicEarthNet class names; the class id is the index (and the band of the one-hot label files)."""


class Surface(IntEnum):
    """Surface kinds the renderer knows; finer than the label classes (see :data:`SURFACE_LABEL`)."""

    ROOF = 0
    ASPHALT = 1
    CROP = 2
    DECIDUOUS = 3
    CONIFER = 4
    GRASS = 5
    WETLAND = 6
    SOIL = 7
    WATER = 8
    CLEARED = 9
    FLOOD = 10


SURFACE_LABEL: NDArray[np.uint8] = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 4, 5], dtype=np.uint8)
"""Label class id of each :class:`Surface` (roofs and asphalt are impervious, meadows are other vegetation, ...)."""

N_VARIANTS = 3
"""Number of spectral variants per surface (e.g. red-tile, grey and bright roofs)."""


@dataclass(frozen=True)
class Landscape:
    """The static land cover of an AOI before any change event.

    Objects are the units that share a brightness, a spectral variant and, for cropland, a crop rotation:
    parcels, forest stands, town lots and the surfaces that events create. Object 0 is "no object".

    Attributes:
        surface: ``(h, w)`` uint8 :class:`Surface` of every pixel.
        obj: ``(h, w)`` int32 object id of every pixel.
        obj_gain: ``(n_obj,)`` float32 brightness factor of each object (about 0.9-1.1).
        obj_variant: ``(n_obj,)`` int8 spectral variant of each object, in ``[0, N_VARIANTS)``.
        crops: ``(n_obj, n_years)`` int8 crop index of each object per calendar year (cropland only; 0 elsewhere).
        texture: ``(2, h, w)`` float32 fine (sigma 1 px) and medium (sigma ``size/80`` px) texture fields.
        n_crops: Number of crop types the rotation draws from.
    """

    surface: NDArray[np.uint8]
    obj: NDArray[np.int32]
    obj_gain: NDArray[np.float32]
    obj_variant: NDArray[np.int8]
    crops: NDArray[np.int8]
    texture: NDArray[np.float32]
    n_crops: int

    @property
    def size(self) -> int:
        """Side of the AOI in pixels."""
        return int(self.surface.shape[0])

    @property
    def labels(self) -> NDArray[np.uint8]:
        """``(h, w)`` class ids of the landscape (see :data:`CLASS_NAMES`)."""
        out: NDArray[np.uint8] = SURFACE_LABEL[self.surface]
        return out


def rotate_crops(rng: np.random.Generator, n: int, n_years: int, n_crops: int) -> NDArray[np.int8]:
    """Crop rotation: a random crop in the first year, then each year a crop different from the year before.

    Args:
        rng: Random generator.
        n: Number of parcels.
        n_years: Number of calendar years.
        n_crops: Number of crop types.

    Returns:
        ``(n, n_years)`` int8 crop indices.
    """
    crops = np.empty((n, n_years), dtype=np.int8)
    crops[:, 0] = rng.integers(0, n_crops, n)
    for year in range(1, n_years):
        crops[:, year] = (crops[:, year - 1] + rng.integers(1, n_crops, n)) % n_crops
    return crops


def building_pattern(
    rng: np.random.Generator,
    u: NDArray[np.float32],
    v: NDArray[np.float32],
    *,
    block: float,
    street: float,
    yard: Surface,
    park_fraction: float,
) -> tuple[NDArray[np.uint8], NDArray[np.int32], int]:
    """A street grid with one rectangular building per lot, in rotated coordinates ``(u, v)``.

    Blocks of side ``block`` px are separated by ``street`` px of asphalt and split into 2x2 lots. Each lot holds a
    building leaving random 1-3 px margins (``yard`` surface), or is a park (``yard``) with ``park_fraction``.

    Args:
        rng: Random generator.
        u: Rotated x coordinates of the pixels (any shape).
        v: Rotated y coordinates, same shape.
        block: Block pitch in pixels (streets included).
        street: Street width in pixels.
        yard: Surface of margins and parks (grass in towns, asphalt on new construction sites).
        park_fraction: Share of lots without a building.

    Returns:
        ``(surface, lot, n_lots)``: uint8 surfaces, int32 lot index per pixel (``0..n_lots-1``) and the lot count.
    """
    bu, bv = np.floor(u / block), np.floor(v / block)
    lu, lv = u - bu * block - street, v - bv * block - street
    is_street = (lu < 0) | (lv < 0)
    half = (block - street) / 2.0
    su, sv = (lu >= half).astype(np.int64), (lv >= half).astype(np.int64)
    lu, lv = lu - su * half, lv - sv * half
    key = ((bu.astype(np.int64) * 4096 + bv.astype(np.int64)) * 2 + su) * 2 + sv
    _, inverse = np.unique(key.ravel(), return_inverse=True)
    lot: NDArray[np.int32] = inverse.reshape(u.shape).astype(np.int32)
    n_lots = int(lot.max()) + 1 if lot.size else 0
    hi = max(2.0, min(3.0, half / 4.0))
    m = rng.uniform(1.0, hi, (4, n_lots)).astype(np.float32)
    park = rng.random(n_lots) < park_fraction
    inside = (lu >= m[0][lot]) & (lu < half - m[1][lot]) & (lv >= m[2][lot]) & (lv < half - m[3][lot])
    surface: NDArray[np.uint8] = np.full(u.shape, int(yard), dtype=np.uint8)
    surface[inside & ~park[lot]] = Surface.ROOF
    surface[is_street] = Surface.ASPHALT
    return surface, lot, n_lots


def _roads(rng: np.random.Generator, size: int, through: tuple[float, float]) -> NDArray[np.bool_]:
    """Two or three gently curving roads, the first passing through ``through`` (row, col)."""
    roads = np.zeros((size, size), dtype=bool)
    for i in range(int(rng.integers(2, 4))):
        angle = rng.uniform(0, np.pi)
        cy, cx = through if i == 0 else rng.uniform(0.1 * size, 0.9 * size, 2)
        u, v = rotated_coords(size, size, angle, y0=-cy, x0=-cx)
        wiggle = rng.uniform(0.0, 0.04 * size) * np.sin(2 * np.pi * u / rng.uniform(0.6, 1.5) / size)
        width = rng.uniform(3.0, 6.0)
        roads |= np.abs(v - wiggle) < width / 2
    return roads


def _river(rng: np.random.Generator, size: int) -> NDArray[np.bool_]:
    """A meandering river crossing the AOI, ``size/100`` to ``size/60`` px wide (at least 3 px)."""
    angle = rng.uniform(0, np.pi)
    u, v = rotated_coords(size, size, angle, y0=-size / 2, x0=-size / 2)
    phase = rng.uniform(0, 2 * np.pi)
    centre = rng.uniform(-0.2, 0.2) * size + 0.06 * size * np.sin(2 * np.pi * u / (0.7 * size) + phase)
    width = max(3.0, rng.uniform(size / 100, size / 60))
    river: NDArray[np.bool_] = np.abs(v - centre) < width / 2
    return river


def make_landscape(rng: np.random.Generator, size: int, n_years: int, n_crops: int) -> Landscape:
    """Draw the land cover of a square AOI (see the module docstring for the recipe).

    Args:
        rng: Random generator.
        size: Side in pixels.
        n_years: Calendar years covered (for the crop rotation).
        n_crops: Number of crop types.

    Returns:
        The landscape.
    """
    shape = (size, size)
    elev = fractal_noise(rng, shape, (size / 6, size / 20), (1.0, 0.35))
    q_water, q_wet, q_forest = np.quantile(elev, [0.05, 0.09, 0.74])
    surface = np.full(shape, int(Surface.CROP), dtype=np.uint8)
    obj = np.zeros(shape, dtype=np.int32)

    # farmland: rotated strips of rectangular parcels
    u, v = rotated_coords(size, size, rng.uniform(0, np.pi))
    v = v - v.min()
    u = u - u.min()
    heights = rng.uniform(max(6.0, size / 40), max(10.0, size / 12), int(3 * size / max(6.0, size / 40)) + 2)
    edges = np.cumsum(heights)
    row = np.searchsorted(edges, v.ravel()).reshape(shape)
    widths = rng.uniform(max(8.0, size / 25), max(14.0, size / 8), len(edges) + 1).astype(np.float32)
    offsets = rng.uniform(0, 1, len(edges) + 1).astype(np.float32) * widths
    col = np.floor((u + offsets[row]) / widths[row]).astype(np.int64)
    _, inverse = np.unique((row.astype(np.int64) * 100_000 + col).ravel(), return_inverse=True)
    parcel: NDArray[np.int32] = inverse.reshape(shape).astype(np.int32) + 1
    n_parcels = int(parcel.max())
    kind = rng.choice(
        np.array([Surface.CROP, Surface.GRASS, Surface.SOIL], dtype=np.uint8), n_parcels + 1, p=[0.72, 0.16, 0.12]
    )
    surface[:] = kind[parcel]
    obj[:] = parcel
    margin = np.zeros(shape, dtype=bool)
    margin[:, 1:] |= parcel[:, 1:] != parcel[:, :-1]
    margin[1:, :] |= parcel[1:, :] != parcel[:-1, :]
    surface[margin] = Surface.GRASS
    obj[margin] = 0
    next_obj = n_parcels + 1

    # forest stands (Voronoi)
    forest = elev > q_forest
    fy, fx = np.nonzero(forest)
    n_stands = max(3, int(forest.sum() / max(400.0, (size / 12) ** 2)))
    seeds = rng.uniform(0, size, (n_stands, 2))
    _, stand = cKDTree(seeds).query(np.column_stack([fy, fx]), workers=1)
    conifer = rng.random(n_stands) < 0.35
    surface[fy, fx] = np.where(conifer[stand], Surface.CONIFER, Surface.DECIDUOUS)
    obj[fy, fx] = next_obj + stand
    next_obj += n_stands

    # wetlands and water (lakes, river)
    wet = (elev >= q_water) & (elev < q_wet)
    surface[wet] = Surface.WETLAND
    obj[wet] = 0

    # town: a noisy disc with a street grid and buildings
    centre = rng.uniform(0.3 * size, 0.7 * size, 2)
    radius = 0.16 * size
    yy, xx = np.ogrid[:size, :size]
    dist = np.hypot(yy - centre[0], xx - centre[1]) + 0.25 * radius * smooth_noise(rng, shape, size / 16)
    town = dist < radius
    tu, tv = rotated_coords(size, size, rng.uniform(0, np.pi / 2))
    block = max(16.0, size / 40)
    pattern, lot, n_lots = building_pattern(
        rng, tu[town], tv[town], block=block, street=3.0, yard=Surface.GRASS, park_fraction=0.12
    )
    surface[town] = pattern
    obj[town] = np.where(pattern == Surface.ROOF, next_obj + lot, 0)
    next_obj += n_lots

    water = elev < q_water
    if size >= 128:
        water |= _river(rng, size)
    surface[water] = Surface.WATER
    obj[water] = 0
    roads = _roads(rng, size, (float(centre[0]), float(centre[1])))
    surface[roads] = Surface.ASPHALT
    obj[roads] = 0

    gain = rng.uniform(0.9, 1.1, next_obj).astype(np.float32)
    variant = rng.integers(0, N_VARIANTS, next_obj).astype(np.int8)
    gain[0], variant[0] = 1.0, 0
    crops = rotate_crops(rng, next_obj, n_years, n_crops)
    texture = np.stack([smooth_noise(rng, shape, 1.0), smooth_noise(rng, shape, max(2.0, size / 80))])
    return Landscape(
        surface=surface,
        obj=obj,
        obj_gain=gain,
        obj_variant=variant,
        crops=crops,
        texture=texture,
        n_crops=n_crops,
    )
