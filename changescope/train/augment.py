"""Multispectral-safe augmentations for contrastive pretraining (SeCo/CACo's recipe, for any band count).

SeCo and CACo (methods.md, section 2) augment with RandomResizedCrop (scale 0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1)
with probability 0.8, grayscale with probability 0.2, Gaussian blur (sigma 0.1-2, probability 0.5) and horizontal
flips. Hue, saturation and grayscale assume three RGB channels, so :class:`Augment` keeps the band-wise part of the
recipe: per-band brightness and contrast jitter, blur, and a random resized crop; it adds vertical flips and
90-degree rotations, which are label-preserving for nadir imagery.

Invalid pixels (NaN) are filled with their image's band mean over the valid pixels (0 when a band has none)
before augmenting, so outputs never hold NaN and the fill does not move the band means that contrast jitter scales
about. Values are not clipped: jittered reflectance may leave [0, 1].
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from changescope.errors import ParameterError

__all__ = ["Augment", "fill_invalid"]

# columns of the per-image uniform draws (one row per image, drawn in one call whatever the options)
_AREA, _RATIO, _CX, _CY, _JITTER, _BLUR, _SIGMA, _HFLIP, _VFLIP, _ROT = range(10)


def fill_invalid(x: torch.Tensor) -> torch.Tensor:
    """Replace non-finite pixels of ``(B, C, H, W)`` by their image's band mean over finite pixels (0 if none)."""
    if bool(torch.isfinite(x.sum())):  # one cheap pass: a finite sum means every pixel is finite
        return x
    finite = torch.isfinite(x)
    zeroed = torch.where(finite, x, torch.zeros_like(x))
    count = finite.sum(dim=(-2, -1), keepdim=True)
    mean = zeroed.sum(dim=(-2, -1), keepdim=True) / count.clamp_min(1)
    return torch.where(finite, x, mean.expand_as(x))


