"""Semi-real series from real pairs: a labelled monthly series built from one real bi-temporal pair and its mask.

:func:`series_from_pair` turns a two-date series with a change mask (e.g. ``changescope.open(oscd_city)``, or
:func:`~changescope.synthetic.pair_io.read_pair`) into ``dates`` monthly dates (the first of each month from
``start``). The rules:

1. **Content**: dates before ``dates[change_month]`` (``change_month`` is a 0-based date index in
   ``[1, dates - 1]``) show the before image, dates from it on the after image; with ``change=False`` every date
   shows the before image. Pixels are reflectance (stored value * scale + offset) in float32, not clipped; pixels
   invalid in the input are filled with their band's median and stay invalid. Output scale 1, offset 0; CRS,
   transform, band names and wavelengths are the pair's.
2. **Labels** ``(time, y, x)`` int16, classes ``0 = no change``, ``1 = change``: 0 before the change date, 1 on
   changed pixels (mask > 0) from it on, ``-1`` (unlabelled, not comparable in :mod:`changescope.truth`) on
   unknown pixels (mask < 0) at every date. With ``change=False`` every label is 0. ``attrs["truth"] = "labels"``,
   so :func:`changescope.truth.series_truth` marks the changed patches at the change date (``reference="previous"``).
3. **Nuisances**, per date, in this order (defaults of :class:`PairNuisances`; all drawn from ``seed`` and
   independent of ``change``, so ``change=False`` gives the same series without the change):

   - *season* [0.25]: ``f = cos(2 pi (month - 7) / 12)`` (peak in July), ``v = clip(NDVI, 0, 1)`` of the image the
     date shows (red = ``B04``/``red`` or ~665 nm, NIR = ``B08``/``nir`` or ~842 nm; no cycle without both). Bands
     at 700-1000 nm are multiplied by ``1 + season f v``, visible bands (< 700 nm) by ``1 - 0.5 season f v``, SWIR
     (> 1300 nm) by ``1 - 0.3 season f v``; other bands and bands of unknown wavelength are left alone.
   - *shift* [0.5 px, at most 1]: the whole image moves by ``(dy, dx)``, each uniform in ``[-shift, shift]``,
     bilinear (:func:`~changescope.synthetic.nuisance.subpixel_shift`); the input's invalid pixels move with it.
   - *gain* [0.08] and *offset* [0.01]: ``x * gain + offset`` with ``gain = 1 + a + b``, ``a`` uniform in
     ``[-0.75 g, 0.75 g]`` per date and ``b`` in ``[-0.25 g, 0.25 g]`` per date and band (so ``gain`` stays in
     ``[1 - g, 1 + g]``), ``offset`` uniform in ``[-o, o]`` per date and band.
   - *haze* [0.04]: on half of the dates (drawn) strength ``h`` is uniform in ``[0, 0.1 haze]`` (nearly clear), on
     the others in ``[0.25 haze, haze]``; ``h * w * local`` is added, ``w = clip((490 nm / wavelength)^2, 0, 1)``
     (0.5 when unknown) and ``local`` a smooth field (correlation ``size / 6`` px) clipped to ``[0, 1]``.
   - *clouds*: ``cloud_dates * dates`` [0.4] dates (nearest integer, halves up), drawn among the dates other than
     ``dates[change_month]`` when ``clear_change_date`` [True], get a cloud cover uniform in ``cloud_cover``
     [(0.05, 0.35)]: a smooth field (``size / 10`` px) thresholded at that quantile, opacity
     ``clip(excess / 0.35, 0, 1)``, blended towards a grey top of 0.3-0.6 reflectance (drawn per date). ``valid``
     is False where the opacity exceeds 0.05.
   - *noise* [0.005]: Gaussian, independent per pixel and band.

The drawn parameters of every date are in ``attrs["from_pair"]`` (JSON); ``attrs["change_date"]`` is the ISO date
of ``dates[change_month]`` or ``"none"``. The same input and seed give bit-identical output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.series import LABEL_NODATA, BandInfo, band_infos, make_series, series_crs, series_transform
from changescope.synthetic.fields import smooth_noise
from changescope.synthetic.nuisance import subpixel_shift

__all__ = ["CHANGE_CLASSES", "PEAK_MONTH", "PairNuisances", "series_from_pair"]

F32 = NDArray[np.float32]
PEAK_MONTH = 7
"""Month of the vegetation peak (northern summer)."""
CHANGE_CLASSES = {0: "no change", 1: "change"}
"""Class table of the labels."""


@dataclass(frozen=True)
class PairNuisances:
    """Nuisance settings of :func:`series_from_pair` (rules in the module docstring); 0 turns one off.

    Attributes:
        gain: Multiplicative gain half-range: per date and band in ``[1 - gain, 1 + gain]``.
        offset: Additive offset half-range in reflectance, per date and band.
        haze: Largest haze strength in reflectance (blue-heavy, smooth).
        shift: Largest sub-pixel shift in pixels (``dy`` and ``dx`` each), at most 1.
        noise: Gaussian noise sigma in reflectance, per pixel and band.
        season: Amplitude of the seasonal vegetation cycle.
        cloud_dates: Share of dates with clouds, in ``[0, 1]``.
        cloud_cover: ``(min, max)`` cloud fraction of a cloudy date, within ``[0, 1]``.
        clear_change_date: Never put clouds on the change date.
    """

    gain: float = 0.08
    offset: float = 0.01
    haze: float = 0.04
    shift: float = 0.5
    noise: float = 0.005
    season: float = 0.25
    cloud_dates: float = 0.4
    cloud_cover: tuple[float, float] = (0.05, 0.35)
    clear_change_date: bool = True

    @classmethod
    def none(cls) -> PairNuisances:
        """Every nuisance off: each date is exactly the before or the after image."""
        return cls(gain=0, offset=0, haze=0, shift=0, noise=0, season=0, cloud_dates=0)

    def validate(self) -> PairNuisances:
        """Return ``self`` after checking the values.

        Raises:
            ParameterError: A value is negative or out of its range.
        """
        for name in ("gain", "offset", "haze", "shift", "noise", "season", "cloud_dates"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value < 0:
                raise ParameterError(f"{name}={value!r} must be a number >= 0 (0 turns the nuisance off)")
        if self.gain >= 1:
            raise ParameterError(f"gain={self.gain!r} must be below 1 (gains lie in [1 - gain, 1 + gain])")
        if self.shift > 1:
            raise ParameterError(f"shift={self.shift!r} must be at most 1 pixel; pass a shift in [0, 1]")
        if self.cloud_dates > 1:
            raise ParameterError(f"cloud_dates={self.cloud_dates!r} is a share of dates; pass a value in [0, 1]")
        lo, hi = (float(c) for c in self.cloud_cover)
        if not 0 <= lo <= hi <= 1:
            raise ParameterError(f"cloud_cover={self.cloud_cover!r} must be (min, max) with 0 <= min <= max <= 1")
        return self


def _band_index(bands: list[BandInfo], names: tuple[str, ...], micrometres: float, tol: float) -> int | None:
    for i, b in enumerate(bands):
        if b.name.lower() in names:
            return i
    near = [(abs(b.wavelength - micrometres), i) for i, b in enumerate(bands) if b.wavelength is not None]
    best = min(near, default=None)
    return best[1] if best is not None and best[0] <= tol else None


def _vegetation(image: F32, red: int | None, nir: int | None) -> F32 | None:
    """``clip(NDVI, 0, 1)`` of ``(bands, h, w)`` reflectance, ``None`` without red and NIR bands."""
    if red is None or nir is None:
        return None
    r, n = image[red], image[nir]
    total = n + r
    ndvi = np.where(np.abs(total) > 1e-6, (n - r) / np.where(np.abs(total) > 1e-6, total, 1), 0)
    return np.clip(ndvi, 0, 1).astype(np.float32)


def _season_weights(bands: list[BandInfo]) -> F32:
    """Per-band response to the vegetation cycle: +1 NIR/red edge, -0.5 visible, -0.3 SWIR, 0 otherwise."""
    out = np.zeros(len(bands), dtype=np.float32)
    for i, b in enumerate(bands):
        if b.wavelength is None:
            continue
        nm = b.wavelength * 1000
        out[i] = 1.0 if 700 <= nm <= 1000 else -0.5 if nm < 700 else -0.3 if nm > 1300 else 0.0
    return out


def _reflectance(pair: xr.Dataset) -> tuple[F32, NDArray[np.bool_]]:
    """Reflectance ``(2, bands, h, w)`` with invalid pixels filled by the band median, and ``valid``."""
    img = np.asarray(pair["image"].values).astype(np.float32)
    img = img * pair["scale"].values.astype(np.float32)[None, :, None, None]
    img = img + pair["offset"].values.astype(np.float32)[None, :, None, None]
    valid = np.asarray(pair["valid"].values, dtype=bool) & np.isfinite(img).all(axis=1)
    for t in range(img.shape[0]):
        if not valid[t].all():
            fill = [np.median(band[valid[t]]) if valid[t].any() else 0.0 for band in img[t]]
            img[t] = np.where(valid[t][None], img[t], np.asarray(fill, dtype=np.float32)[:, None, None])
    return img.astype(np.float32), valid


def _change_mask(pair: xr.Dataset, mask: NDArray[Any] | None) -> NDArray[np.int8]:
    shape = (int(pair.sizes["y"]), int(pair.sizes["x"]))
    if mask is None:
        if "change" not in pair:
            raise ParameterError(
                "the pair has no 'change' variable; pass mask= a (y, x) change mask (> 0 = change) or read the "
                "pair with its mask"
            )
        mask = np.asarray(pair["change"].values)
    m = np.asarray(mask)
    if m.shape != shape:
        raise ParameterError(f"mask has shape {m.shape!r} but the pair is {shape!r}; pass the mask of this pair")
    values = m.astype(np.float64)
    return np.where(np.isnan(values), -1, np.sign(np.nan_to_num(values))).astype(np.int8)


def _check(pair: xr.Dataset, dates: int, change_month: int) -> None:
    if dates < 2:
        raise ParameterError(f"dates={dates!r} must be at least 2 (a date before the change and one from it on)")
    if not 1 <= change_month <= dates - 1:
        raise ParameterError(
            f"change_month={change_month!r} must be a date index in [1, {dates - 1}] (dates[change_month] is the "
            "first date showing the change)"
        )
    if "time" not in pair.dims or int(pair.sizes["time"]) != 2 or "image" not in pair:
        n = int(pair.sizes.get("time", 0))
        raise ParameterError(f"pair has {n} dates; pass a two-date series (before, after), e.g. an OSCD city")


def _month_starts(start: str, dates: int) -> pd.DatetimeIndex:
    try:
        first = pd.Timestamp(start)
    except (ValueError, TypeError) as err:
        raise ParameterError(f"start={start!r} is not a date; pass e.g. '2020-01-01'") from err
    if first.day != 1:
        raise ParameterError(f"start={start!r} must be the first day of a month, e.g. '2020-01-01'")
    return pd.date_range(first.normalize(), periods=dates, freq="MS").as_unit("ns")


def series_from_pair(
    pair: xr.Dataset,
    *,
    dates: int = 12,
    change_month: int = 6,
    start: str = "2020-01-01",
    change: bool = True,
    nuisances: PairNuisances | None = None,
    mask: NDArray[Any] | None = None,
    seed: int = 0,
) -> xr.Dataset:
    """Build a labelled monthly series from a real before/after pair (rules in the module docstring).

    Args:
        pair: Two-date series (before, after) with a ``change (y, x)`` mask (1 change, 0 no, -1 unknown).
        dates: Number of monthly dates (>= 2).
        change_month: Index of the first date showing the change, in ``[1, dates - 1]``.
        start: First date, the first day of a month.
        change: Show the after image from the change date on; ``False`` shows the before image at every date.
        nuisances: Nuisance settings; :class:`PairNuisances` defaults when omitted.
        mask: Change mask ``(y, x)`` replacing ``pair["change"]``: > 0 change, 0 no change, < 0 unknown.
        seed: Random seed.

    Returns:
        The series: float32 reflectance ``image``, ``valid`` and ``labels``, on the pair's grid and bands.

    Raises:
        ParameterError: A parameter is out of range, the pair has not two dates, or the mask is missing or
            of the wrong shape.
    """
    _check(pair, dates, change_month)
    nz = (nuisances or PairNuisances()).validate()
    times = _month_starts(start, dates)
    m = _change_mask(pair, mask)
    refl, valid_in = _reflectance(pair)
    bands = band_infos(pair)
    n_band, height, width = refl.shape[1:]
    size = max(height, width)
    red = _band_index(bands, ("b04", "red"), 0.665, 0.03)
    nir = _band_index(bands, ("b08", "nir"), 0.842, 0.05)
    veg = [_vegetation(refl[0], red, nir), _vegetation(refl[1], red, nir)]
    season_w = _season_weights(bands)
    haze_w = np.array(
        [0.5 if b.wavelength is None else min(1.0, (0.490 / b.wavelength) ** 2) for b in bands], dtype=np.float32
    )

    rng = np.random.default_rng(seed)
    g = nz.gain
    gains = 1 + rng.uniform(-0.75 * g, 0.75 * g, (dates, 1)) + rng.uniform(-0.25 * g, 0.25 * g, (dates, n_band))
    offsets = rng.uniform(-nz.offset, nz.offset, (dates, n_band))
    clear_haze = rng.random(dates) < 0.5
    hazes = np.where(clear_haze, rng.uniform(0, 0.1, dates), rng.uniform(0.25, 1.0, dates)) * nz.haze
    shifts = rng.uniform(-nz.shift, nz.shift, (dates, 2))
    eligible = [t for t in range(dates) if not (nz.clear_change_date and t == change_month)]
    n_cloudy = min(len(eligible), int(np.floor(nz.cloud_dates * dates + 0.5)))
    cloudy = set(rng.choice(eligible, size=n_cloudy, replace=False).tolist()) if n_cloudy else set()
    covers = rng.uniform(nz.cloud_cover[0], nz.cloud_cover[1], dates)
    tops = rng.uniform(0.3, 0.6, dates)
    field_seeds = rng.integers(0, 2**63 - 1, dates)

    images = np.empty((dates, n_band, height, width), dtype=np.float32)
    valid = np.empty((dates, height, width), dtype=bool)
    records: list[dict[str, Any]] = []
    for t, when in enumerate(times):
        src = 1 if change and t >= change_month else 0
        frng = np.random.default_rng(int(field_seeds[t]))
        img = refl[src].copy()
        invalid = (~valid_in[src]).astype(np.float32)
        phase = float(np.cos(2 * np.pi * (when.month - PEAK_MONTH) / 12))
        v = veg[src]
        if nz.season > 0 and v is not None:
            img *= 1 + np.float32(nz.season * phase) * season_w[:, None, None] * v[None]
        dy, dx = (float(s) for s in shifts[t])
        if dy or dx:
            img = subpixel_shift(img, dy, dx)
            invalid = subpixel_shift(invalid[None], dy, dx)[0]
        if g > 0:
            img *= gains[t].astype(np.float32)[:, None, None]
        if nz.offset > 0:
            img += offsets[t].astype(np.float32)[:, None, None]
        if hazes[t] > 0:
            local = np.clip(0.7 + 0.3 * smooth_noise(frng, (height, width), size / 6), 0, 1)
            img += np.float32(hazes[t]) * haze_w[:, None, None] * local[None]
        cloud = np.zeros((height, width), dtype=bool)
        if t in cloudy and covers[t] > 0:
            field = smooth_noise(frng, (height, width), size / 10)
            excess = field - np.float32(np.quantile(field, 1.0 - covers[t]))
            alpha = np.clip(excess / 0.35, 0, 1).astype(np.float32)
            top = np.clip(tops[t] + 0.05 * excess, 0.3, 0.6).astype(np.float32)
            img += alpha[None] * (top[None] - img)
            cloud = alpha > 0.05
        if nz.noise > 0:
            img += np.float32(nz.noise) * frng.standard_normal(img.shape, dtype=np.float32)
        images[t] = img
        valid[t] = (invalid <= 0) & ~cloud
        records.append(
            {
                "date": when.date().isoformat(),
                "shows": "after" if src else "before",
                "season_phase": round(phase, 6) if nz.season > 0 and v is not None else 0.0,
                "shift": [round(dy, 6), round(dx, 6)],
                "gain": [round(float(x), 6) for x in gains[t]],
                "offset": [round(float(x), 6) for x in offsets[t]],
                "haze": round(float(hazes[t]), 6),
                "cloud_fraction": round(float(cloud.mean()), 6),
            }
        )

    labels = np.zeros((dates, height, width), dtype=np.int16)
    if change:
        labels[change_month:, m > 0] = 1
        labels[:, m < 0] = LABEL_NODATA
    change_date = times[change_month].date().isoformat() if change else "none"
    log = {
        "change": change,
        "change_month": change_month,
        "change_date": change_date,
        "seed": seed,
        "nuisances": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(nz).items()},
        "vegetation_bands": [None if i is None else bands[i].name for i in (red, nir)],
        "changed_pixels": int((m > 0).sum()) if change else 0,
        "dates": records,
    }
    return make_series(
        images,
        times=times,
        bands=[BandInfo(b.name, b.wavelength, 1.0, 0.0) for b in bands],
        crs=series_crs(pair),
        transform=series_transform(pair),
        valid=valid,
        labels=labels,
        classes=CHANGE_CLASSES,
        sensor=f"semi-real from pair ({pair.attrs.get('sensor', 'unknown')})",
        attrs={
            "from_pair": json.dumps(log),
            "change_date": change_date,
            "truth": "labels",
            "pair_source": str(pair.attrs.get("source", "<in-memory>")),
        },
    )
