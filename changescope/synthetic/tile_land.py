"""The land of a synthetic tile as a function of position, and the position-deterministic fields it is built from.

**Fields.** Every value here is a function of a key (derived from the seed and what the field is for) and of a
position alone: integer hashes of lattice or pixel indices, and value noise interpolated from a hashed lattice at
positions given in metres. A pixel therefore gets the same value whichever block it is computed in, whatever the
block size, and nothing needs the whole raster in memory. Only element-wise integer and IEEE arithmetic
(``+ - * /``, ``floor``) touches per-pixel values, so the results do not depend on array lengths or SIMD code
paths either. Fields on a pixel grid are evaluated on separable coordinates: ``xs`` (columns) and ``ys`` (rows)
are 1-D arrays of pixel-centre positions and the result is ``(len(ys), len(xs))``.

**Land cover.** Every surface comes from such value noise or from hashes of parcel indices, evaluated at pixel
centres, so the 10 m, 20 m and 60 m grids all sample one continuous landscape. Surfaces are those of
:class:`~changescope.synthetic.landscape.Surface`:

- **water**: lakes, where a smooth "relief" field (lattices of 9, 3 and 0.9 km) is lowest (about 5 %), ringed by
  **wetlands**;
- **forest**: where a forest field (5, 1.5 and 0.4 km) plus a share of the relief is high (about a quarter),
  deciduous or coniferous by a third field (and coniferous in the uplands);
- **towns**: where a town field (7, 2 and 0.6 km) is high; 40 m lots are roofs (50 %), asphalt (30 %) or
  gardens (meadow);
- **farmland** elsewhere: strips 240 m high cut into parcels 150-450 m wide (each strip its own width and offset);
  a parcel is cropland (78 %), meadow (17 %) or bare soil. Cropland parcels draw a crop every calendar year
  (crop rotation, indices into :data:`~changescope.synthetic.radiometry.CROP_NAMES`).

Brightness varies per parcel (0.9-1.1) and with two texture fields (60 m and 25 m).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from changescope.synthetic.landscape import Surface
from changescope.synthetic.radiometry import CROP_NAMES

__all__ = [
    "Ground",
    "LandKeys",
    "derive_key",
    "fbm",
    "ground_at",
    "hash_uniform",
    "mix32",
    "pixel_uniform",
    "value_noise",
]

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
U32 = NDArray[np.uint32]
_MASK = 0xFFFFFFFF


def mix32(x: U32) -> U32:
    """The ``lowbias32`` integer hash (Wellons) of a uint32 array, element-wise, with wrap-around arithmetic."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    out: U32 = x ^ (x >> np.uint32(16))
    return out


def derive_key(*parts: int) -> int:
    """A 32-bit key from integers (the seed, a field id, a date index, ...): equal parts give equal keys."""
    key = np.array([0x9E3779B9], dtype=np.uint32)
    for part in parts:
        key = mix32(key ^ np.array([int(part) & _MASK], dtype=np.uint32))
        key = mix32(key ^ np.array([(int(part) >> 32) & _MASK], dtype=np.uint32))
    return int(key[0])


def _u32(values: NDArray[np.int64]) -> U32:
    """Signed integers reduced modulo 2**32 (negative lattice indices hash like any other)."""
    out: U32 = (values & _MASK).astype(np.uint32)
    return out


def hash_uniform(key: int, rows: NDArray[np.int64], cols: NDArray[np.int64]) -> F32:
    """Uniform values in ``[0, 1)`` for integer positions (broadcast ``rows`` against ``cols``).

    Args:
        key: Field key (:func:`derive_key`).
        rows: Row (or lattice y) indices.
        cols: Column (or lattice x) indices.

    Returns:
        float32 values, one per broadcast position; the same position and key always give the same value.
    """
    h = mix32(_u32(cols) ^ np.uint32(key))
    h = mix32(h ^ (_u32(rows) * np.uint32(0x9E3779B1)))
    # 24 bits: exactly representable in float32
    out: F32 = (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))
    return out


