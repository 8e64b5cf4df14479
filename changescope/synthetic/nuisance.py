"""Non-semantic nuisances applied to each synthetic image: what changes the pixels but not the land cover.

Per date, in this order (all parameters drawn from the AOI's seed and logged):

1. **Misregistration**: the whole image is shifted by ``(dy, dx)``, each uniform in ``[-0.5, 0.5]`` px, with
   bilinear resampling (labels stay on the reference grid).
2. **Illumination**: ``x * gain + offset`` with ``gain`` uniform in ``[0.85, 1.15]`` and ``offset`` in
   ``[-0.01, 0.01]`` reflectance.
3. **Haze**: additive, spatially smooth (correlation ``size/6`` px, local factor 0.2-2), blue-heavy (band weights
   1.0, 0.75, 0.5, 0.25 for B, G, R, NIR); strength ``haze`` is in ``[0, 0.005]`` on 40 % of dates and
   ``[0.01, 0.06]`` on the others.
4. **Clouds and shadows**: on 60 % of dates a cloud field covers a fraction ``cloud_fraction`` uniform in
   ``[0.02, 0.35]`` of the image, with soft edges and a bright (0.40-0.65) grey-white top. Shadows are the cloud
   footprint displaced by ``shadow_offset`` (10-25 px at 1024 px, one sun direction per AOI), darkening the ground
   by up to 60 %. The mask is ``1`` where the cloud opacity exceeds 0.05 and ``2`` on shadow pixels, else ``0``.
5. **Sensor noise**: Gaussian, sigma 0.004 reflectance, independent per pixel and band (a window at a random
   offset, up to 64 px, into one noise field drawn per AOI, which is much cheaper than fresh noise per date).
6. **Gap filling**: on 25 % of dates, one or two blocks (``size/16`` to ``size/6`` px a side) are replaced by a
   reconstruction: the mean of the neighbouring dates' clean scenes (the one neighbour for the first and last
   dates) under this date's illumination, blurred with
   a 1.5 px Gaussian and without noise, clouds or haze. Reconstructed blocks are marked valid (mask 0), as
   gap-filled products do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter

from changescope.synthetic.fields import fractal_noise, smooth_noise

__all__ = [
    "MASK_CLOUD",
    "MASK_SHADOW",
    "NuisanceDraw",
    "apply_nuisances",
    "draw_nuisances",
    "noise_bank",
    "subpixel_shift",
]

MASK_CLOUD = 1
"""Mask value of cloud pixels."""
MASK_SHADOW = 2
"""Mask value of cloud-shadow pixels."""

NOISE_PAD = 64
"""Largest offset of a date's window into the noise bank."""
_HAZE_WEIGHTS = np.array([1.0, 0.75, 0.5, 0.25], dtype=np.float32)
_CLOUD_TINT = np.array([1.0, 1.0, 0.98, 1.05], dtype=np.float32)


@dataclass(frozen=True)
class NuisanceDraw:
    """The nuisance parameters of one date (see the module docstring for their ranges).

    Attributes:
        gain: Illumination gain.
        offset: Illumination offset (reflectance).
        haze: Haze strength (reflectance added to blue at a local factor of 1).
        cloud_fraction: Target share of the image under cloud (0 = clear date).
        shift: Misregistration ``(dy, dx)`` in pixels.
        shadow_offset: Displacement ``(dy, dx)`` of cloud shadows in pixels.
        gap_windows: Gap-filled blocks as ``(y0, x0, height, width)`` pixel windows.
        field_seed: Seed of this date's random fields (haze, clouds, noise).
    """

    gain: float
    offset: float
    haze: float
    cloud_fraction: float
    shift: tuple[float, float]
    shadow_offset: tuple[int, int]
    gap_windows: tuple[tuple[int, int, int, int], ...]
    field_seed: int

    def to_record(self, masked_fraction: float) -> dict[str, Any]:
        """The JSON-ready log entry of this date, with the realised share of masked pixels."""
        return {
            "gain": round(self.gain, 6),
            "offset": round(self.offset, 6),
            "haze": round(self.haze, 6),
            "cloud_fraction": round(self.cloud_fraction, 6),
            "masked_fraction": round(masked_fraction, 6),
            "shift": [round(self.shift[0], 6), round(self.shift[1], 6)],
            "shadow_offset": list(self.shadow_offset),
            "gap_windows": [{"y0": y0, "x0": x0, "height": h, "width": w} for y0, x0, h, w in self.gap_windows],
        }


