"""Ground truth of change per patch, from land-cover labels or from bi-temporal change masks.

These are the rules evaluation uses; they are deliberately simple and written down here.

From labels (two dates ``a`` -> ``b``):

1. A pixel is *comparable* when it is labelled (class id >= 0) at both dates, and *changed* when it is comparable
   and its class differs.
2. ``fraction`` of a patch = changed pixels / comparable pixels. When fewer than ``min_labelled`` (default 50 %)
   of the patch's pixels are comparable, the patch's truth is unknown: ``fraction`` is NaN and ``changed`` False,
   and ``known`` is False (evaluation drops such patches).
3. The patch's change type is its *dominant transition*: the ``(from, to)`` class pair with the most changed
   pixels (ties go to the smallest ``from * n + to``); ``-1, -1`` when no pixel changed.
4. A patch has *changed* when ``fraction >= min_fraction`` (default 0.05: at least 5 % of its comparable pixels).

Per-patch per-date series compare each date with the previous date (``reference="previous"``, the default, which
marks the month a change appears) or with the first date (``reference="first"``, cumulative change).

From a change mask (OSCD: stored 1 = no change, 2 = change; exposed by the reader as ``change`` with 1 = change,
0 = no change, -1 = unknown): ``fraction`` = changed pixels / known pixels, and the same ``min_fraction`` and
``min_labelled`` rules apply.

Truth given as a separate raster must lie on the series' pixel grid (:func:`truth_on_series_grid`,
:func:`change_mask_on_grid`). A raster without georeference (the OSCD masks) needs the series' shape. A
georeferenced one in another CRS or on another grid is reprojected onto the series' grid (nearest neighbour, with a
warning; its pixels outside the truth's footprint are unknown) when their extents overlap, and refused when they do
not: it is never read as if it were on the series' grid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from changescope.errors import CRSMismatchError, GridMismatchError, ParameterError
from changescope.grid import PatchGrid
from changescope.types import PathLike

__all__ = [
    "DEFAULT_MIN_FRACTION",
    "DEFAULT_MIN_LABELLED",
    "PatchChange",
    "change_mask_on_grid",
    "mask_change",
    "patch_change",
    "patch_change_series",
    "series_truth",
    "truth_on_series_grid",
]

DEFAULT_MIN_FRACTION = 0.05
"""A patch has changed when at least this share of its comparable pixels changed class."""

DEFAULT_MIN_LABELLED = 0.5
"""A patch's truth is unknown when fewer than this share of its pixels are comparable."""


@dataclass(frozen=True)
class PatchChange:
    """Per-patch change truth between two dates; every array is ``(n_rows, n_cols)``.

    Attributes:
        fraction: Share of comparable pixels that changed (NaN when unknown).
        known: Whether enough pixels were comparable to decide.
        changed: ``known & (fraction >= min_fraction)``.
        from_class: Class before of the dominant transition (-1 when none).
        to_class: Class after of the dominant transition (-1 when none).
    """

    fraction: NDArray[np.float64]
    known: NDArray[np.bool_]
    changed: NDArray[np.bool_]
    from_class: NDArray[np.int64]
    to_class: NDArray[np.int64]


def _check_fractions(min_fraction: float, min_labelled: float) -> None:
    if not 0 < min_fraction <= 1:
        raise ParameterError(f"min_fraction={min_fraction!r} must be in (0, 1]")
    if not 0 < min_labelled <= 1:
        raise ParameterError(f"min_labelled={min_labelled!r} must be in (0, 1]")


