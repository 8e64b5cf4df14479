"""Dates from file names."""

from __future__ import annotations

import re

import pandas as pd

from changescope.errors import DateError

__all__ = ["date_from_name", "parse_date"]

# Most specific first. Digits must not touch other digits, so `20161130T130757` yields 2016-11-30 and an id such
# as `A007527` yields nothing.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<!\d)(\d{4})[-_.](\d{2})[-_.](\d{2})(?!\d)"), "ymd"),
    (re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"), "ymd"),
    (re.compile(r"(?<!\d)(\d{4})[-_](\d{2})(?![\d])"), "ym"),
)


def _valid(y: int, m: int, d: int) -> pd.Timestamp | None:
    if not (1900 <= y <= 2200):
        return None
    try:
        return pd.Timestamp(year=y, month=m, day=d)
    except ValueError:
        return None


def date_from_name(name: str) -> pd.Timestamp | None:
    """Find a date in a file name: ``YYYY-MM-DD``, ``YYYY_MM_DD``, ``YYYYMMDD`` or ``YYYY-MM`` (first of month).

    The date may be embedded in a longer name (``S2A_..._20161130T130757_B02``). Returns ``None`` when no
    plausible date is found.
    """
    for pattern, kind in _PATTERNS:
        for match in pattern.finditer(name):
            y, m = int(match.group(1)), int(match.group(2))
            d = int(match.group(3)) if kind == "ymd" else 1
            ts = _valid(y, m, d)
            if ts is not None:
                return ts
    return None


def parse_date(text: str, *, source: str = "") -> pd.Timestamp:
    """Parse a date string (any form pandas reads, or one :func:`date_from_name` finds).

    Raises:
        DateError: The text holds no date; the message names ``source``.
    """
    found = date_from_name(text)
    if found is not None:
        return found
    try:
        return pd.Timestamp(text.strip())
    except (ValueError, TypeError) as err:
        where = f" in {source}" if source else ""
        raise DateError(f"cannot read a date from {text!r}{where}; use YYYY-MM-DD, YYYYMMDD or YYYY-MM") from err
