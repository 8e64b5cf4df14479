"""The changescope exception tree.

Every error changescope raises for a user mistake derives from :class:`ChangescopeError`, and each subclass also
inherits the builtin that fits it (``ValueError``, ``FileNotFoundError``, ``OSError``), so callers can catch
either. Messages name the file or parameter, show the offending value and say what to do.
"""

from __future__ import annotations

__all__ = [
    "BandMismatchError",
    "ChangescopeError",
    "CorruptFileError",
    "CRSMismatchError",
    "DateError",
    "DuplicateDateError",
    "EmptySeriesError",
    "GridMismatchError",
    "MissingDependencyError",
    "NoImagesFoundError",
    "NotFoundError",
    "ParameterError",
    "UnknownFormatError",
    "WeightsNotFoundError",
]


class ChangescopeError(Exception):
    """Root of every error changescope raises on purpose."""


class ParameterError(ChangescopeError, ValueError):
    """A function or CLI parameter has an invalid value."""


class NoImagesFoundError(ChangescopeError, FileNotFoundError):
    """A path holds no image that a reader understands."""


class DateError(ChangescopeError, ValueError):
    """A date could not be parsed from a file name or a metadata field."""


class DuplicateDateError(DateError):
    """Two images of a series carry the same date."""


class CRSMismatchError(ChangescopeError, ValueError):
    """Images of one series are in different coordinate reference systems."""


class BandMismatchError(ChangescopeError, ValueError):
    """Band count or names differ across the dates of a series, or a required band is missing."""


class GridMismatchError(ChangescopeError, ValueError):
    """Two rasters that must share a pixel grid do not (labels vs images, embeddings vs series)."""


class CorruptFileError(ChangescopeError, OSError):
    """A file exists but cannot be read as what it claims to be."""


class EmptySeriesError(ChangescopeError, ValueError):
    """A series has no dates (or no valid dates) left to work on."""


class UnknownFormatError(ChangescopeError, ValueError):
    """No reader recognises an input, or an unknown format name was given."""


class MissingDependencyError(ChangescopeError, ImportError):
    """An optional dependency needed by a feature is not installed."""


class WeightsNotFoundError(ChangescopeError, FileNotFoundError):
    """Model weights are needed but not available (wrong path, or offline with an empty cache)."""


class NotFoundError(ChangescopeError, LookupError):
    """An id (a run, an event, a date, a figure) that does not exist where it was looked for."""
