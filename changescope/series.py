"""The image time-series model.

A *series* is an :class:`xarray.Dataset` with

- ``image (time, band, y, x)``: the pixel values as stored (e.g. uint16 digital numbers);
- ``valid (time, y, x)``: ``True`` where a pixel is usable (not cloud, shadow or nodata);
- optionally ``labels (time, y, x)``: integer class ids (``-1`` = unlabelled) whose class table sits in
  ``labels.attrs["class_ids"]`` / ``labels.attrs["class_names"]``;
- coordinates ``time`` (sorted, unique, ``datetime64[ns]``), ``band`` (names), ``y``/``x`` (pixel centres in the
  CRS) and per-band coordinates ``wavelength`` (centre wavelength in micrometres, NaN when unknown), ``scale`` and
  ``offset`` (reflectance = value * scale + offset);
- CRS and affine transform written with rioxarray (``ds.rio.crs``, ``ds.rio.transform()``);
- ``attrs["sensor"]`` naming the source.

Arrays may be numpy or dask: readers build lazy series so that opening a large stack reads only metadata.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS

from changescope.errors import (
    BandMismatchError,
    DuplicateDateError,
    EmptySeriesError,
    GridMismatchError,
    ParameterError,
)

__all__ = [
    "KNOWN_WAVELENGTHS",
    "LABEL_NODATA",
    "BandInfo",
    "band_infos",
    "class_table",
    "make_series",
    "reflectance",
    "series_crs",
    "series_transform",
    "validate_series",
]

LABEL_NODATA = -1
"""Class id of unlabelled pixels in ``labels``."""

KNOWN_WAVELENGTHS: dict[str, float] = {
    # generic optical names (Planet, Landsat-like, CBERS AWFI), micrometres
    "coastal": 0.443,
    "blue": 0.490,
    "green": 0.560,
    "red": 0.665,
    "rededge": 0.705,
    "nir": 0.842,
    "swir1": 1.610,
    "swir2": 2.190,
    # Sentinel-2 MSI band centres
    "B01": 0.443,
    "B02": 0.490,
    "B03": 0.560,
    "B04": 0.665,
    "B05": 0.705,
    "B06": 0.740,
    "B07": 0.783,
    "B08": 0.842,
    "B8A": 0.865,
    "B09": 0.945,
    "B10": 1.375,
    "B11": 1.610,
    "B12": 2.190,
}
"""Centre wavelengths (micrometres) of band names changescope recognises."""


@dataclass(frozen=True)
class BandInfo:
    """Description of one band of a series.

    Attributes:
        name: Band name, e.g. ``"red"`` or ``"B04"``.
        wavelength: Centre wavelength in micrometres, or ``None`` when unknown.
        scale: Multiply stored values by this to get reflectance.
        offset: Add this after scaling.
    """

    name: str
    wavelength: float | None = None
    scale: float = 1.0
    offset: float = 0.0

    @classmethod
    def from_name(cls, name: str, scale: float = 1.0, offset: float = 0.0) -> BandInfo:
        """Build a :class:`BandInfo`, filling the wavelength from :data:`KNOWN_WAVELENGTHS` when known."""
        key = name if name in KNOWN_WAVELENGTHS else name.lower()
        return cls(name=name, wavelength=KNOWN_WAVELENGTHS.get(key), scale=scale, offset=offset)


def _as_times(times: Sequence[Any] | pd.DatetimeIndex | np.ndarray) -> pd.DatetimeIndex:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pandas' "could not infer format" on mixed inputs
            index = pd.DatetimeIndex(pd.to_datetime(list(times), format="mixed"))
    except (ValueError, TypeError) as err:
        raise ParameterError(f"times={list(times)!r} are not dates; pass datetimes or ISO strings") from err
    return index.as_unit("ns")


def _coords_from_transform(transform: Affine, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    if transform.b != 0 or transform.d != 0:
        raise ParameterError(
            f"transform={tuple(transform)!r} is rotated; changescope needs north-up grids, reproject first"
        )
    xs = transform.c + (np.arange(width) + 0.5) * transform.a
    ys = transform.f + (np.arange(height) + 0.5) * transform.e
    return ys, xs


def make_series(
    image: Any,
    *,
    times: Sequence[Any] | pd.DatetimeIndex | np.ndarray,
    bands: Sequence[str | BandInfo],
    crs: Any,
    transform: Affine,
    valid: Any | None = None,
    labels: Any | None = None,
    classes: dict[int, str] | None = None,
    sensor: str = "unknown",
    attrs: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Assemble a series from arrays and metadata.

    Dates are sorted (with ``image``, ``valid`` and ``labels``); duplicates are refused.

    Args:
        image: Array ``(time, band, y, x)``, numpy or dask.
        times: One date per image.
        bands: Band names or :class:`BandInfo` (names get known wavelengths filled in).
        crs: Anything :class:`pyproj.CRS` accepts (``"EPSG:32633"``, WKT, a CRS object).
        transform: Affine pixel-to-CRS transform (north-up).
        valid: Bool array ``(time, y, x)``; all ``True`` when omitted.
        labels: Integer class ids ``(time, y, x)``, ``-1`` for unlabelled pixels.
        classes: Class table ``{id: name}`` for ``labels``.
        sensor: Name of the source sensor or layout, stored in ``attrs["sensor"]``.
        attrs: Extra dataset attributes.

    Returns:
        The series as an :class:`xarray.Dataset`.

    Raises:
        ParameterError: Shapes disagree or an argument is malformed.
        DuplicateDateError: Two images have the same date.
        EmptySeriesError: There are no dates.
    """
    if getattr(image, "ndim", None) != 4:
        raise ParameterError(f"image must have 4 dims (time, band, y, x), got shape {getattr(image, 'shape', None)!r}")
    n_time, n_band, height, width = (int(s) for s in image.shape)
    if n_time == 0:
        raise EmptySeriesError("the series has no dates; give at least one image")
    index = _as_times(times)
    if len(index) != n_time:
        raise ParameterError(f"got {len(index)} times for {n_time} images; give one date per image")
    dup = index[index.duplicated()]
    if len(dup):
        raise DuplicateDateError(f"dates {[d.date().isoformat() for d in dup]!r} appear twice; keep one image a date")
    infos = [b if isinstance(b, BandInfo) else BandInfo.from_name(str(b)) for b in bands]
    if len(infos) != n_band:
        raise BandMismatchError(f"got {len(infos)} band names for {n_band} bands: {[b.name for b in infos]!r}")
    if valid is None:
        valid = np.ones((n_time, height, width), dtype=bool)
    if tuple(valid.shape) != (n_time, height, width):
        raise GridMismatchError(f"valid has shape {tuple(valid.shape)!r}, expected {(n_time, height, width)!r}")
    ys, xs = _coords_from_transform(transform, height, width)
    order = np.argsort(index.values, kind="stable")
    sort = not np.array_equal(order, np.arange(n_time))
    data_vars: dict[str, Any] = {
        "image": (("time", "band", "y", "x"), image[order] if sort else image),
        "valid": (("time", "y", "x"), (valid[order] if sort else valid).astype(bool)),
    }
    if labels is not None:
        if tuple(labels.shape) != (n_time, height, width):
            raise GridMismatchError(
                f"labels have shape {tuple(labels.shape)!r} but the images are {(n_time, height, width)!r}; "
                "labels must be on the image grid"
            )
        data_vars["labels"] = (("time", "y", "x"), labels[order] if sort else labels)
    coords = {
        "time": index.values[order],
        "band": [b.name for b in infos],
        "y": ys,
        "x": xs,
        "wavelength": ("band", [np.nan if b.wavelength is None else b.wavelength for b in infos]),
        "scale": ("band", [b.scale for b in infos]),
        "offset": ("band", [b.offset for b in infos]),
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs={"sensor": sensor, **(attrs or {})})
    if labels is not None:
        table = classes or {}
        ds["labels"].attrs.update(
            class_ids=[int(k) for k in table],
            class_names=[str(v) for v in table.values()],
            nodata=LABEL_NODATA,
        )
    ds = ds.rio.write_crs(CRS.from_user_input(crs))
    out: xr.Dataset = ds.rio.write_transform(transform)
    return out