def pixel_uniform(key: int, row0: int, col0: int, height: int, width: int) -> F32:
    """Uniform ``[0, 1)`` white noise of a pixel window: one hash of each pixel's absolute ``(row, col)``."""
    rows = np.arange(row0, row0 + height, dtype=np.int64)[:, None]
    cols = np.arange(col0, col0 + width, dtype=np.int64)[None, :]
    return hash_uniform(key, rows, cols)


def _axis(coords: F64, cell: float) -> tuple[NDArray[np.int64], F32]:
    """Lattice index below each coordinate and the smoothstep weight of the next one."""
    t = np.asarray(coords, dtype=np.float64) / cell
    i = np.floor(t)
    f = (t - i).astype(np.float32)
    weight: F32 = f * f * (np.float32(3.0) - np.float32(2.0) * f)
    return i.astype(np.int64), weight


def value_noise(key: int, xs: F64, ys: F64, cell: float) -> F32:
    """Value noise in ``[0, 1]`` on the separable grid ``ys x xs``: a hashed lattice of side ``cell`` (metres).

    Lattice values are uniform; between lattice points they are blended with smoothstep weights, first along x,
    then along y, so each output depends only on its own coordinates and the four lattice values around it.

    Args:
        key: Field key.
        xs: Pixel-centre x positions (columns), metres.
        ys: Pixel-centre y positions (rows), metres.
        cell: Lattice spacing in metres (the correlation length).

    Returns:
        ``(len(ys), len(xs))`` float32 array.
    """
    ix, wx = _axis(xs, cell)
    iy, wy = _axis(ys, cell)
    # only the lattice points next to a position are hashed (a sparse grid of positions needs few of them)
    lx = np.unique(np.concatenate([ix, ix + 1]))
    ly = np.unique(np.concatenate([iy, iy + 1]))
    lattice = hash_uniform(key, ly[:, None], lx[None, :])
    jx = np.searchsorted(lx, ix)
    along_x = lattice[:, jx] * (np.float32(1.0) - wx)[None, :] + lattice[:, jx + 1] * wx[None, :]
    jy = np.searchsorted(ly, iy)
    out: F32 = along_x[jy] * (np.float32(1.0) - wy)[:, None] + along_x[jy + 1] * wy[:, None]
    return out


def fbm(key: int, xs: F64, ys: F64, cells: Sequence[float], weights: Sequence[float]) -> F32:
    """Weighted mean of :func:`value_noise` octaves (one key per octave), in ``[0, 1]``.

    Args:
        key: Field key; octave ``i`` uses ``derive_key(key, i)``.
        xs: Pixel-centre x positions, metres.
        ys: Pixel-centre y positions, metres.
        cells: Lattice spacing of each octave, metres.
        weights: Weight of each octave (normalised to sum to 1).

    Returns:
        ``(len(ys), len(xs))`` float32 array.
    """
    total = np.float32(sum(weights))
    out = np.zeros((len(ys), len(xs)), dtype=np.float32)
    for i, (cell, weight) in enumerate(zip(cells, weights, strict=True)):
        out += np.float32(weight / total) * value_noise(derive_key(key, i), xs, ys, cell)
    return out


STRIP_M = 240.0
"""Height of a farmland strip (one row of parcels), metres."""
LOT_M = 40.0
"""Side of a town lot, metres."""


@dataclass(frozen=True)
class LandKeys:
    """The field keys of one seed (see :func:`derive_key`)."""

    relief: int
    forest: int
    conifer: int
    town: int
    lots: int
    strips: int
    parcels: int
    crops: int
    texture: int

    @classmethod
    def from_seed(cls, seed: int) -> LandKeys:
        """Keys of ``seed`` (one per field, independent of each other)."""
        names = cls.__dataclass_fields__
        return cls(**{name: derive_key(seed, 0x1A4D, i) for i, name in enumerate(names)})


@dataclass(frozen=True)
class Ground:
    """The land of a pixel window before any change event.

    Attributes:
        surface: ``(h, w)`` :class:`Surface` codes.
        crop: ``(h, w)`` crop index of the year on cropland (0 elsewhere).
        gain: ``(h, w)`` brightness factor of the background (parcel and texture).
        texture: ``(h, w)`` texture in ``[-0.5, 0.5]`` that modulates the vegetation cover.
    """

    surface: NDArray[np.uint8]
    crop: NDArray[np.int8]
    gain: F32
    texture: F32


