"""Sub-pixel shift between two images: phase correlation, then masked Gauss-Newton refinement.

Sign convention: a :class:`Shift` ``(dy, dx)`` is the *displacement* of the moving image relative to the reference,
in pixels: what sits at row ``y``, column ``x`` of the reference is found at ``(y + dy, x + dx)`` in the moving
image. Positive ``dy`` means the moving image's content lies lower (south on a north-up grid), positive ``dx``
further right (east). Moving the moving image by ``(-dy, -dx)`` (:attr:`Shift.correction`, the value
``scipy.ndimage.shift`` takes and ``skimage.registration.phase_cross_correlation`` returns) aligns it on the
reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray
from scipy import fft, ndimage
from scipy.signal.windows import tukey
from skimage.registration import phase_cross_correlation

from changescope.errors import GridMismatchError, ParameterError
from changescope.types import ShiftFeature

__all__ = ["MIN_VALID_FRACTION", "Shift", "ShiftFeature", "central_window", "estimate_shift"]


MIN_VALID_FRACTION = 0.05
"""Below this fraction of valid pixels (in either image of the measured window) no shift is estimated."""

_MIN_SIDE = 16
_TUKEY_ALPHA = 0.25
_LOWPASS_SIGMA = 0.15  # cycles per pixel: damps the noise-dominated high frequencies
_GRADIENT_SIGMA = 1.0
_PEAK_EXCLUDE = 3  # pixels around the correlation peak left out of its background statistics
_WEAK_PEAK_RATIO = 10.0
_REFINE_STEPS = 8
_REFINE_TOL = 5e-3  # px: a step this small ends the refinement
_REFINE_RADIUS = 1.0  # px: refinements wandering further from the correlation peak are discarded

_phase_cross_correlation: Callable[..., tuple[Any, Any, Any]] = phase_cross_correlation

FloatArray: TypeAlias = NDArray[np.float64]
BoolArray: TypeAlias = NDArray[np.bool_]


@dataclass(frozen=True)
class Shift:
    """Displacement of a moving image relative to a reference image, in pixels.

    ``moving[y + dy, x + dx]`` shows what ``reference[y, x]`` shows (see the module docstring for the sign
    convention). ``dy``/``dx`` are NaN when the shift could not be measured; :attr:`note` says why.

    Attributes:
        dy: Row displacement (positive = moving content lies lower / further south).
        dx: Column displacement (positive = moving content lies further right / east).
        correlation: Pearson correlation of the two intensity images once aligned, over their common valid pixels:
            near 1 (or -1 for inverted contrast) for the same scene, near 0 for unrelated content.
        peak_ratio: Height of the correlation peak above the rest of the correlation surface, in standard
            deviations of that surface; below 10 the match is doubtful (unrelated images give 5-8).
        valid_fraction: Fraction of the measured window usable on both images once aligned (valid on both, away
            from invalid edges).
        note: Why the shift is missing or doubtful; empty when all is well.
    """

    dy: float
    dx: float
    correlation: float = math.nan
    peak_ratio: float = math.nan
    valid_fraction: float = math.nan
    note: str = ""

    @property
    def magnitude(self) -> float:
        """Length of the displacement in pixels (NaN when unmeasured)."""
        return math.hypot(self.dy, self.dx)

    @property
    def correction(self) -> tuple[float, float]:
        """The ``(dy, dx)`` to move the moving image by to align it on the reference: ``(-dy, -dx)``."""
        return (-self.dy, -self.dx)

    @property
    def measured(self) -> bool:
        """Whether ``dy`` and ``dx`` are finite."""
        return math.isfinite(self.dy) and math.isfinite(self.dx)

    @property
    def doubtful(self) -> bool:
        """Whether the shift was measured but the match is weak (:attr:`note` says why)."""
        return self.measured and bool(self.note)

    @classmethod
    def missing(cls, note: str, valid_fraction: float = math.nan) -> Shift:
        """A shift that could not be measured, with the reason."""
        return cls(math.nan, math.nan, valid_fraction=valid_fraction, note=note)


def central_window(height: int, width: int, max_size: int | None) -> tuple[slice, slice]:
    """Row and column slices of the central ``max_size`` x ``max_size`` window (the whole grid when smaller).

    Raises:
        ParameterError: ``max_size`` is smaller than 16 pixels.
    """
    if max_size is None:
        return slice(0, height), slice(0, width)
    if max_size < _MIN_SIDE:
        raise ParameterError(f"max_size={max_size!r} is too small; give at least {_MIN_SIDE} pixels or None")
    h, w = min(height, max_size), min(width, max_size)
    y0, x0 = (height - h) // 2, (width - w) // 2
    return slice(y0, y0 + h), slice(x0, x0 + w)


def _as_plane(image: Any, name: str) -> FloatArray:
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.mean(axis=0)
    if arr.ndim != 2:
        raise ParameterError(f"{name} must be a (y, x) or (band, y, x) array, got shape {arr.shape!r}")
    return arr


def _as_mask(valid: Any | None, plane: FloatArray, name: str) -> BoolArray:
    finite = np.isfinite(plane)
    if valid is None:
        return finite
    mask = np.asarray(valid, dtype=bool)
    if mask.shape != plane.shape:
        raise GridMismatchError(f"{name} has shape {mask.shape!r}, expected the image shape {plane.shape!r}")
    out: BoolArray = mask & finite
    return out


def _zscore(values: FloatArray, valid: BoolArray) -> FloatArray:
    """Zero-mean, unit-variance over ``valid``; 0 (the mean) elsewhere."""
    if valid.sum() < 2:
        return np.zeros_like(values)
    vals = values[valid]
    out: FloatArray = np.where(valid, (values - vals.mean()) / (vals.std() + 1e-12), 0.0)
    return out


class _Features:
    """One image prepared for matching: its normalised intensity and the windowed spectrum of its feature."""

    def __init__(self, plane: FloatArray, valid: BoolArray, feature: ShiftFeature, window: FloatArray) -> None:
        self.valid = valid
        self.valid_fraction = float(valid.mean())
        self.intensity = _zscore(plane, valid)
        if feature == "gradient":
            # the zero fill's edges are not scene content: drop a margin around invalid pixels
            grad = ndimage.gaussian_gradient_magnitude(self.intensity, _GRADIENT_SIGMA)
            kept = ndimage.binary_erosion(valid, iterations=int(4 * _GRADIENT_SIGMA), border_value=1)
            image = _zscore(grad, kept)
        else:
            image = self.intensity
        self.spectrum = fft.fft2(image * window, workers=-1)


def _aligned(ref: _Features, coeffs: FloatArray, valid: BoolArray, disp: FloatArray) -> tuple[FloatArray, BoolArray]:
    """The moving intensity brought back onto the reference grid (cubic spline) and the usable common pixels."""
    # warped(x) = moving(x + disp); coeffs are the moving intensity's cubic spline coefficients
    warped = ndimage.shift(coeffs, -disp, order=3, mode="nearest", prefilter=False)
    common = ndimage.binary_erosion(ref.valid & _warp_mask(valid, disp), iterations=3)
    return warped, common


def _warp_mask(valid: BoolArray, disp: FloatArray) -> BoolArray:
    """``True`` where every pixel around ``x + disp`` is valid (``False`` for sources outside the grid)."""
    out = np.ones_like(valid)
    h, w = valid.shape
    for oy in {math.floor(disp[0]), math.ceil(disp[0])}:
        for ox in {math.floor(disp[1]), math.ceil(disp[1])}:
            moved = np.zeros_like(valid)  # moved[y, x] = valid[y + oy, x + ox]
            if abs(oy) < h and abs(ox) < w:
                moved[max(0, -oy) : h - max(0, oy), max(0, -ox) : w - max(0, ox)] = valid[
                    max(0, oy) : h - max(0, -oy), max(0, ox) : w - max(0, -ox)
                ]
            out &= moved
    return out


def _correlation(a: FloatArray, b: FloatArray) -> float:
    if a.size < _MIN_SIDE**2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _refine(
    ref: _Features, ref_grad: tuple[FloatArray, FloatArray], mov: _Features, start: tuple[float, float], steps: int
) -> tuple[float, float, float, float]:
    """Polish a displacement by Gauss-Newton (Lucas-Kanade) steps on the intensities, fitting a gain and offset.

    With ``warped(x) = moving(x + disp)`` and a residual error ``e`` on ``disp``, ``warped ~ gain * ref(x - e) +
    offset``, so regressing ``ref`` on ``[warped, 1, d ref/dy, d ref/dx]`` over the common valid pixels gives ``e``
    as the last two coefficients.

    Returns:
        ``(dy, dx, correlation, overlap)``: the refined displacement (``start`` when the steps wander more than
        :data:`_REFINE_RADIUS` px from it or too few pixels are valid on both images), the correlation of the
        aligned intensities over their common valid pixels and the fraction of pixels that area covers.
    """
    coeffs = ndimage.spline_filter(mov.intensity, order=3, mode="nearest")
    origin = np.array(start, dtype=np.float64)
    disp = origin
    for _ in range(steps):
        warped, common = _aligned(ref, coeffs, mov.valid, disp)
        if common.sum() < _MIN_SIDE**2:
            break
        design = np.stack([warped[common], np.ones(int(common.sum())), ref_grad[0][common], ref_grad[1][common]], 1)
        coef, *_ = np.linalg.lstsq(design, ref.intensity[common], rcond=None)
        step = coef[2:]
        disp = disp + step
        if np.hypot(*(disp - origin)) > _REFINE_RADIUS:
            disp = origin
            break
        if np.hypot(*step) < _REFINE_TOL:
            break
    warped, common = _aligned(ref, coeffs, mov.valid, disp)
    return float(disp[0]), float(disp[1]), _correlation(ref.intensity[common], warped[common]), float(common.mean())


class _ShiftMeter:
    """Measures shifts of many moving images against one reference (its spectrum is computed once)."""

    def __init__(
        self,
        reference: FloatArray,
        valid: BoolArray,
        *,
        feature: ShiftFeature,
        upsample: int,
        whitening: float,
        refine: bool,
    ) -> None:
        self.shape = reference.shape
        self.feature = feature
        self.upsample = upsample
        self.whitening = whitening
        self.refine = refine
        self.window = np.outer(tukey(self.shape[0], _TUKEY_ALPHA), tukey(self.shape[1], _TUKEY_ALPHA))
        self.ref = _Features(reference, valid, feature, self.window)
        grad_y, grad_x = np.gradient(self.ref.intensity)
        self.ref_grad = (np.asarray(grad_y, dtype=np.float64), np.asarray(grad_x, dtype=np.float64))
        fy = fft.fftfreq(self.shape[0])[:, None]
        fx = fft.fftfreq(self.shape[1])[None, :]
        self.lowpass = np.exp(-(fy**2 + fx**2) / (2 * _LOWPASS_SIGMA**2))

    def measure(self, moving: FloatArray, valid: BoolArray) -> Shift:
        overlap = float((self.ref.valid & valid).mean())
        if self.ref.valid_fraction < MIN_VALID_FRACTION:
            return Shift.missing(
                f"the reference has too few valid pixels ({self.ref.valid_fraction:.1%} < {MIN_VALID_FRACTION:.0%}) "
                "to measure a shift; pick a clearer reference",
                valid_fraction=overlap,
            )
        if valid.mean() < MIN_VALID_FRACTION:
            return Shift.missing(
                f"too few valid pixels ({valid.mean():.1%} < {MIN_VALID_FRACTION:.0%}) to measure a shift",
                valid_fraction=overlap,
            )
        mov = _Features(moving, valid, self.feature, self.window)
        product = self.ref.spectrum * mov.spectrum.conj()
        weight = self.lowpass / np.maximum(np.abs(product), 1e-12) ** self.whitening
        # skimage multiplies its two inputs (the second conjugated): handing it the weighted reference spectrum
        # and the moving spectrum makes it refine the peak of the weighted cross-correlation.
        correction, _, _ = _phase_cross_correlation(
            self.ref.spectrum * weight,
            mov.spectrum,
            space="fourier",
            upsample_factor=self.upsample,
            normalization=None,
        )
        start = (0.0 - float(correction[0]), 0.0 - float(correction[1]))  # 0.0 - c: no negative zeros
        peak_ratio = _peak_ratio(fft.ifft2(product * weight, workers=-1).real)
        dy, dx, correlation, overlap = _refine(self.ref, self.ref_grad, mov, start, _REFINE_STEPS if self.refine else 0)
        note = ""
        if not math.isfinite(correlation) or peak_ratio < _WEAK_PEAK_RATIO:
            note = f"weak correlation peak ({peak_ratio:.1f}); the shift is doubtful"
        elif overlap < MIN_VALID_FRACTION:
            note = f"few pixels valid on both dates ({overlap:.1%}); the shift is doubtful"
        return Shift(dy + 0.0, dx + 0.0, correlation, peak_ratio, overlap, note)


def _peak_ratio(surface: FloatArray) -> float:
    h, w = surface.shape
    py, px = np.unravel_index(int(np.argmax(np.abs(surface))), surface.shape)
    dy = np.abs(np.arange(h) - py)
    dx = np.abs(np.arange(w) - px)
    near = (np.minimum(dy, h - dy)[:, None] <= _PEAK_EXCLUDE) & (np.minimum(dx, w - dx)[None, :] <= _PEAK_EXCLUDE)
    rest = np.abs(surface[~near])
    return float((abs(surface[py, px]) - rest.mean()) / (rest.std() + 1e-12))


def _check_options(feature: str, upsample: int, whitening: float) -> None:
    if feature not in ("gradient", "intensity"):
        raise ParameterError(f"feature={feature!r} is unknown; choose 'gradient' or 'intensity'")
    if not isinstance(upsample, int) or upsample < 1:
        raise ParameterError(f"upsample={upsample!r} must be a positive integer (20 gives 1/20 px steps)")
    if not 0.0 <= whitening <= 1.0:
        raise ParameterError(
            f"whitening={whitening!r} must be within [0, 1] (0 = cross-correlation, 1 = pure phase correlation)"
        )


def estimate_shift(
    reference: Any,
    moving: Any,
    *,
    valid_ref: Any | None = None,
    valid_mov: Any | None = None,
    upsample: int = 20,
    feature: ShiftFeature = "gradient",
    whitening: float = 0.5,
    refine: bool = True,
    max_size: int | None = 1024,
) -> Shift:
    """Measure the sub-pixel displacement of ``moving`` relative to ``reference`` by phase correlation.

    Both images are reduced to one plane (the band mean for ``(band, y, x)`` input) and cropped to their central
    ``max_size`` window. Each is normalised over its valid pixels (invalid ones set to the mean), turned into the
    chosen feature, Tukey-windowed and correlated in the Fourier domain with a partially whitened, low-passed
    cross-power spectrum; :func:`skimage.registration.phase_cross_correlation` locates the peak to
    ``1 / upsample`` px. With ``refine``, a few Gauss-Newton (Lucas-Kanade) steps on the intensities, fitting a
    gain and an offset over the pixels valid in both images, then polish it: clouds and nodata no longer bias the
    result (they are left out instead of filled). A refinement that wanders more than 1 px from the peak is
    dropped.

    Args:
        reference: Reference image, ``(y, x)`` or ``(band, y, x)``; NaN marks invalid pixels.
        moving: Image to measure, same shape as ``reference``.
        valid_ref: Bool ``(y, x)`` mask of usable reference pixels (all finite pixels when omitted).
        valid_mov: Bool ``(y, x)`` mask of usable moving pixels.
        upsample: Sub-pixel refinement factor: the shift is resolved to ``1 / upsample`` px.
        feature: ``"gradient"`` (gradient magnitude; robust to gain, offset and seasonal contrast changes) or
            ``"intensity"``.
        whitening: Exponent of the cross-power normalisation: 0 = plain cross-correlation, 1 = pure phase
            correlation. 0.5 keeps phase correlation's sharp peak without amplifying noisy high frequencies.
        refine: Polish the correlation peak with masked Gauss-Newton steps.
        max_size: Side of the central window measured (``None``: the whole image).

    Returns:
        The displacement of ``moving`` (see :class:`Shift` for the sign); NaN with a note when either image has
        fewer than 5 % valid pixels in the window.

    Raises:
        ParameterError: Shapes differ, an image is smaller than 16 px, or an option is out of range.
        GridMismatchError: A mask's shape differs from its image's.
    """
    _check_options(feature, upsample, whitening)
    ref = _as_plane(reference, "reference")
    mov = _as_plane(moving, "moving")
    if ref.shape != mov.shape:
        raise ParameterError(f"reference has shape {ref.shape!r} but moving has {mov.shape!r}; they must match")
    if min(ref.shape) < _MIN_SIDE:
        raise ParameterError(f"images of shape {ref.shape!r} are too small; a shift needs at least 16x16 px")
    vref = _as_mask(valid_ref, ref, "valid_ref")
    vmov = _as_mask(valid_mov, mov, "valid_mov")
    rows, cols = central_window(ref.shape[0], ref.shape[1], max_size)
    meter = _ShiftMeter(
        ref[rows, cols], vref[rows, cols], feature=feature, upsample=upsample, whitening=whitening, refine=refine
    )
    return meter.measure(mov[rows, cols], vmov[rows, cols])