def series_crs(ds: xr.Dataset) -> CRS:
    """Return the CRS of a series.

    Raises:
        GridMismatchError: The series carries no CRS.
    """
    crs = ds.rio.crs
    if crs is None:
        raise GridMismatchError("the series has no CRS; write one with ds.rio.write_crs(...)")
    return CRS.from_user_input(crs)


def series_transform(ds: xr.Dataset) -> Affine:
    """Return the affine transform of a series (pixel corner based, as rasterio uses)."""
    return Affine(*tuple(ds.rio.transform(recalc=True))[:6])


def band_infos(ds: xr.Dataset) -> list[BandInfo]:
    """Return the per-band metadata of a series."""
    names = [str(b) for b in ds["band"].values]
    wl = ds["wavelength"].values if "wavelength" in ds.coords else [np.nan] * len(names)
    sc = ds["scale"].values if "scale" in ds.coords else [1.0] * len(names)
    of = ds["offset"].values if "offset" in ds.coords else [0.0] * len(names)
    return [
        BandInfo(n, None if not np.isfinite(w) else float(w), float(s), float(o))
        for n, w, s, o in zip(names, wl, sc, of, strict=True)
    ]


def class_table(ds: xr.Dataset) -> dict[int, str]:
    """Return the ``{class id: name}`` table of the series labels (empty when there are none)."""
    if "labels" not in ds:
        return {}
    ids = ds["labels"].attrs.get("class_ids", [])
    names = ds["labels"].attrs.get("class_names", [])
    return {int(i): str(n) for i, n in zip(ids, names, strict=True)}


