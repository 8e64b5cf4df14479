"""Classical unsupervised change-detection baselines, run side by side with the embedding scorers.

Three pixel-level methods compare two co-registered images of ``C`` bands:

- ``"cva"``: change vector analysis. Each date is radiometrically normalised per band (subtract the band median,
  divide by the robust spread ``1.4826 * MAD`` over the usable pixels), and the change intensity is the Euclidean
  norm of the difference vector. The normalisation makes CVA insensitive to a global per-band gain and offset
  (illumination, calibration) between the dates.
- ``"irmad"``: iteratively reweighted multivariate alteration detection (Nielsen, A. A. 2007, "The regularized
  iteratively reweighted MAD method for change detection in multi- and hyperspectral data", IEEE Transactions on
  Image Processing 16(2), 463-478). Canonical correlation analysis of the two dates gives canonical variates
  ``U = a'X`` and ``V = b'Y``; the MAD variates are ``U - V`` with variance ``2 (1 - rho)``. Each pixel is
  reweighted by its no-change probability ``1 - chi2.cdf(Z, C)`` and the fit repeated until the canonical
  correlations settle. The change intensity is ``Z = sum_i (MAD_i / sigma_i)^2``. IR-MAD is invariant to any
  invertible affine transform of either date's bands.
- ``"pcakmeans"``: PCA and k-means on neighbourhood vectors of a difference image (Celik, T. 2009, "Unsupervised
  change detection in satellite images using principal component analysis and k-means clustering", IEEE
  Geoscience and Remote Sensing Letters 6(4), 772-776). The paper uses the absolute difference of one band; here
  the difference image is the multi-band CVA magnitude above, which keeps the method usable (and illumination
  insensitive) on multispectral data. The score is ``|f - c_nochange| - |f - c_change|`` so that ROC curves can
  be drawn; ``score > 0`` is the paper's binary map.

:func:`baseline_change_map` scores one pair of dates; :func:`baseline_patch_scores` scores every date of a series
against a reference and aggregates the maps onto a :class:`~changescope.grid.PatchGrid`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy import linalg
from scipy.stats import chi2

from changescope.errors import GridMismatchError, ParameterError
from changescope.grid import PatchGrid
from changescope.series import reflectance

__all__ = ["BASELINES", "baseline_change_map", "baseline_patch_scores"]

BASELINES: tuple[str, ...] = ("cva", "irmad", "pcakmeans")
"""Names accepted by :func:`baseline_change_map` and :func:`baseline_patch_scores`."""

BASELINE_REFERENCES: tuple[str, ...] = ("first", "previous")
"""Reference strategies of :func:`baseline_patch_scores`."""

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation
_MIN_VALID_FRACTION = 0.5  # a patch needs at least this fraction of scored pixels

FloatArray = NDArray[np.float64]


# ----------------------------------------------------------------------------------------------- helpers
def _robust_normalise(x: FloatArray) -> FloatArray:
    """Per-column ``(x - median) / (1.4826 * MAD)``; falls back to the std, then 1, where the MAD is zero."""
    med = np.median(x, axis=0)
    spread = _MAD_TO_SIGMA * np.median(np.abs(x - med), axis=0)
    std = x.std(axis=0)
    spread = np.where(spread > 0, spread, np.where(std > 0, std, 1.0))
    return np.asarray((x - med) / spread, dtype=np.float64)


def _cva_magnitude(x: FloatArray, y: FloatArray) -> FloatArray:
    """CVA magnitude of ``(n, C)`` pixel vectors, each date robustly normalised per band."""
    diff = _robust_normalise(y) - _robust_normalise(x)
    return np.asarray(np.sqrt((diff**2).sum(axis=1)), dtype=np.float64)


def _subsample(n: int, max_pixels: int, seed: int) -> NDArray[np.intp]:
    """Sorted indices of at most ``max_pixels`` of ``n`` pixels (all of them when ``n`` is small)."""
    if n <= max_pixels:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_pixels, replace=False))


def _check_kwargs(name: str, kw: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ParameterError(f"baseline {name!r} got unknown options {unknown!r}; it accepts {list(allowed)!r}")


# ----------------------------------------------------------------------------------------------- methods
def _cva(x: FloatArray, y: FloatArray, usable: NDArray[np.bool_], seed: int, **kw: Any) -> FloatArray:
    _check_kwargs("cva", kw, ())
    return _cva_magnitude(x, y)


def _cca(
    x: FloatArray, y: FloatArray, w: FloatArray, ridge: float = 1e-10
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Weighted CCA: ``(rho, a, b, mean_x, mean_y)`` with ``a' S11 a = b' S22 b = 1`` and ``rho`` ascending."""
    c = x.shape[1]
    wsum = w.sum()
    mx = (w @ x) / wsum
    my = (w @ y) / wsum
    xc = x - mx
    yc = y - my
    s11 = (xc * w[:, None]).T @ xc / wsum
    s22 = (yc * w[:, None]).T @ yc / wsum
    s12 = (xc * w[:, None]).T @ yc / wsum
    # a ridge proportional to each band's own variance keeps the problem solvable and affine equivariant; the
    # small absolute floor only matters for a constant band, which then simply carries no signal
    s11 = s11 + np.diag(ridge * np.diag(s11) + 1e-12 * max(float(np.trace(s11)) / c, 1e-30))
    s22 = s22 + np.diag(ridge * np.diag(s22) + 1e-12 * max(float(np.trace(s22)) / c, 1e-30))
    s22_inv_s21 = linalg.solve(s22, s12.T, assume_a="pos")
    lhs = s12 @ s22_inv_s21
    rho2, a = linalg.eigh((lhs + lhs.T) / 2, s11)  # S12 S22^-1 S21 a = rho^2 S11 a, a' S11 a = 1
    rho = np.sqrt(np.clip(rho2, 0.0, 1.0))
    b = s22_inv_s21 @ a
    norm = np.sqrt(np.einsum("ij,ik,kj->j", b, s22, b))
    b = b / np.where(norm > 0, norm, 1.0)  # b' S22 b = 1 and a' S12 b = rho >= 0
    return rho, a, b, mx, my


