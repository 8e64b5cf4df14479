"""Shared type aliases: ``Literal`` names for string options, paths and boxes."""

from __future__ import annotations

import os
from typing import Literal, TypeAlias

__all__ = [
    "Aggregation",
    "BBox",
    "MonthlySelection",
    "PathLike",
    "ReaderFormat",
    "ShiftReference",
]

PathLike: TypeAlias = str | os.PathLike[str]
"""A filesystem path given as ``str`` or :class:`os.PathLike`."""

BBox: TypeAlias = tuple[float, float, float, float]
"""A bounding box ``(minx, miny, maxx, maxy)`` in the series CRS."""

ReaderFormat: TypeAlias = Literal["geotiff_folder", "perband", "oscd", "dynamicearthnet", "stac", "zarr", "netcdf"]
"""Names of the registered series readers (``changescope.open(path, format=...)``)."""

Aggregation: TypeAlias = Literal["fraction", "mean", "majority"]
"""How :meth:`changescope.grid.PatchGrid.aggregate` reduces the pixels of a patch."""

MonthlySelection: TypeAlias = Literal["label_day", "monthly_median", "all"]
"""How the DynamicEarthNet reader picks images: the label day's image, a monthly median, or all."""

ShiftReference: TypeAlias = Literal["first", "clearest"]
"""Which date co-registration shifts are measured against."""