def patch_change(
    labels_a: NDArray[np.integer[Any]],
    labels_b: NDArray[np.integer[Any]],
    grid: PatchGrid,
    *,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    min_labelled: float = DEFAULT_MIN_LABELLED,
) -> PatchChange:
    """Per-patch change between two label maps (see the module docstring for the rules).

    Args:
        labels_a: Class ids at the earlier date ``(height, width)``, negative = unlabelled.
        labels_b: Class ids at the later date, same grid.
        grid: The patch grid.
        min_fraction: Changed share from which a patch counts as changed.
        min_labelled: Comparable share under which a patch's truth is unknown.
    """
    _check_fractions(min_fraction, min_labelled)
    a = np.asarray(labels_a).astype(np.int64)
    b = np.asarray(labels_b).astype(np.int64)
    if a.shape != b.shape:
        raise GridMismatchError(f"label maps have shapes {a.shape!r} and {b.shape!r}; they must share one grid")
    comparable = (a >= 0) & (b >= 0)
    changed_px = comparable & (a != b)
    n_cls = int(max(a.max(initial=0), b.max(initial=0))) + 1
    code = np.where(changed_px, a * n_cls + b, -1)
    comp_frac = grid.aggregate(comparable, "fraction")
    changed_frac = grid.aggregate(changed_px, "fraction")
    known = comp_frac >= min_labelled
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(known, changed_frac / np.maximum(comp_frac, 1e-12), np.nan)
    dominant = grid.aggregate(code, "majority")
    from_class = np.where(dominant >= 0, dominant // n_cls, -1)
    to_class = np.where(dominant >= 0, dominant % n_cls, -1)
    return PatchChange(
        fraction=fraction,
        known=known,
        changed=known & (np.nan_to_num(fraction) >= min_fraction),
        from_class=from_class.astype(np.int64),
        to_class=to_class.astype(np.int64),
    )


def mask_change(
    mask: NDArray[np.integer[Any]],
    grid: PatchGrid,
    *,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    min_labelled: float = DEFAULT_MIN_LABELLED,
) -> PatchChange:
    """Per-patch change from a bi-temporal change mask (1 = change, 0 = no change, negative = unknown).

    The transition arrays are all -1: a mask carries no classes.
    """
    _check_fractions(min_fraction, min_labelled)
    m = np.asarray(mask).astype(np.int64)
    known_px = m >= 0
    known_frac = grid.aggregate(known_px, "fraction")
    changed_frac = grid.aggregate(known_px & (m > 0), "fraction")
    known = known_frac >= min_labelled
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(known, changed_frac / np.maximum(known_frac, 1e-12), np.nan)
    none = np.full(grid.shape, -1, dtype=np.int64)
    return PatchChange(
        fraction=fraction,
        known=known,
        changed=known & (np.nan_to_num(fraction) >= min_fraction),
        from_class=none,
        to_class=none.copy(),
    )


def patch_change_series(
    labels: xr.DataArray,
    grid: PatchGrid,
    *,
    reference: Literal["previous", "first"] = "previous",
    min_fraction: float = DEFAULT_MIN_FRACTION,
    min_labelled: float = DEFAULT_MIN_LABELLED,
) -> xr.Dataset:
    """Per-patch, per-date change truth from a label series ``(time, y, x)``.

    Dates whose label map is entirely unlabelled (e.g. daily images between label days) are skipped.

    Returns:
        Dataset over ``(time, row, col)`` (``time`` = the later date of each compared pair) with variables
        ``fraction``, ``known``, ``changed``, ``from_class``, ``to_class``; ``attrs`` record the rules' parameters.
    """
    if reference not in ("previous", "first"):
        raise ParameterError(f"reference={reference!r} must be 'previous' or 'first'")
    if tuple(labels.dims) != ("time", "y", "x"):
        raise ParameterError(f"labels have dims {tuple(labels.dims)!r}, expected ('time', 'y', 'x')")
    arr = np.asarray(labels.values)
    times = pd.DatetimeIndex(labels["time"].values)
    keep = [t for t in range(arr.shape[0]) if (arr[t] >= 0).any()]
    if len(keep) < 2:
        raise ParameterError("labels: fewer than two labelled dates; change truth needs at least two")
    results = []
    for i, t in enumerate(keep[1:], start=1):
        before = keep[0] if reference == "first" else keep[i - 1]
        results.append(patch_change(arr[before], arr[t], grid, min_fraction=min_fraction, min_labelled=min_labelled))
    coords = {"time": times[keep[1:]].values, "row": np.arange(grid.n_rows), "col": np.arange(grid.n_cols)}
    dims = ("time", "row", "col")
    return xr.Dataset(
        {name: (dims, np.stack([getattr(r, name) for r in results])) for name in PatchChange.__dataclass_fields__},
        coords=coords,
        attrs={
            "reference": reference,
            "min_fraction": min_fraction,
            "min_labelled": min_labelled,
            "patch_size": grid.size,
            "stride": grid.stride,
        },
    )


def series_truth(
    ds: xr.Dataset,
    grid: PatchGrid,
    *,
    reference: Literal["previous", "first"] = "previous",
    min_fraction: float = DEFAULT_MIN_FRACTION,
    min_labelled: float = DEFAULT_MIN_LABELLED,
) -> xr.Dataset:
    """Change truth of a series: from its ``labels``, or from its ``change`` mask (OSCD).

    For a change mask the result has one date, the series' last.

    Raises:
        ParameterError: The series has neither labels nor a change mask.
    """
    if "labels" in ds:
        return patch_change_series(
            ds["labels"], grid, reference=reference, min_fraction=min_fraction, min_labelled=min_labelled
        )
    if "change" in ds:
        res = mask_change(np.asarray(ds["change"].values), grid, min_fraction=min_fraction, min_labelled=min_labelled)
        coords = {"time": ds["time"].values[-1:], "row": np.arange(grid.n_rows), "col": np.arange(grid.n_cols)}
        return xr.Dataset(
            {name: (("time", "row", "col"), getattr(res, name)[None]) for name in PatchChange.__dataclass_fields__},
            coords=coords,
            attrs={"reference": "first", "min_fraction": min_fraction, "min_labelled": min_labelled},
        )
    raise ParameterError(
        "the series has no 'labels' or 'change' variable; give truth as land-cover labels or a change mask"
    )


def _crs_name(crs: Any) -> str:
    """A short name of a CRS for messages (``EPSG:32633``, else its first 60 characters)."""
    from rasterio.crs import CRS

    try:
        epsg = CRS.from_user_input(crs).to_epsg()
    except Exception:  # any CRS rasterio cannot name
        epsg = None
    return f"EPSG:{epsg}" if epsg else str(crs)[:60]


def truth_on_series_grid(
    truth: xr.DataArray, series: xr.Dataset, *, source: str, nodata: int = -1
) -> NDArray[np.int64]:
    """Put an integer truth raster ``(y, x)`` or ``(time, y, x)`` on the pixel grid of ``series``.

    Args:
        truth: Class ids or change codes with its own CRS and transform (rioxarray), or none (then it must have the
            series' shape and is taken to be on its grid).
        series: The scored series; its grid is the reference.
        source: The truth's file, named in messages.
        nodata: Value of unknown pixels, written where the truth does not cover the series.

    Returns:
        The truth values on the series' grid.

    Raises:
        GridMismatchError: The truth has no georeference and another shape, or another grid that does not overlap.
        CRSMismatchError: The truth is in another CRS and its extent does not overlap the series'.
    """
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds

    from changescope.io.raster import grid_bounds
    from changescope.series import series_crs, series_transform

    values = np.asarray(truth.values).astype(np.int64)
    shape = (int(series.sizes["y"]), int(series.sizes["x"]))
    crs, dst_crs = truth.rio.crs, series_crs(series)
    if crs is None:
        if values.shape[-2:] != shape:
            raise GridMismatchError(
                f"truth {source!r} has shape {values.shape[-2:]!r} and no georeference, but the series is {shape!r} "
                "px; pass the truth of the same scene on the same grid"
            )
        return values
    src_tf, dst_tf = truth.rio.transform(), series_transform(series)
    tol = 1e-6 * max(1.0, abs(dst_tf.a))
    same = crs == dst_crs and values.shape[-2:] == shape
    if same and np.allclose(tuple(src_tf)[:6], tuple(dst_tf)[:6], rtol=0, atol=tol):
        return values
    have = transform_bounds(crs, dst_crs, *grid_bounds(src_tf, *values.shape[-2:]))
    want = grid_bounds(dst_tf, *shape)
    if have[0] >= want[2] or have[2] <= want[0] or have[1] >= want[3] or have[3] <= want[1]:
        error = CRSMismatchError if crs != dst_crs else GridMismatchError
        raise error(
            f"truth {source!r} ({_crs_name(crs)}) covers {tuple(round(v, 3) for v in have)!r} but the series "
            f"({_crs_name(dst_crs)}) covers "
            f"{tuple(round(v, 3) for v in want)!r}: they do not overlap; pass the truth of the same scene"
        )
    what = f"is in {crs} but the series is in {dst_crs}" if crs != dst_crs else "is on another grid than the series"
    warnings.warn(
        f"truth {source!r} {what}; reprojected onto the series grid (nearest neighbour), pixels it does not cover "
        "count as unknown",
        UserWarning,
        stacklevel=2,
    )
    planes = values.reshape(-1, *values.shape[-2:]).astype(np.int32)
    out = np.full((len(planes), *shape), nodata, dtype=np.int32)
    for src, dst in zip(planes, out, strict=True):
        reproject(
            src,
            dst,
            src_transform=src_tf,
            src_crs=crs,
            src_nodata=nodata,
            dst_transform=dst_tf,
            dst_crs=dst_crs,
            dst_nodata=nodata,
            resampling=Resampling.nearest,
        )
    return out.reshape(*values.shape[:-2], *shape).astype(np.int64)


def change_mask_on_grid(path: PathLike, series: xr.Dataset) -> NDArray[np.int8]:
    """Read a change-mask raster (stored 1/2, 0/1 or 0/255) on the pixel grid of ``series``.

    Returns:
        ``1 = change, 0 = no change, -1 = unknown`` on the series' grid (see :func:`truth_on_series_grid`).

    Raises:
        NoImagesFoundError: The file does not exist.
        CorruptFileError: It is not a readable raster or holds values of no known encoding.
        GridMismatchError: It is not on the series' grid and cannot be put on it.
        CRSMismatchError: It is in another CRS and does not overlap the series.
    """
    from rasterio.errors import NotGeoreferencedWarning

    from changescope.io.oscd import decode_change_mask
    from changescope.io.raster import open_raster, read_array

    file = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(file) as src:
            crs, transform = src.crs, src.transform
        raw = read_array(file, band=1)
    change, _ = decode_change_mask(raw, str(file))
    arr = xr.DataArray(change, dims=("y", "x"))
    if crs is not None:
        arr = arr.rio.write_crs(crs).rio.write_transform(transform)
    return truth_on_series_grid(arr, series, source=str(file)).astype(np.int8)