def _mad_chi2(
    x: FloatArray, y: FloatArray, fit: tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]
) -> FloatArray:
    """Chi-square statistic ``Z = sum (MAD_i / sigma_i)^2`` of pixels under a fitted CCA."""
    rho, a, b, mx, my = fit
    mad = (x - mx) @ a - (y - my) @ b
    var = np.maximum(2.0 * (1.0 - rho), 1e-12)
    return np.asarray((mad**2 / var).sum(axis=1), dtype=np.float64)


def _irmad(
    x: FloatArray,
    y: FloatArray,
    usable: NDArray[np.bool_],
    seed: int,
    *,
    max_iter: int = 30,
    tol: float = 1e-4,
    max_fit_pixels: int = 100_000,
    **kw: Any,
) -> FloatArray:
    _check_kwargs("irmad", kw, ("max_iter", "tol", "max_fit_pixels"))
    if max_iter < 1:
        raise ParameterError(f"max_iter={max_iter!r} must be >= 1")
    if not tol > 0:
        raise ParameterError(f"tol={tol!r} must be > 0")
    if max_fit_pixels < 2 * x.shape[1] + 2:
        raise ParameterError(f"max_fit_pixels={max_fit_pixels!r} is too small; give at least {2 * x.shape[1] + 2}")
    idx = _subsample(x.shape[0], max_fit_pixels, seed)
    xf, yf = x[idx], y[idx]
    w = np.ones(len(idx))
    fit = _cca(xf, yf, w)
    for _ in range(max_iter - 1):
        w = chi2.sf(_mad_chi2(xf, yf, fit), x.shape[1])  # no-change probability 1 - chi2.cdf(Z, C)
        if w.sum() <= 0:
            break
        new = _cca(xf, yf, w)
        delta = float(np.max(np.abs(new[0] - fit[0])))
        fit = new
        if delta < tol:
            break
    return _mad_chi2(x, y, fit)