def _farmland(keys: LandKeys, xs: F64, ys: F64, year: int) -> tuple[NDArray[np.uint8], NDArray[np.int8], F32]:
    """Surface, crop of ``year`` and brightness of the farmland parcels at every position."""
    strip = np.floor(ys / STRIP_M).astype(np.int64)
    zero = np.zeros_like(strip)
    width = 150.0 + 300.0 * hash_uniform(keys.strips, strip, zero).astype(np.float64)
    shift = width * hash_uniform(keys.strips, strip, zero + 1).astype(np.float64)
    parcel = np.floor((xs[None, :] + shift[:, None]) / width[:, None]).astype(np.int64)
    rows = np.broadcast_to(strip[:, None], parcel.shape)
    use = hash_uniform(keys.parcels, rows, parcel)
    surface = np.full(parcel.shape, Surface.CROP, dtype=np.uint8)
    surface[use >= 0.78] = Surface.GRASS
    surface[use >= 0.95] = Surface.SOIL
    crop_draw = hash_uniform(derive_key(keys.crops, year), rows, parcel)
    crop = np.minimum(crop_draw * np.float32(len(CROP_NAMES)), np.float32(len(CROP_NAMES) - 1)).astype(np.int8)
    gain = np.float32(0.9) + np.float32(0.2) * hash_uniform(derive_key(keys.parcels, 1), rows, parcel)
    return surface, crop, gain


def _town(keys: LandKeys, xs: F64, ys: F64) -> NDArray[np.uint8]:
    """Surface of town lots (roof, asphalt or garden) at every position."""
    rows = np.floor(ys / LOT_M).astype(np.int64)[:, None]
    cols = np.floor(xs / LOT_M).astype(np.int64)[None, :]
    draw = hash_uniform(keys.lots, rows, cols)
    lots = np.full(draw.shape, Surface.ROOF, dtype=np.uint8)
    lots[draw >= 0.5] = Surface.ASPHALT
    lots[draw >= 0.8] = Surface.GRASS
    return lots


def ground_at(keys: LandKeys, xs: F64, ys: F64, year: int) -> Ground:
    """The land (before change events) at the pixel centres ``ys x xs`` (metres from the tile's top-left corner).

    Args:
        keys: Field keys of the seed.
        xs: Pixel-centre x positions (columns), metres.
        ys: Pixel-centre y positions (rows), metres.
        year: Index of the calendar year (crop rotation), 0 for the first year of the series.

    Returns:
        The surfaces, crops, brightness and texture of the window.
    """
    relief = fbm(keys.relief, xs, ys, (9000.0, 3000.0, 900.0), (0.5, 0.3, 0.2))
    forest = fbm(keys.forest, xs, ys, (5000.0, 1500.0, 400.0), (0.5, 0.3, 0.2))
    forest += np.float32(0.3) * (relief - np.float32(0.5))
    town = fbm(keys.town, xs, ys, (7000.0, 2000.0, 600.0), (0.55, 0.3, 0.15))
    surface, crop, gain = _farmland(keys, xs, ys, year)
    woods = forest > np.float32(0.6)
    conifer = (fbm(keys.conifer, xs, ys, (2500.0, 700.0), (0.7, 0.3)) > np.float32(0.56)) | (relief > 0.7)
    surface[woods] = np.where(conifer[woods], np.uint8(Surface.CONIFER), np.uint8(Surface.DECIDUOUS))
    urban = (town > np.float32(0.69)) & ~woods
    surface[urban] = _town(keys, xs, ys)[urban]
    surface[(relief < np.float32(0.31)) & ~urban] = Surface.WETLAND
    surface[relief < np.float32(0.285)] = Surface.WATER
    crop[surface != Surface.CROP] = 0
    fine = value_noise(derive_key(keys.texture, 0), xs, ys, 25.0)
    mid = value_noise(derive_key(keys.texture, 1), xs, ys, 60.0)
    gain *= np.float32(0.95) + np.float32(0.06) * mid + np.float32(0.04) * fine
    texture = np.float32(0.6) * mid + np.float32(0.4) * fine - np.float32(0.5)
    return Ground(surface=surface, crop=crop, gain=gain, texture=texture)