def draw_nuisances(rng: np.random.Generator, n_dates: int, size: int) -> list[NuisanceDraw]:
    """Draw the nuisance parameters of every date of an AOI.

    Args:
        rng: Random generator.
        n_dates: Number of dates.
        size: Image side in pixels (windows and shadow offsets scale with it).

    Returns:
        One :class:`NuisanceDraw` per date.
    """
    azimuth = rng.uniform(0, 2 * np.pi)
    draws = []
    for _ in range(n_dates):
        gain = float(rng.uniform(0.85, 1.15))
        offset = float(rng.uniform(-0.01, 0.01))
        haze = float(rng.uniform(0.0, 0.005) if rng.random() < 0.4 else rng.uniform(0.01, 0.06))
        cloud = float(rng.uniform(0.02, 0.35)) if rng.random() < 0.6 else 0.0
        dy, dx = (float(s) for s in rng.uniform(-0.5, 0.5, 2))
        dist = rng.uniform(size / 100, size / 40)
        az = azimuth + rng.uniform(-0.2, 0.2)
        shadow = (round(dist * np.sin(az)), round(dist * np.cos(az)))
        windows: list[tuple[int, int, int, int]] = []
        if rng.random() < 0.25:
            for _ in range(int(rng.integers(1, 3))):
                h, w = (int(s) for s in rng.integers(max(8, size // 16), max(9, size // 6) + 1, 2))
                y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
                windows.append((y0, x0, h, w))
        draws.append(
            NuisanceDraw(
                gain=gain,
                offset=offset,
                haze=haze,
                cloud_fraction=cloud,
                shift=(dy, dx),
                shadow_offset=(int(shadow[0]), int(shadow[1])),
                gap_windows=tuple(windows),
                field_seed=int(rng.integers(0, 2**63 - 1)),
            )
        )
    return draws


def _displace(field: NDArray[np.float32], dy: int, dx: int) -> NDArray[np.float32]:
    """Move ``field`` by whole pixels, filling uncovered pixels with 0."""
    out = np.zeros_like(field)
    h, w = field.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = field[ys, xs]
    return out


def noise_bank(rng: np.random.Generator, shape: tuple[int, int], bands: int = 4) -> NDArray[np.float32]:
    """Sensor noise (sigma 0.004) for an AOI: ``(bands, h + NOISE_PAD, w + NOISE_PAD)`` float32.

    Each date adds the window at a random offset, so dates get different noise without drawing it again.
    """
    h, w = shape
    bank = rng.standard_normal((bands, h + NOISE_PAD, w + NOISE_PAD), dtype=np.float32)
    bank *= np.float32(0.004)
    return bank


def subpixel_shift(image: NDArray[np.float32], dy: float, dx: float) -> NDArray[np.float32]:
    """Shift ``(bands, h, w)`` images by ``(dy, dx)`` pixels (``|d| <= 1``) with bilinear interpolation.

    Follows :func:`scipy.ndimage.shift` (``out[i] = in[i - d]``, ``order=1``, ``mode="nearest"``) at a fraction of
    its cost.

    Args:
        image: ``(bands, h, w)`` float32 array.
        dy: Shift along rows in pixels.
        dx: Shift along columns in pixels.

    Returns:
        The shifted float32 array (always a new array).
    """
    out = image
    for axis, d in ((1, dy), (2, dx)):
        if d == 0:
            continue
        k = int(np.floor(-d))
        frac = np.float32(-d - k)
        n = out.shape[axis]
        pad = [(0, 0)] * 3
        pad[axis] = (1, 2)
        padded = np.pad(out, pad, mode="edge")
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(1 + k, 1 + k + n)
        hi[axis] = slice(2 + k, 2 + k + n)
        out = padded[tuple(lo)] * (1 - frac)
        out += padded[tuple(hi)] * frac
    return out.copy() if out is image else out


def apply_nuisances(
    scene: NDArray[np.float32],
    draw: NuisanceDraw,
    previous: NDArray[np.float32],
    following: NDArray[np.float32],
    noise: NDArray[np.float32] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Turn a clean scene into an observed image and its cloud/shadow mask.

    Args:
        scene: ``(4, h, w)`` clean reflectance of this date.
        draw: This date's nuisance parameters.
        previous: Clean scene of the previous date (the next one for the first date), for gap filling.
        following: Clean scene of the next date (the previous one for the last date), for gap filling.
        noise: The AOI's :func:`noise_bank`; drawn afresh when omitted.

    Returns:
        ``(image, mask)``: float32 reflectance ``(4, h, w)`` and uint8 mask ``(h, w)`` (0 clear, 1 cloud, 2 shadow).
    """
    rng = np.random.default_rng(draw.field_seed)
    _, h, w = scene.shape
    size = max(h, w)
    img = subpixel_shift(scene, *draw.shift)
    img *= np.float32(draw.gain)
    img += np.float32(draw.offset)
    haze_field = np.clip(1.0 + 0.5 * smooth_noise(rng, (h, w), size / 6), 0.2, 2.0)
    for b, weight in enumerate(_HAZE_WEIGHTS):
        img[b] += np.float32(draw.haze * weight) * haze_field
    mask = np.zeros((h, w), dtype=np.uint8)
    if draw.cloud_fraction > 0:
        field = fractal_noise(rng, (h, w), (size / 10, size / 40), (1.0, 0.4))
        threshold = np.quantile(field, 1.0 - draw.cloud_fraction)
        excess = field - np.float32(threshold)
        alpha = np.clip(excess / 0.35, 0.0, 1.0)
        shadow = _displace(alpha, *draw.shadow_offset) * (1.0 - alpha)
        img *= (1.0 - 0.6 * shadow)[None]
        top = np.clip(0.40 + 0.25 * excess / 1.5, 0.40, 0.65)
        img += alpha[None] * (top[None] * _CLOUD_TINT[:, None, None] - img)
        mask[shadow > 0.05] = MASK_SHADOW
        mask[alpha > 0.05] = MASK_CLOUD
    if noise is None:
        noise = noise_bank(rng, (h, w))
    oy, ox = (int(o) for o in rng.integers(0, NOISE_PAD + 1, 2))
    img += noise[:, oy : oy + h, ox : ox + w]
    for y0, x0, bh, bw in draw.gap_windows:
        win = (slice(None), slice(y0, y0 + bh), slice(x0, x0 + bw))
        recon = 0.5 * (previous[win] + following[win]) * np.float32(draw.gain) + np.float32(draw.offset)
        img[win] = gaussian_filter(recon, (0, 1.5, 1.5), mode="nearest")
        mask[win[1:]] = 0
    return img, mask