def reflectance(ds: xr.Dataset) -> xr.DataArray:
    """Return ``image * scale + offset`` as float32, NaN where ``valid`` is False (lazy if the series is)."""
    img = ds["image"].astype("float32") * ds["scale"].astype("float32") + ds["offset"].astype("float32")
    return img.where(ds["valid"])


def reflectance_values(
    image: NDArray[Any], valid: NDArray[np.bool_], scale: NDArray[Any], offset: NDArray[Any]
) -> NDArray[np.float32]:
    """:func:`reflectance` of read arrays ``image (..., C, h, w)`` and ``valid (..., h, w)``, the same values.

    One float32 array, scaled, offset and masked in place: the lazy form allocates a new array at each of its four
    steps (a 1024 px block of 10 bands: 40 MB each).
    """
    out = np.asarray(image).astype(np.float32)  # a copy, as the lazy form's first step
    out *= np.asarray(scale, dtype=np.float32)[:, None, None]
    out += np.asarray(offset, dtype=np.float32)[:, None, None]
    np.copyto(out, np.float32(np.nan), where=~np.asarray(valid, dtype=bool)[..., None, :, :])
    return out


def validate_series(ds: xr.Dataset) -> xr.Dataset:
    """Check that a dataset honours the series contract and return it.

    Raises:
        ParameterError: A variable or coordinate is missing or has the wrong dims.
        EmptySeriesError: There are no dates.
        DuplicateDateError: Dates repeat.
        GridMismatchError: No CRS, or ``valid``/``labels`` dims disagree with ``image``.
    """
    for name, dims in (("image", ("time", "band", "y", "x")), ("valid", ("time", "y", "x"))):
        if name not in ds:
            raise ParameterError(f"the series has no {name!r} variable; build it with changescope.make_series")
        if tuple(ds[name].dims) != dims:
            raise ParameterError(f"{name!r} has dims {tuple(ds[name].dims)!r}, expected {dims!r}")
    if "labels" in ds and tuple(ds["labels"].dims) != ("time", "y", "x"):
        raise GridMismatchError(f"'labels' has dims {tuple(ds['labels'].dims)!r}, expected ('time', 'y', 'x')")
    if ds.sizes["time"] == 0:
        raise EmptySeriesError("the series has no dates")
    index = pd.DatetimeIndex(ds["time"].values)
    if index.has_duplicates:
        raise DuplicateDateError(f"the series repeats dates {list(index[index.duplicated()].astype(str))!r}")
    if not index.is_monotonic_increasing:
        raise ParameterError("the series time coordinate is not sorted; use ds.sortby('time')")
    series_crs(ds)
    return ds
