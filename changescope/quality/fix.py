"""Co-register a series by undoing measured per-date shifts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from changescope.errors import DateError, ParameterError
from changescope.quality.report import QualityReport
from changescope.quality.shift import Shift
from changescope.series import LABEL_NODATA, validate_series

__all__ = ["fix_shift"]

ShiftsLike = QualityReport | Mapping[Any, Shift | tuple[float, float]]


def _shift_block(block: np.ndarray, correction: tuple[float, float], order: int, cval: float) -> np.ndarray:
    """Move the last two axes of ``block`` by ``correction`` (``ndimage.shift`` semantics), keeping its dtype."""
    vector = (0.0,) * (block.ndim - 2) + correction
    if block.dtype == np.bool_:
        flags: np.ndarray = ndimage.shift(block.astype(np.uint8), vector, order=0, mode="grid-constant", cval=int(cval))
        return flags.astype(bool)
    if np.issubdtype(block.dtype, np.integer) and order == 0:
        out: np.ndarray = ndimage.shift(block, vector, order=0, mode="grid-constant", cval=cval)
        return out
    moved: np.ndarray = ndimage.shift(block.astype(np.float32), vector, order=order, mode="grid-constant", cval=cval)
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        rounded: np.ndarray = np.clip(np.rint(moved), info.min, info.max)
        return rounded.astype(block.dtype)
    return moved.astype(block.dtype)


def _shift_data(data: Any, correction: tuple[float, float], order: int, cval: float) -> Any:
    """Shift a numpy or dask ``(..., y, x)`` array; dask arrays stay lazy (overlapping blocks)."""
    if correction == (0.0, 0.0):
        return data
    if isinstance(data, da.Array):
        depth = {axis: 0 for axis in range(data.ndim)}
        # order <= 1 reads at most 1 px beyond the shift; higher-order splines have a (decaying) global support
        margin = math.ceil(max(abs(correction[0]), abs(correction[1]))) + (1 if order <= 1 else 16)
        depth[data.ndim - 2] = depth[data.ndim - 1] = margin
        return data.map_overlap(
            _shift_block,
            depth=depth,
            boundary=cval if data.dtype != np.bool_ else False,
            dtype=data.dtype,
            correction=correction,
            order=order,
            cval=cval,
        )
    return _shift_block(np.asarray(data), correction, order, cval)


def _inside(size: int, offset: float) -> np.ndarray:
    """Output positions along one axis whose source ``i - offset`` lies within the input (no extrapolation)."""
    src = np.arange(size) - offset
    return (src >= -1e-6) & (src <= size - 1 + 1e-6)


def _stack(parts: list[Any]) -> Any:
    if any(isinstance(p, da.Array) for p in parts):
        return da.stack([da.asarray(p) for p in parts])
    return np.stack([np.asarray(p) for p in parts])


def _corrections(ds: xr.Dataset, shifts: ShiftsLike, include_doubtful: bool) -> list[tuple[float, float]]:
    times = pd.DatetimeIndex(ds["time"].values)
    table: dict[pd.Timestamp, tuple[float, float]] = {}
    items = shifts.shifts().items() if isinstance(shifts, QualityReport) else shifts.items()
    for key, value in items:
        try:
            when = pd.Timestamp(key)
        except (ValueError, TypeError) as err:
            raise DateError(f"shift key {key!r} is not a date; key shifts by the series dates") from err
        if when not in times:
            raise DateError(
                f"shift for {when.date().isoformat()!r} matches no date of the series "
                f"({[t.date().isoformat() for t in times]!r}); was the report made for another series?"
            )
        if isinstance(value, Shift):
            dy, dx = (math.nan, math.nan) if value.doubtful and not include_doubtful else (value.dy, value.dx)
        else:
            try:
                dy, dx = (float(v) for v in value)
            except (TypeError, ValueError) as err:
                raise ParameterError(f"shift for {key!r} is {value!r}; give a Shift or a (dy, dx) pair") from err
        # unmeasured (NaN) and skipped doubtful shifts leave their date as it is
        table[when] = (0.0 - dy, 0.0 - dx) if math.isfinite(dy) and math.isfinite(dx) else (0.0, 0.0)
    return [table.get(t, (0.0, 0.0)) for t in times]


def fix_shift(ds: xr.Dataset, shifts: ShiftsLike, *, order: int = 1, include_doubtful: bool = False) -> xr.Dataset:
    """Return a co-registered copy of a series: every date moved back by its measured displacement.

    Each date's ``image`` is moved by ``(-dy, -dx)`` with sub-pixel interpolation (``order`` 1 = bilinear), its
    ``valid`` mask and ``labels`` by nearest neighbour. Pixels whose source lies outside the grid become invalid
    (image 0, labels ``-1``). Dates without a (finite) shift, and dates whose :class:`Shift` is
    :attr:`~changescope.quality.Shift.doubtful` (unless ``include_doubtful``), are kept as they are. Dask-backed
    series stay lazy.

    Args:
        ds: A series.
        shifts: A :class:`~changescope.quality.QualityReport` of this series, or a mapping of dates to
            :class:`~changescope.quality.Shift` or ``(dy, dx)`` displacements (same sign convention).
        order: Spline order for the image (0 = nearest, 1 = bilinear, 3 = cubic).
        include_doubtful: Also apply shifts measured with a weak match.

    Returns:
        The co-registered series (same grid, dates, bands and attrs; ``attrs["coregistered"] = 1`` and, from a
        report, ``attrs["coregistered_to"]`` = the reference date).

    Raises:
        DateError: A shift is keyed by a date the series does not have.
        ParameterError: A shift is malformed or ``order`` is not within 0..5.
    """
    validate_series(ds)
    if order not in range(6):
        raise ParameterError(f"order={order!r} must be a spline order within 0..5 (1 = bilinear)")
    corrections = _corrections(ds, shifts, include_doubtful)
    height, width = ds.sizes["y"], ds.sizes["x"]
    images, valids, labels = [], [], []
    for i, (cy, cx) in enumerate(corrections):
        images.append(_shift_data(ds["image"].data[i], (cy, cx), order, 0.0))
        moved_valid = _shift_data(ds["valid"].data[i], (cy, cx), 0, 0.0)
        if (cy, cx) != (0.0, 0.0):
            rows, cols = _inside(height, cy), _inside(width, cx)
            if isinstance(moved_valid, da.Array):
                rows = da.from_array(rows, chunks=moved_valid.chunks[0])
                cols = da.from_array(cols, chunks=moved_valid.chunks[1])
            moved_valid = moved_valid & rows[:, None] & cols[None, :]
        valids.append(moved_valid)
        if "labels" in ds:
            labels.append(_shift_data(ds["labels"].data[i], (cy, cx), 0, LABEL_NODATA))
    out = ds.copy()
    out["image"] = ds["image"].copy(data=_stack(images))
    out["valid"] = ds["valid"].copy(data=_stack(valids))
    if "labels" in ds:
        out["labels"] = ds["labels"].copy(data=_stack(labels))
    out.attrs["coregistered"] = 1
    if isinstance(shifts, QualityReport):
        out.attrs["coregistered_to"] = str(shifts.reference.isoformat())
    return out
