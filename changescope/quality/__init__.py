"""Series quality checks: co-registration shifts between dates, valid fractions and radiometry.

- :func:`estimate_shift` measures the sub-pixel displacement between two images (phase correlation);
- :func:`check_series` reports, per date, the valid fraction, the shift against a reference date and a
  reflectance summary, and flags dates that need attention;
- :func:`fix_shift` returns a co-registered copy of a series.

Sign convention: a shift ``(dy, dx)`` is the displacement of a date relative to the reference, in pixels
(``moving[y + dy, x + dx]`` shows ``reference[y, x]``); :func:`fix_shift` moves each date by ``(-dy, -dx)``.
"""

from changescope.quality.fix import fix_shift
from changescope.quality.report import BandStats, DateQuality, QualityReport, check_series
from changescope.quality.shift import MIN_VALID_FRACTION, Shift, ShiftFeature, central_window, estimate_shift

__all__ = [
    "MIN_VALID_FRACTION",
    "BandStats",
    "DateQuality",
    "QualityReport",
    "Shift",
    "ShiftFeature",
    "central_window",
    "check_series",
    "estimate_shift",
    "fix_shift",
]