class Augment:
    """Random augmentation of reflectance batches; every image draws its own parameters.

    Operations, in order: random resized crop to ``out_size`` (bilinear, antialiased), per-band brightness and
    contrast jitter (probability ``jitter_p``), Gaussian blur (probability ``blur_p``), horizontal and vertical
    flips (probability 0.5 each) and a rotation by a random multiple of 90 degrees. Each call draws a fixed number
    of values from the generator (``B x (10 + 2C)``), so a run is reproducible from the generator's seed.

    Args:
        out_size: Side of the output images in pixels.
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the crop aspect ratio (width / height), sampled log-uniformly among the ratios for which
            the crop fits the image (torchvision redraws instead), so ``scale=(1, 1)`` crops the whole of a square
            image.
        brightness: Per-band multiplicative factor drawn in ``[1 - brightness, 1 + brightness]``.
        contrast: Per-band factor in ``[1 - contrast, 1 + contrast]`` scaling each band about its image mean.
        jitter_p: Probability of applying brightness and contrast jitter to an image.
        blur_sigma: Range of the Gaussian blur sigma in output pixels.
        blur_p: Probability of blurring an image.
        hflip: Flip images left-right with probability 0.5.
        vflip: Flip images upside-down with probability 0.5.
        rot90: Rotate images by 0, 90, 180 or 270 degrees, uniformly.
    """

    def __init__(
        self,
        out_size: int = 64,
        *,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_p: float = 0.5,
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
    ) -> None:
        if out_size < 1:
            raise ParameterError(f"out_size={out_size!r} must be a positive number of pixels")
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ParameterError(f"scale={scale!r} must be (low, high) with 0 < low <= high <= 1, e.g. (0.2, 1.0)")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ParameterError(f"ratio={ratio!r} must be (low, high) with 0 < low <= high, e.g. (3/4, 4/3)")
        for name, value in (("brightness", brightness), ("contrast", contrast)):
            if not 0.0 <= value <= 1.0:
                raise ParameterError(
                    f"{name}={value!r} must be in [0, 1] (the factor is drawn in [1-{name}, 1+{name}])"
                )
        for name, value in (("jitter_p", jitter_p), ("blur_p", blur_p)):
            if not 0.0 <= value <= 1.0:
                raise ParameterError(f"{name}={value!r} is a probability; give a value in [0, 1]")
        if not 0.0 < blur_sigma[0] <= blur_sigma[1]:
            raise ParameterError(f"blur_sigma={blur_sigma!r} must be (low, high) with 0 < low <= high, e.g. (0.1, 2.0)")
        self.out_size = out_size
        self.scale = scale
        self.ratio = ratio
        self.brightness = brightness
        self.contrast = contrast
        self.jitter_p = jitter_p
        self.blur_sigma = blur_sigma
        self.blur_p = blur_p
        self.hflip = hflip
        self.vflip = vflip
        self.rot90 = rot90

    def __repr__(self) -> str:
        return (
            f"Augment(out_size={self.out_size}, scale={self.scale}, ratio={self.ratio}, brightness={self.brightness}, "
            f"contrast={self.contrast}, jitter_p={self.jitter_p}, blur_sigma={self.blur_sigma}, blur_p={self.blur_p}, "
            f"hflip={self.hflip}, vflip={self.vflip}, rot90={self.rot90})"
        )

    @staticmethod
    def _check(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or not x.is_floating_point():
            raise ParameterError(
                f"Augment takes float reflectance (B, C, H, W); got dtype {x.dtype} and shape {tuple(x.shape)!r}"
            )
        return fill_invalid(x.float())  # x.float() is x for float32; the crop copies before any in-place step

    def _crop_resize(self, x: torch.Tensor, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
        size = (self.out_size, self.out_size)
        out = []
        for i, (top, left, h, w) in enumerate(boxes):
            crop = x[i : i + 1, :, top : top + h, left : left + w]
            same = (h, w) == size
            out.append(
                crop if same else F.interpolate(crop, size, mode="bilinear", align_corners=False, antialias=True)
            )
        return torch.cat(out) if out else x.new_empty((0, x.shape[1], *size))  # a new tensor, never a view of x

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Resize without augmentation: the central square of side ``min(H, W)``, resized to ``out_size``.

        Args:
            x: ``(B, C, H, W)`` float reflectance, NaN at invalid pixels.

        Returns:
            ``(B, C, out_size, out_size)`` float32, invalid pixels filled with the image's band mean.
        """
        x = self._check(x)
        h, w = x.shape[-2:]
        side = min(h, w)
        box = ((h - side) // 2, (w - side) // 2, side, side)
        return self._crop_resize(x, [box] * x.shape[0])

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch, each image with its own random parameters.

        Args:
            x: ``(B, C, H, W)`` float reflectance, NaN at invalid pixels.
            generator: Source of all randomness.

        Returns:
            ``(B, C, out_size, out_size)`` float32 on ``x``'s device, without NaN.

        Raises:
            ParameterError: ``x`` is not a 4-D float tensor.
        """
        x = self._check(x)
        b, c, h, w = x.shape
        u = torch.rand((b, 10), generator=generator, dtype=torch.float64, device=generator.device).cpu()
        factors = torch.rand((b, 2, c), generator=generator, dtype=torch.float32, device=generator.device)
        # random resized crop: area, then a log-ratio among those that fit, and the position, per image
        area = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, _AREA])
        fit_lo, fit_hi = torch.log(area / h**2), torch.log(w**2 / area)  # aspect ratios for which the crop fits
        log_lo = torch.clamp(fit_lo, min=math.log(self.ratio[0]))
        log_hi = torch.clamp(fit_hi, max=math.log(self.ratio[1]))
        aspect = torch.exp(torch.minimum(torch.maximum(log_lo + (log_hi - log_lo) * u[:, _RATIO], fit_lo), fit_hi))
        cw = torch.sqrt(area * aspect).round().clamp(1, w).long()
        ch = torch.sqrt(area / aspect).round().clamp(1, h).long()
        left = ((w - cw + 1) * u[:, _CX]).long().clamp_max(w - cw)
        top = ((h - ch + 1) * u[:, _CY]).long().clamp_max(h - ch)
        boxes = [(int(t), int(lf), int(hh), int(ww)) for t, lf, hh, ww in zip(top, left, ch, cw, strict=True)]
        x = self._crop_resize(x, boxes)
        u, factors = u.to(x.device), factors.to(x.device)
        # brightness, then contrast about each band's mean, fused into one x * a + b (a = 1, b = 0: untouched)
        jitter = (u[:, _JITTER] < self.jitter_p).view(b, 1, 1, 1)
        if bool(jitter.any()):
            gain = (1.0 - self.brightness + 2.0 * self.brightness * factors[:, 0]).view(b, c, 1, 1)
            stretch = (1.0 - self.contrast + 2.0 * self.contrast * factors[:, 1]).view(b, c, 1, 1)
            shift = gain * x.mean(dim=(-2, -1), keepdim=True) * (1.0 - stretch)
            a = torch.where(jitter, gain * stretch, torch.ones_like(gain))
            x = torch.addcmul(torch.where(jitter, shift, torch.zeros_like(shift)), x, a)
        blur = u[:, _BLUR] < self.blur_p
        if bool(blur.any()):
            sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u[:, _SIGMA]
            x[blur] = self._blur(x[blur], sigma[blur].to(x.dtype))  # x is a fresh tensor here
        if self.hflip or self.vflip or self.rot90:
            flip_h = (u[:, _HFLIP] < 0.5) & self.hflip
            flip_v = (u[:, _VFLIP] < 0.5) & self.vflip
            turns = (u[:, _ROT] * 4).long().clamp_max(3) * self.rot90
            maps = _dihedral_maps(self.out_size, x.device)[flip_h.long() * 8 + flip_v.long() * 4 + turns]
            x = torch.gather(x.flatten(2), 2, maps[:, None].expand(b, c, -1)).view(x.shape)
        return x

    def _blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur of square ``(B, C, N, N)`` images, one ``sigma`` per image, replicated borders.

        The blur is the product ``K @ x @ K.T`` with ``K`` the ``(N, N)`` blur matrix of each image.
        """
        b, n = x.shape[0], x.shape[-1]
        radius = max(1, math.ceil(3.0 * self.blur_sigma[1]))
        offsets = torch.arange(-radius, radius + 1, device=x.device)
        kernel = torch.exp(-0.5 * (offsets[None].to(x.dtype) / sigma[:, None]) ** 2)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True))[:, None].expand(b, n, -1).contiguous()  # (B, N, K)
        cols = (torch.arange(n, device=x.device)[:, None] + offsets[None]).clamp(0, n - 1)  # replicate borders
        matrix = x.new_zeros((b, n, n)).scatter_add_(2, cols[None].expand(b, n, -1), kernel)[:, None]
        return torch.matmul(torch.matmul(matrix, x), matrix.transpose(-1, -2))


@functools.cache
def _dihedral_maps(n: int, device: torch.device) -> torch.Tensor:
    """Pixel maps ``(16, n * n)`` of hflip, then vflip, then ``k`` quarter turns, at index ``8 h + 4 v + k``."""
    base = torch.arange(n * n, device=device).view(n, n)
    maps: list[torch.Tensor] = []
    for h in (False, True):
        for v in (False, True):
            flipped = base.flip(-1) if h else base
            flipped = flipped.flip(-2) if v else flipped
            maps.extend(torch.rot90(flipped, k, dims=(0, 1)).flatten() for k in range(4))
    return torch.stack(maps)
