"""Per-date quality of a series: valid fraction, co-registration shift and a radiometric summary."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import xarray as xr

from changescope.errors import BandMismatchError, ParameterError
from changescope.io.writers import atomic_path
from changescope.quality.shift import (
    MIN_VALID_FRACTION,
    Shift,
    ShiftFeature,
    _check_options,
    _ShiftMeter,
    central_window,
)
from changescope.series import reflectance, validate_series
from changescope.types import PathLike, ShiftReference

__all__ = ["BandStats", "DateQuality", "QualityReport", "check_series"]

_PERCENTILES = (2.0, 50.0, 98.0)


@dataclass(frozen=True)
class BandStats:
    """Reflectance summary of one band on one date, over its valid pixels (NaN when there are none).

    Attributes:
        band: Band name.
        p2: 2nd percentile.
        median: Median.
        p98: 98th percentile.
    """

    band: str
    p2: float
    median: float
    p98: float


@dataclass(frozen=True)
class DateQuality:
    """Quality of one date of a series.

    Attributes:
        time: The date.
        valid_fraction: Fraction of valid pixels in the measured window.
        shift: Displacement of this date relative to the reference date (zero for the reference itself).
        brightness: Median over valid pixels of the band-mean reflectance.
        bands: Per-band reflectance summary.
        is_reference: Whether this is the reference date.
        shift_exceeded: The shift magnitude is above the report's ``max_shift``.
        low_valid: The valid fraction is below the report's ``min_valid``.
        notes: Human-readable remarks (missing shift, doubtful match, few valid pixels).
    """

    time: pd.Timestamp
    valid_fraction: float
    shift: Shift
    brightness: float
    bands: tuple[BandStats, ...]
    is_reference: bool = False
    shift_exceeded: bool = False
    low_valid: bool = False
    notes: tuple[str, ...] = ()

    @property
    def warning(self) -> bool:
        """Whether the date needs attention: shift above the threshold, unmeasured, or too few valid pixels."""
        return self.shift_exceeded or self.low_valid or not self.shift.measured

    @property
    def date(self) -> str:
        """The date as ``YYYY-MM-DD`` (full ISO timestamp when it has a time of day)."""
        return _label(self.time)


@dataclass(frozen=True)
class QualityReport:
    """Quality of every date of a series, as returned by :func:`check_series`.

    Attributes:
        dates: One entry per date, in time order.
        reference: The reference date shifts are measured against.
        reference_mode: How it was chosen (``"first"`` or ``"clearest"``).
        max_shift: Shift magnitude (px) above which a date is flagged.
        min_valid: Valid fraction below which a date is flagged.
        band: Band used for the shifts (``None``: the mean of all bands).
        window: ``(row0, row1, col0, col1)`` of the measured window in the series grid.
        feature: Feature the shifts were measured on.
        attrs: Provenance: the series' ``source``, ``format`` and ``sensor`` and the measuring options.
    """

    dates: tuple[DateQuality, ...]
    reference: pd.Timestamp
    reference_mode: str
    max_shift: float
    min_valid: float
    band: str | None
    window: tuple[int, int, int, int]
    feature: str = "gradient"
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.dates)

    @property
    def flagged(self) -> list[DateQuality]:
        """The dates with a warning."""
        return [d for d in self.dates if d.warning]

    @property
    def shifted(self) -> list[DateQuality]:
        """The dates whose shift exceeds ``max_shift``."""
        return [d for d in self.dates if d.shift_exceeded]

    def shifts(self) -> dict[pd.Timestamp, Shift]:
        """The measured shift of every date, keyed by date (input for :func:`~changescope.quality.fix_shift`)."""
        return {d.time: d.shift for d in self.dates}

    def to_frame(self) -> pd.DataFrame:
        """One row per date (index ``time``).

        Columns: ``valid_fraction, dy, dx, shift, correlation, peak_ratio, brightness``, then ``p2_<band>,
        median_<band>, p98_<band>`` per band, then ``is_reference, shift_exceeded, low_valid, warning, notes``.
        """
        rows = []
        for d in self.dates:
            row: dict[str, Any] = {
                "time": d.time,
                "valid_fraction": d.valid_fraction,
                "dy": d.shift.dy,
                "dx": d.shift.dx,
                "shift": d.shift.magnitude,
                "correlation": d.shift.correlation,
                "peak_ratio": d.shift.peak_ratio,
                "brightness": d.brightness,
            }
            for b in d.bands:
                row.update({f"p2_{b.band}": b.p2, f"median_{b.band}": b.median, f"p98_{b.band}": b.p98})
            row.update(
                is_reference=d.is_reference,
                shift_exceeded=d.shift_exceeded,
                low_valid=d.low_valid,
                warning=d.warning,
                notes="; ".join(d.notes),
            )
            rows.append(row)
        return pd.DataFrame(rows).set_index("time")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (dates as ``YYYY-MM-DD``, NaN as ``None``)."""
        return {
            "reference": _label(self.reference),
            "reference_mode": self.reference_mode,
            "max_shift": self.max_shift,
            "min_valid": self.min_valid,
            "band": self.band,
            "feature": self.feature,
            "window": list(self.window),
            "attrs": self.attrs,
            "sign_convention": "dy, dx = displacement of the date relative to the reference in pixels "
            "(moving[y+dy, x+dx] ~ reference[y, x]); fix by shifting with (-dy, -dx)",
            "dates": [
                {
                    "date": d.date,
                    "valid_fraction": _num(d.valid_fraction),
                    "dy": _num(d.shift.dy),
                    "dx": _num(d.shift.dx),
                    "shift": _num(d.shift.magnitude),
                    "correlation": _num(d.shift.correlation),
                    "peak_ratio": _num(d.shift.peak_ratio),
                    "brightness": _num(d.brightness),
                    "bands": {
                        b.band: {"p2": _num(b.p2), "median": _num(b.median), "p98": _num(b.p98)} for b in d.bands
                    },
                    "is_reference": d.is_reference,
                    "shift_exceeded": d.shift_exceeded,
                    "low_valid": d.low_valid,
                    "warning": d.warning,
                    "notes": list(d.notes),
                }
                for d in self.dates
            ],
        }

    def to_json(self, path: PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically, and return the path."""
        out = Path(path)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        return out


def _label(time: pd.Timestamp) -> str:
    return time.strftime("%Y-%m-%d") if time == time.normalize() else time.isoformat()


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _radiometry(refl: np.ndarray, valid: np.ndarray, names: list[str]) -> tuple[float, tuple[BandStats, ...]]:
    if not valid.any():
        return math.nan, tuple(BandStats(n, math.nan, math.nan, math.nan) for n in names)
    pixels = refl[:, valid]  # (band, n_valid)
    p2, med, p98 = np.percentile(pixels, _PERCENTILES, axis=1)
    stats = tuple(BandStats(n, float(a), float(b), float(c)) for n, a, b, c in zip(names, p2, med, p98, strict=True))
    return float(np.median(pixels.mean(axis=0))), stats


def _check_params(reference: str, max_shift: float, min_valid: float, band: str | None, ds: xr.Dataset) -> None:
    if reference not in get_args(ShiftReference):
        raise ParameterError(f"reference={reference!r} is unknown; choose one of {list(get_args(ShiftReference))!r}")
    if not (isinstance(max_shift, int | float) and math.isfinite(max_shift) and max_shift > 0):
        raise ParameterError(f"max_shift={max_shift!r} must be a positive number of pixels, e.g. 0.5")
    if not 0.0 <= min_valid <= 1.0:
        raise ParameterError(f"min_valid={min_valid!r} must be a fraction within [0, 1]")
    names = [str(b) for b in ds["band"].values]
    if band is not None and band not in names:
        raise BandMismatchError(f"band={band!r} is not in the series; choose one of {names!r} or leave it unset")


def check_series(
    ds: xr.Dataset,
    *,
    reference: ShiftReference = "first",
    max_shift: float = 0.5,
    band: str | None = None,
    min_valid: float = 0.1,
    max_size: int | None = 1024,
    feature: ShiftFeature = "gradient",
    upsample: int = 20,
) -> QualityReport:
    """Check the co-registration and radiometry of every date of a series.

    Everything is measured on the central ``max_size`` x ``max_size`` window of the grid, read one date at a time,
    so a large lazy series is never loaded whole. Per date: the valid fraction, the displacement against the
    reference date (:func:`~changescope.quality.estimate_shift`), and the 2/50/98 percentiles of each band's
    reflectance over valid pixels plus a brightness (median band-mean reflectance).

    Args:
        ds: A series.
        reference: ``"first"`` date, or the ``"clearest"`` one (highest valid fraction; the earliest on ties).
        max_shift: Shift magnitude in pixels above which a date is flagged.
        band: Band to measure shifts on; the mean of all bands when ``None``.
        min_valid: Valid fraction below which a date is flagged.
        max_size: Side of the measured central window (``None``: the whole grid).
        feature: ``"gradient"`` or ``"intensity"`` (see :func:`~changescope.quality.estimate_shift`).
        upsample: Sub-pixel refinement factor.

    Returns:
        The report; dates with too few valid pixels get a NaN shift and a note.

    Raises:
        ParameterError: ``reference``, ``max_shift``, ``min_valid`` or another option is invalid.
        BandMismatchError: ``band`` is not a band of the series.
    """
    validate_series(ds)
    _check_params(reference, max_shift, min_valid, band, ds)
    _check_options(feature, upsample, 0.5)
    rows, cols = central_window(ds.sizes["y"], ds.sizes["x"], max_size)
    sub = ds.isel(y=rows, x=cols)
    refl = reflectance(sub)
    names = [str(b) for b in ds["band"].values]
    band_index = None if band is None else names.index(band)
    times = pd.DatetimeIndex(ds["time"].values)

    def read(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = np.asarray(refl.isel(time=i).values, dtype=np.float64)
        valid = np.asarray(sub["valid"].isel(time=i).values, dtype=bool) & np.isfinite(r).all(axis=0)
        plane = r.mean(axis=0) if band_index is None else r[band_index]
        return r, valid, plane

    if reference == "first":
        ref_index = 0
    else:
        fractions = np.asarray(sub["valid"].mean(dim=("y", "x")).values, dtype=np.float64)
        ref_index = int(np.argmax(fractions))
    ref_data = read(ref_index)
    meter = _ShiftMeter(ref_data[2], ref_data[1], feature=feature, upsample=upsample, whitening=0.5, refine=True)

    dates = []
    for i, t in enumerate(times):
        r, valid, plane = ref_data if i == ref_index else read(i)
        fraction = float(valid.mean())
        if i == ref_index:
            shift = Shift(0.0, 0.0, correlation=1.0, valid_fraction=fraction)
        else:
            shift = meter.measure(plane, valid)
        brightness, stats = _radiometry(r, valid, names)
        notes = []
        if i == ref_index:
            notes.append("reference date")
        if shift.note:
            notes.append(shift.note)
        low = fraction < min_valid
        if low:
            notes.append(f"only {fraction:.1%} valid pixels (< {min_valid:.0%})")
        exceeded = shift.measured and shift.magnitude > max_shift
        dates.append(
            DateQuality(
                time=t,
                valid_fraction=fraction,
                shift=shift,
                brightness=brightness,
                bands=stats,
                is_reference=i == ref_index,
                shift_exceeded=exceeded,
                low_valid=low,
                notes=tuple(notes),
            )
        )
    return QualityReport(
        dates=tuple(dates),
        reference=times[ref_index],
        reference_mode=reference,
        max_shift=float(max_shift),
        min_valid=float(min_valid),
        band=band,
        window=(rows.start, rows.stop, cols.start, cols.stop),
        feature=feature,
        attrs={
            **{k: str(ds.attrs[k]) for k in ("source", "format", "sensor") if k in ds.attrs},
            "min_valid_for_shift": MIN_VALID_FRACTION,
            "upsample": upsample,
        },
    )
