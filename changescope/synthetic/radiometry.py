"""Surface reflectance of a synthetic AOI: per-surface spectra and seasonal phenology.

Every pixel mixes a background spectrum (soil, roof, asphalt, water, litter) with a green canopy spectrum::

    reflectance = background * (1 - fv) + canopy * fv

where ``fv`` is the vegetation cover fraction. ``fv`` follows a 12-month curve per surface (deciduous forest
greens up in April-May and browns in October-November, conifers stay green, meadows and wetlands peak in early
summer) and, on cropland, per crop: winter wheat peaks in May and is harvested in July, maize peaks in August,
rapeseed in April, sunflower in July, sugar beet in July-August, temporary grassland is cut twice. Parcels change
crop every calendar year (crop rotation), which changes their reflectance but never their label (agriculture).

Texture and per-object brightness (0.9-1.1) modulate both terms; soil backgrounds are up to 8 % darker in winter
(moisture). Drought dryness ``d`` in ``[0, 1]`` scales ``fv`` by ``1 - 0.85 d`` and blends the background towards
dry bare soil, so NIR falls and red rises as a drought progresses.

Reflectance is returned as float32 ``(4, h, w)`` in the band order blue, green, red, NIR.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from changescope.synthetic.landscape import N_VARIANTS, Landscape, Surface

__all__ = ["BANDS", "CROP_NAMES", "render_scene"]

BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")
"""Band names, in file order (DynamicEarthNet PlanetFusion: B, G, R, NIR)."""

CROP_NAMES: tuple[str, ...] = ("winter_wheat", "maize", "rapeseed", "sunflower", "sugar_beet", "temporary_grass")
"""Crop types of the rotation, indexed as in :attr:`Landscape.crops`."""

_N_SURF = len(Surface)

# background spectra (blue, green, red, nir) per surface and variant
_BG = np.zeros((_N_SURF, N_VARIANTS, 4), dtype=np.float32)
_BG[Surface.ROOF] = [(0.07, 0.08, 0.15, 0.21), (0.13, 0.14, 0.15, 0.18), (0.24, 0.26, 0.27, 0.29)]
_BG[Surface.ASPHALT] = [(0.06, 0.07, 0.08, 0.10), (0.08, 0.09, 0.10, 0.12), (0.10, 0.11, 0.12, 0.14)]
_BG[Surface.CROP] = [(0.07, 0.10, 0.13, 0.19), (0.06, 0.08, 0.10, 0.15), (0.09, 0.12, 0.16, 0.22)]
_BG[Surface.DECIDUOUS] = [(0.04, 0.06, 0.08, 0.18), (0.04, 0.05, 0.07, 0.16), (0.05, 0.07, 0.09, 0.20)]
_BG[Surface.CONIFER] = [(0.03, 0.05, 0.05, 0.12), (0.03, 0.04, 0.05, 0.11), (0.04, 0.05, 0.06, 0.13)]
_BG[Surface.GRASS] = [(0.07, 0.10, 0.12, 0.22), (0.06, 0.09, 0.11, 0.20), (0.08, 0.11, 0.13, 0.24)]
_BG[Surface.WETLAND] = [(0.04, 0.06, 0.06, 0.08), (0.04, 0.05, 0.05, 0.07), (0.05, 0.06, 0.07, 0.09)]
_BG[Surface.SOIL] = [(0.09, 0.12, 0.16, 0.22), (0.12, 0.15, 0.19, 0.25), (0.07, 0.09, 0.12, 0.17)]
_BG[Surface.WATER] = [(0.05, 0.05, 0.03, 0.02), (0.06, 0.07, 0.05, 0.03), (0.04, 0.04, 0.02, 0.01)]
_BG[Surface.CLEARED] = [(0.08, 0.10, 0.13, 0.21), (0.07, 0.09, 0.12, 0.19), (0.09, 0.11, 0.14, 0.23)]
_BG[Surface.FLOOD] = [(0.08, 0.10, 0.09, 0.05), (0.07, 0.09, 0.08, 0.04), (0.09, 0.11, 0.10, 0.06)]
_BG_FLAT = _BG.reshape(_N_SURF * N_VARIANTS, 4)

_DRY = np.array([0.11, 0.14, 0.20, 0.22], dtype=np.float32)
"""Dry bare soil / dead vegetation, the end point of a drought."""

_CANOPY = np.tile(np.array([0.03, 0.07, 0.04, 0.42], dtype=np.float32), (_N_SURF, 1))
_CANOPY[Surface.CONIFER] = (0.02, 0.05, 0.03, 0.30)
_CANOPY[Surface.WETLAND] = (0.03, 0.07, 0.04, 0.34)

# vegetation cover fraction per surface and month (Jan..Dec)
_FV = np.zeros((_N_SURF, 12), dtype=np.float32)
_FV[Surface.DECIDUOUS] = (0.25, 0.25, 0.30, 0.50, 0.80, 0.90, 0.90, 0.88, 0.80, 0.60, 0.35, 0.25)
_FV[Surface.CONIFER] = (0.70, 0.70, 0.72, 0.75, 0.80, 0.82, 0.82, 0.82, 0.80, 0.78, 0.74, 0.70)
_FV[Surface.GRASS] = (0.35, 0.35, 0.45, 0.65, 0.80, 0.75, 0.60, 0.55, 0.60, 0.55, 0.45, 0.35)
_FV[Surface.WETLAND] = (0.20, 0.20, 0.25, 0.40, 0.60, 0.70, 0.70, 0.65, 0.55, 0.40, 0.30, 0.20)
_FV[Surface.SOIL] = 0.03
_FV[Surface.CLEARED] = 0.08
_FV[Surface.ASPHALT] = 0.02

_CROP_FV = np.array(
    [
        (0.30, 0.30, 0.45, 0.70, 0.85, 0.75, 0.20, 0.05, 0.05, 0.10, 0.25, 0.30),  # winter wheat
        (0.02, 0.02, 0.02, 0.02, 0.10, 0.40, 0.80, 0.85, 0.70, 0.20, 0.03, 0.02),  # maize
        (0.35, 0.35, 0.55, 0.80, 0.70, 0.40, 0.05, 0.05, 0.20, 0.40, 0.40, 0.35),  # rapeseed
        (0.02, 0.02, 0.02, 0.05, 0.20, 0.55, 0.80, 0.60, 0.30, 0.05, 0.02, 0.02),  # sunflower
        (0.02, 0.02, 0.02, 0.10, 0.30, 0.70, 0.90, 0.90, 0.80, 0.50, 0.03, 0.02),  # sugar beet
        (0.40, 0.40, 0.50, 0.75, 0.50, 0.80, 0.55, 0.75, 0.60, 0.55, 0.45, 0.40),  # temporary grass (cut)
    ],
    dtype=np.float32,
)
_CROP_CANOPY = np.array(
    [
        (0.03, 0.07, 0.04, 0.40),
        (0.03, 0.08, 0.04, 0.48),
        (0.04, 0.10, 0.06, 0.45),
        (0.03, 0.08, 0.04, 0.46),
        (0.03, 0.07, 0.03, 0.50),
        (0.03, 0.07, 0.04, 0.38),
    ],
    dtype=np.float32,
)
_MOISTURE = (1.0 - 0.04 * (1 + np.cos(2 * np.pi * np.arange(12) / 12))).astype(np.float32)
"""Background brightness per month: 8 % darker in January (wet soils) than in July."""


def render_scene(
    landscape: Landscape,
    surface: NDArray[np.uint8],
    obj: NDArray[np.int32],
    month: int,
    year: int,
    dryness: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Render the nuisance-free surface reflectance of one month.

    Args:
        landscape: Object tables (brightness, variants, crop rotation) and textures.
        surface: ``(h, w)`` :class:`Surface` of each pixel this month (the landscape after the events so far).
        obj: ``(h, w)`` object id of each pixel this month.
        month: Month of the year, 0 (January) to 11.
        year: Index of the calendar year in the crop rotation (0 = first year of the series).
        dryness: Optional ``(h, w)`` drought dryness in ``[0, 1]``.

    Returns:
        ``(4, h, w)`` float32 reflectance, band order blue, green, red, NIR.
    """
    fine, mid = landscape.texture[0], landscape.texture[1]
    is_crop = surface == Surface.CROP
    crop_of_obj = landscape.crops[:, year]
    fv = np.where(is_crop, _CROP_FV[crop_of_obj, month][obj], _FV[surface, month])
    fv *= 1 + 0.12 * mid + 0.05 * fine
    gain = landscape.obj_gain[obj] * (1 + 0.05 * mid + 0.04 * fine)
    if dryness is not None:
        fv *= 1 - 0.85 * dryness
    np.clip(fv, 0.0, 1.0, out=fv)
    flat = surface.astype(np.intp) * N_VARIANTS + landscape.obj_variant[obj]
    out = np.empty((4, *surface.shape), dtype=np.float32)
    for b in range(4):
        bg = _BG_FLAT[:, b][flat] * gain * _MOISTURE[month]
        if dryness is not None:
            bg += (_DRY[b] - bg) * dryness
        canopy = np.where(is_crop, _CROP_CANOPY[crop_of_obj, b][obj], _CANOPY[surface, b])
        out[b] = bg + (canopy - bg) * fv
    return out
