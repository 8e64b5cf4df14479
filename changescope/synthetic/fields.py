"""Random fields and geometry helpers shared by the synthetic generator.

Everything here is vectorised over whole rasters and draws only from the :class:`numpy.random.Generator` it is
given, so results depend on the seed alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter
from shapely.geometry import Polygon, shape

__all__ = ["fractal_noise", "mask_to_polygon", "rotated_coords", "smooth_noise", "star_mask"]

F32 = NDArray[np.float32]


def _upsample_bilinear(coarse: F32, height: int, width: int, factor: float) -> F32:
    """Bilinear upsampling of ``coarse`` by ``factor`` to exactly ``(height, width)`` (separable, two passes)."""

    def axis_weights(n: int, n_coarse: int) -> tuple[NDArray[np.intp], F32]:
        pos = (np.arange(n, dtype=np.float32) + 0.5) / np.float32(factor) + np.float32(0.5)
        i0 = np.clip(np.floor(pos).astype(np.intp), 0, n_coarse - 2)
        frac = np.clip(pos - i0, 0.0, 1.0).astype(np.float32)
        return i0, frac

    iy, fy = axis_weights(height, coarse.shape[0])
    ix, fx = axis_weights(width, coarse.shape[1])
    rows = coarse[iy] * (1 - fy)[:, None] + coarse[iy + 1] * fy[:, None]
    out = rows[:, ix] * (1 - fx)[None, :] + rows[:, ix + 1] * fx[None, :]
    return out.astype(np.float32, copy=False)


def _standardise(field: F32) -> F32:
    field -= np.float32(field.mean())
    std = float(field.std())
    if std > 0:
        field /= np.float32(std)
    return field


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> F32:
    """Spatially correlated Gaussian noise with zero mean and unit standard deviation.

    Small correlation lengths are filtered directly; large ones are filtered on a coarse grid and upsampled
    bilinearly, which costs the same whatever ``sigma`` is.

    Args:
        rng: Random generator.
        shape: ``(height, width)`` in pixels.
        sigma: Correlation length (Gaussian kernel sigma) in pixels; ``<= 0`` gives white noise.

    Returns:
        A float32 array of ``shape``.
    """
    height, width = shape
    if sigma <= 0:
        return rng.standard_normal(shape, dtype=np.float32)
    if sigma <= 4:
        white = rng.standard_normal(shape, dtype=np.float32)
        return _standardise(gaussian_filter(white, sigma, mode="wrap"))
    factor = sigma / 2.0
    coarse_shape = (int(np.ceil(height / factor)) + 2, int(np.ceil(width / factor)) + 2)
    coarse = gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), 2.0, mode="wrap")
    return _standardise(_upsample_bilinear(coarse, height, width, factor))


def fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigmas: Sequence[float], weights: Sequence[float]
) -> F32:
    """Weighted sum of :func:`smooth_noise` octaves, standardised to zero mean and unit standard deviation.

    Args:
        rng: Random generator.
        shape: ``(height, width)`` in pixels.
        sigmas: Correlation length of each octave, in pixels.
        weights: Weight of each octave.

    Returns:
        A float32 array of ``shape``.
    """
    total = np.zeros(shape, dtype=np.float32)
    for sigma, weight in zip(sigmas, weights, strict=True):
        total += np.float32(weight) * smooth_noise(rng, shape, sigma)
    return _standardise(total)


def rotated_coords(height: int, width: int, angle: float, y0: float = 0.0, x0: float = 0.0) -> tuple[F32, F32]:
    """Pixel-centre coordinates rotated by ``angle`` radians: ``u`` along the rotated x axis, ``v`` across it.

    Args:
        height: Rows.
        width: Columns.
        angle: Rotation in radians.
        y0: Row of the top-left pixel in the frame of the full raster (for windows).
        x0: Column of the top-left pixel in the frame of the full raster.

    Returns:
        ``(u, v)``, two float32 arrays of shape ``(height, width)``.
    """
    ys = (np.arange(height, dtype=np.float32) + np.float32(y0 + 0.5))[:, None]
    xs = (np.arange(width, dtype=np.float32) + np.float32(x0 + 0.5))[None, :]
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u: F32 = xs * cos + ys * sin
    v: F32 = ys * cos - xs * sin
    return u, v


def star_mask(rng: np.random.Generator, radius: float, lobes: int = 10) -> NDArray[np.bool_]:
    """A random star-shaped blob (radius varying smoothly with angle) in a square of side ``2 * ceil(radius) + 1``.

    Args:
        rng: Random generator.
        radius: Largest radius in pixels.
        lobes: Number of random radii around the circle (more = more irregular outline).

    Returns:
        A boolean array, ``True`` inside the blob, centred in the square.
    """
    half = int(np.ceil(radius))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    theta = np.arctan2(yy, xx)
    knots = rng.uniform(0.55, 1.0, lobes + 1)
    knots[-1] = knots[0]
    angles = np.linspace(-np.pi, np.pi, lobes + 1)
    limit = radius * np.interp(theta, angles, knots)
    mask: NDArray[np.bool_] = np.hypot(yy, xx) <= limit
    return mask


def mask_to_polygon(mask: NDArray[np.bool_], transform: Affine) -> Polygon | None:
    """Trace the outline of a connected boolean mask as one polygon in the coordinates of ``transform``.

    Pixel edges become polygon edges, so rasterising the polygon (pixel centres) gives back ``mask`` exactly.

    Args:
        mask: 4-connected region, ``True`` inside.
        transform: Affine transform of the mask's pixel grid.

    Returns:
        The polygon, or ``None`` when the mask is empty, not one region, or its outline is not a valid polygon.
    """
    if not mask.any():
        return None
    polys = [
        shape(geom)
        for geom, value in rasterio.features.shapes(
            mask.astype(np.uint8), mask=mask, connectivity=4, transform=transform
        )
        if value == 1
    ]
    if len(polys) != 1:
        return None
    poly = polys[0]
    if not isinstance(poly, Polygon) or not shapely.is_valid(poly):
        return None
    return poly