def _pcakmeans(
    x: FloatArray,
    y: FloatArray,
    usable: NDArray[np.bool_],
    seed: int,
    *,
    block: int = 4,
    variance: float = 0.9,
    max_fit_pixels: int = 100_000,
    n_init: int = 10,
    **kw: Any,
) -> FloatArray:
    from sklearn.cluster import KMeans

    _check_kwargs("pcakmeans", kw, ("block", "variance", "max_fit_pixels", "n_init"))
    height, width = usable.shape
    if not 1 <= block <= min(height, width):
        raise ParameterError(f"block={block!r} must be between 1 and the image side {min(height, width)}")
    if not 0 < variance <= 1:
        raise ParameterError(f"variance={variance!r} must be in (0, 1]: the fraction of variance the PCA keeps")
    if max_fit_pixels < 2 or n_init < 1:
        raise ParameterError(f"max_fit_pixels={max_fit_pixels!r} must be >= 2 and n_init={n_init!r} >= 1")
    mag = _cva_magnitude(x, y)
    diff = np.full((height, width), float(np.median(mag)))  # unusable pixels read as a typical value
    diff[usable] = mag
    # PCA of the non-overlapping block x block blocks
    hb, wb = height // block, width // block
    blocks = diff[: hb * block, : wb * block].reshape(hb, block, wb, block).transpose(0, 2, 1, 3)
    vectors = blocks.reshape(-1, block * block)
    mean = vectors.mean(axis=0)
    cov = np.atleast_2d(np.cov(vectors - mean, rowvar=False)) if len(vectors) > 1 else np.eye(block * block)
    evals, evecs = linalg.eigh(cov)
    evals, evecs = np.clip(evals[::-1], 0.0, None), evecs[:, ::-1]
    total = evals.sum()
    n_comp = 1 if total <= 0 else int(np.searchsorted(np.cumsum(evals) / total, variance - 1e-12) + 1)
    basis = evecs[:, : min(n_comp, block * block)]
    # per-pixel feature: its block x block neighbourhood (reflect-padded), centred and projected on the basis
    lo = block // 2
    padded = np.pad(diff, ((lo, block - 1 - lo), (lo, block - 1 - lo)), mode="reflect" if block > 1 else "edge")
    feat = np.zeros((height, width, basis.shape[1]))
    for dy in range(block):  # block * block shifted images, each vectorised over all pixels
        for dx in range(block):
            k = dy * block + dx
            feat += (padded[dy : dy + height, dx : dx + width] - mean[k])[..., None] * basis[k]
    feat_valid = feat[usable]
    idx = _subsample(len(feat_valid), max_fit_pixels, seed)
    km = KMeans(n_clusters=2, n_init=n_init, random_state=seed).fit(feat_valid[idx])
    labels = km.predict(feat_valid)
    means = [float(mag[labels == c].mean()) if np.any(labels == c) else -np.inf for c in (0, 1)]
    change = int(np.argmax(means))
    centres = km.cluster_centers_
    d_change = np.linalg.norm(feat_valid - centres[change], axis=1)
    d_none = np.linalg.norm(feat_valid - centres[1 - change], axis=1)
    return np.asarray(d_none - d_change, dtype=np.float64)


_METHODS: dict[str, Callable[..., FloatArray]] = {"cva": _cva, "irmad": _irmad, "pcakmeans": _pcakmeans}
_MIN_PIXELS: dict[str, Callable[[int], int]] = {
    "cva": lambda c: 1,
    "irmad": lambda c: 2 * c + 2,
    "pcakmeans": lambda c: 2,
}


def _check_name(name: str) -> None:
    if name not in BASELINES:
        raise ParameterError(f"name={name!r} is not a known baseline; choose one of {list(BASELINES)!r}")


# ----------------------------------------------------------------------------------------------- public API
def baseline_change_map(
    before: NDArray[Any], after: NDArray[Any], valid: NDArray[Any], name: str, *, seed: int = 0, **kw: Any
) -> FloatArray:
    """Change intensity between two dates by a classical unsupervised method.

    Args:
        before: ``(C, H, W)`` reflectance of the first date (NaN allowed where unusable).
        after: ``(C, H, W)`` reflectance of the second date.
        valid: ``(H, W)`` bool, True where both dates are usable. Pixels with a NaN band are dropped too.
        name: One of :data:`BASELINES` (see the module docstring for each method).
        seed: Seed of the pixel subsampling (IR-MAD, PCA-kmeans) and of k-means.
        **kw: Method options. ``"irmad"``: ``max_iter`` (30), ``tol`` (1e-4, on the canonical correlations),
            ``max_fit_pixels`` (100 000 pixels fit the CCA; all are scored). ``"pcakmeans"``: ``block`` (4, the
            side ``h`` of the blocks and neighbourhoods), ``variance`` (0.9, kept by the PCA), ``max_fit_pixels``
            (100 000, fit k-means), ``n_init`` (10 k-means restarts). ``"cva"`` takes none.

    Returns:
        ``(H, W)`` float64 change intensity, higher meaning more change, NaN where not usable: the CVA magnitude,
        the IR-MAD chi-square statistic, or the PCA-kmeans cluster-distance margin (``> 0`` = changed).

    Raises:
        ParameterError: Unknown name or option, shapes that disagree, or too few usable pixels for the method.
    """
    _check_name(name)
    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    v = np.asarray(valid)
    if b.ndim != 3:
        raise ParameterError(f"before must be (C, H, W), got shape {b.shape!r}")
    if a.shape != b.shape:
        raise ParameterError(f"after has shape {a.shape!r} but before has {b.shape!r}; give the same grid and bands")
    if v.shape != b.shape[1:]:
        raise ParameterError(f"valid has shape {v.shape!r}, expected (H, W) = {b.shape[1:]!r}")
    usable = v.astype(bool) & np.isfinite(b).all(axis=0) & np.isfinite(a).all(axis=0)
    n_min = _MIN_PIXELS[name](b.shape[0])
    n_usable = int(usable.sum())
    if n_usable < n_min:
        raise ParameterError(f"valid leaves {n_usable} usable pixels; baseline {name!r} needs at least {n_min}")
    x = b[:, usable].T
    y = a[:, usable].T
    score = _METHODS[name](x, y, usable, seed, **kw)
    out = np.full(usable.shape, np.nan)
    out[usable] = score
    return out


def baseline_patch_scores(
    ds: xr.Dataset, grid: PatchGrid, name: str, *, reference: str = "first", k: int = 3, seed: int = 0
) -> FloatArray:
    """Score every date of a series against a reference with a baseline, per patch.

    The reference is built per pixel from its valid observations, like
    :func:`changescope.change.reference.reference_mask`: for ``"first"`` the per-pixel median of its first ``k``
    valid dates (``k`` capped at the pixel's valid count minus one), those dates themselves left unscored; for
    ``"previous"`` the pixel's last valid observation before the date. Each date's change map is averaged over
    the scored pixels of every patch.

    Args:
        ds: A series (``image``, ``valid``, per-band ``scale``/``offset``).
        grid: Patch grid on the series' pixel grid.
        name: One of :data:`BASELINES`.
        reference: ``"first"`` or ``"previous"``.
        k: Number of reference dates for ``"first"``.
        seed: Seed passed to :func:`baseline_change_map`.

    Returns:
        ``(T, n_rows, n_cols)`` patch scores, NaN where fewer than half of a patch's pixels were scored
        (reference dates, clouds, dates without a usable reference).

    Raises:
        ParameterError: Unknown name or reference, ``k < 1``, or fewer than 2 dates.
        GridMismatchError: The grid is not the series' pixel grid.
    """
    _check_name(name)
    if reference not in BASELINE_REFERENCES:
        raise ParameterError(
            f"reference={reference!r} is not supported here; choose one of {list(BASELINE_REFERENCES)!r}"
        )
    if k < 1:
        raise ParameterError(f"k={k!r} must be >= 1 reference dates")
    n_t = int(ds.sizes["time"])
    if n_t < 2:
        raise ParameterError(f"the series has {n_t} date(s); change needs at least 2")
    height, width = int(ds.sizes["y"]), int(ds.sizes["x"])
    if (grid.height, grid.width) != (height, width):
        raise GridMismatchError(f"grid is {(grid.height, grid.width)!r} px but the series is {(height, width)!r} px")
    refl = np.asarray(reflectance(ds).transpose("time", "band", "y", "x").values, dtype=np.float64)
    valid = np.asarray(ds["valid"].values, dtype=bool) & np.isfinite(refl).all(axis=1)
    maps = np.full((n_t, height, width), np.nan)
    count = np.cumsum(valid, axis=0)
    if reference == "first":
        k_eff = np.minimum(k, np.maximum(count[-1] - 1, 1))
        in_first = valid & (count <= k_eff[None])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            ref_img = np.nanmedian(np.where(in_first[:, None], refl, np.nan), axis=0)
        ref_ok = in_first.any(axis=0)
        pairs = [(t, ref_img, valid[t] & ~in_first[t] & ref_ok) for t in range(n_t)]
    else:
        last = np.maximum.accumulate(np.where(valid, np.arange(n_t)[:, None, None], -1), axis=0)
        pairs = []
        for t in range(1, n_t):
            prev = last[t - 1]
            take = np.broadcast_to(np.maximum(prev, 0)[None, None], (1, *refl.shape[1:]))
            pairs.append((t, np.take_along_axis(refl, take, axis=0)[0], valid[t] & (prev >= 0)))
    n_min = _MIN_PIXELS[name](refl.shape[1])
    for t, ref_t, ok in pairs:
        if ok.sum() >= max(n_min, 1):
            maps[t] = baseline_change_map(ref_t, refl[t], ok, name, seed=seed)
    scores = grid.aggregate(maps, "mean")
    frac = grid.aggregate(np.isfinite(maps), "fraction")
    return np.asarray(np.where(frac >= _MIN_VALID_FRACTION, scores, np.nan), dtype=np.float64)
