"""Geographic sampling of locations and dates for new self-supervised pretraining sets (SeCo / CACo).

Locations are drawn around centres (cities, say): a centre is picked with probability proportional to its
``weight`` (uniformly without one), and the point is offset from it by an isotropic 2-D Gaussian in kilometres,
placed exactly on the WGS84 ellipsoid (:meth:`pyproj.Geod.fwd`). CACo used ``sigma_km=5`` around urban areas,
SeCo ``sigma_km=50`` around the 10,000 most populous cities. With a land mask, points that fall on water (or on
nodata, or off the mask) are redrawn around the same centre.

Each location carries the target acquisition dates split in an *older* and a *recent* half, years apart: CACo
draws its seasonal positives from one half and compares the halves to estimate long-term change. The result is a
GeoDataFrame with one row per location, which :func:`write_locations` stores as GeoParquet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import geopandas as gpd
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.errors import CorruptFileError, DateError, ParameterError, UnknownFormatError
from changescope.types import PathLike

__all__ = ["LOCATION_COLUMNS", "DateLike", "DatePlan", "read_locations", "sample_locations", "write_locations"]

DateLike: TypeAlias = str | dt.date
"""A date as an ISO string (``"2018-04-01"``), a :class:`datetime.date`, a ``datetime`` or a ``pd.Timestamp``."""

LOCATION_COLUMNS = ("location_id", "centre", "lon", "lat", "distance_km", "draws", "dates", "half", "geometry")
"""Columns of every locations table (``centre_name`` is added when the centres have a ``name`` column)."""

_PERIODS_PER_YEAR = (1, 2, 3, 4, 6, 12)
_CENTRE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".geoparquet": "parquet"}


def _to_date(value: DateLike, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError as err:
        raise DateError(f"{what}: cannot read {value!r} as a date; write it as YYYY-MM-DD") from err


@dataclass(frozen=True)
class DatePlan:
    """The target acquisition dates of every location: an older half and a recent half, years apart.

    Attributes:
        older: Sorted, distinct dates of the older half.
        recent: Sorted, distinct dates of the recent half; all later than the older ones.
    """

    older: tuple[dt.date, ...]
    recent: tuple[dt.date, ...]

    def __post_init__(self) -> None:
        for name in ("older", "recent"):
            days = tuple(_to_date(d, f"DatePlan.{name}") for d in getattr(self, name))
            if not days:
                raise ParameterError(f"DatePlan.{name} is empty; give at least one date per half")
            if list(days) != sorted(set(days)):
                raise ParameterError(f"DatePlan.{name}={[d.isoformat() for d in days]!r} must be sorted and distinct")
            object.__setattr__(self, name, days)
        if self.older[-1] >= self.recent[0]:
            raise ParameterError(
                f"DatePlan: the older half ends {self.older[-1].isoformat()!r}, not before the recent half starts "
                f"{self.recent[0].isoformat()!r}; every older date must precede every recent one"
            )

    @classmethod
    def yearly(cls, older_year: int = 2018, recent_year: int = 2022, per_year: int = 4) -> DatePlan:
        """``per_year`` evenly spaced dates in each of two years: the first day of each period.

        The default (SeCo/CACo-like) is quarterly: 1 January, 1 April, 1 July and 1 October of 2018 and of 2022.

        Args:
            older_year: Year of the older half.
            recent_year: Year of the recent half (after ``older_year``).
            per_year: Dates per year, one of 1, 2, 3, 4, 6, 12.

        Raises:
            ParameterError: ``per_year`` does not divide the year into whole months, or the years are not ordered.
        """
        if per_year not in _PERIODS_PER_YEAR:
            raise ParameterError(f"per_year={per_year!r} must be one of {list(_PERIODS_PER_YEAR)} (whole months)")
        if not 1 <= older_year < recent_year <= 9999:
            raise ParameterError(
                f"older_year={older_year!r} must be before recent_year={recent_year!r} (both between 1 and 9999)"
            )
        months = [1 + k * (12 // per_year) for k in range(per_year)]
        return cls(
            older=tuple(dt.date(older_year, m, 1) for m in months),
            recent=tuple(dt.date(recent_year, m, 1) for m in months),
        )

    @classmethod
    def from_dates(cls, dates: Sequence[DateLike]) -> DatePlan:
        """Split a flat list of dates into halves at the largest gap between consecutive (sorted) dates.

        For example four dates in 2018 and four in 2022 split into those two years.

        Raises:
            DateError: A date cannot be parsed.
            ParameterError: Fewer than two distinct dates, or a date given twice.
        """
        days = sorted(_to_date(d, "dates") for d in dates)
        if len(set(days)) != len(days):
            raise ParameterError(f"dates={[d.isoformat() for d in days]!r} lists a date twice; give each date once")
        if len(days) < 2:
            raise ParameterError(f"dates={[d.isoformat() for d in days]!r}: give at least two dates (one per half)")
        gaps = np.diff(np.array([d.toordinal() for d in days]))
        cut = int(np.argmax(gaps)) + 1
        return cls(older=tuple(days[:cut]), recent=tuple(days[cut:]))

    @property
    def dates(self) -> tuple[dt.date, ...]:
        """All dates, older half first."""
        return self.older + self.recent

    @property
    def halves(self) -> tuple[str, ...]:
        """``"older"`` or ``"recent"`` for each of :attr:`dates`."""
        return ("older",) * len(self.older) + ("recent",) * len(self.recent)


def _read_centres(centres: pd.DataFrame | PathLike) -> tuple[pd.DataFrame, str]:
    if isinstance(centres, pd.DataFrame):
        return centres, "the centres table"
    path = Path(centres)
    label = f"centres file {str(path)!r}"
    if not path.is_file():
        raise ParameterError(f"{label} not found; pass a CSV or Parquet file with lon and lat columns")
    kind = _CENTRE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnknownFormatError(f"{label}: unknown suffix {path.suffix!r}; use one of {sorted(_CENTRE_SUFFIXES)}")
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"cannot read {label} as {kind}: {err}") from err
    return frame, label


def _validate_centres(frame: pd.DataFrame, label: str) -> tuple[NDArray[np.float64], NDArray[np.float64], Any]:
    """Return lon, lat and the selection probabilities (None for uniform) of valid centres."""
    for col in ("lon", "lat"):
        if col not in frame.columns:
            raise ParameterError(
                f"{label} has no {col!r} column (columns: {list(map(str, frame.columns))!r}); "
                "give the centres as lon and lat in degrees"
            )
    if len(frame) == 0:
        raise ParameterError(f"{label} has no rows; give at least one centre")
    coords = {}
    for col, limit in (("lon", 180.0), ("lat", 90.0)):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (np.abs(values) > limit)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ParameterError(
                f"{label}: column {col!r} has {int(bad.sum())} value(s) that are missing or outside ±{limit:g} "
                f"(first at row {i}: {frame[col].iloc[i]!r}); give {col} in degrees (lon -180..180, lat -90..90)"
            )
        coords[col] = values
    probs = None
    if "weight" in frame.columns:
        weights = pd.to_numeric(frame["weight"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(weights) | (weights <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ParameterError(
                f"{label}: column 'weight' has {int(bad.sum())} missing or non-positive value(s) (first at row {i}: "
                f"{frame['weight'].iloc[i]!r}); weights must be > 0 (drop those centres or the column)"
            )
        probs = weights / weights.sum()
    return coords["lon"], coords["lat"], probs


class _LandMask:
    """A land raster read once: answers "is this lon/lat on land?" for arrays of points."""

    def __init__(self, path: PathLike) -> None:
        import rasterio
        from pyproj import Transformer

        self.path = Path(path)
        label = f"land_mask {str(self.path)!r}"
        if not self.path.is_file():
            raise ParameterError(f"{label} not found; pass a single-band raster (non-zero = land, 0 = water)")
        try:
            with rasterio.open(self.path) as src:
                if src.count != 1:
                    raise ParameterError(f"{label} has {src.count} bands; pass a single-band raster (1 = land)")
                if src.crs is None:
                    raise CorruptFileError(f"{label} has no CRS; write the mask with its CRS (e.g. gdal_edit -a_srs)")
                band = src.read(1, masked=True)
                self._inverse = ~src.transform
                self._to_mask = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
        except rasterio.errors.RasterioIOError as err:
            raise CorruptFileError(f"cannot read {label} as a raster: {err}") from err
        self._land = np.asarray(band.filled(0)) != 0  # nodata pixels are masked, hence filled as water

    def contains(self, lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.bool_]:
        """True where the point falls on a land pixel (nodata and points off the raster are not land)."""
        x, y = self._to_mask.transform(lon, lat)
        a, b, c, d, e, f = self._inverse[:6]
        col = np.floor(a * np.asarray(x) + b * np.asarray(y) + c)
        row = np.floor(d * np.asarray(x) + e * np.asarray(y) + f)
        h, w = self._land.shape
        inside = np.isfinite(col) & np.isfinite(row) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        out = np.zeros(lon.shape, dtype=bool)
        out[inside] = self._land[row[inside].astype(np.intp), col[inside].astype(np.intp)]
        return out


def sample_locations(
    centres: pd.DataFrame | PathLike,
    n: int,
    *,
    sigma_km: float = 5.0,
    land_mask: PathLike | None = None,
    dates: DatePlan | Sequence[DateLike] | None = None,
    seed: int = 0,
    max_tries: int = 100,
) -> gpd.GeoDataFrame:
    """Draw ``n`` locations around weighted centres, on land if a mask is given, each with its target dates.

    Each point picks a centre (proportionally to ``weight``, uniformly without it), draws east and north offsets
    from independent normal laws of standard deviation ``sigma_km`` and is placed on the WGS84 ellipsoid at that
    azimuth and geodesic distance. Its distance to the centre is then Rayleigh distributed: mean
    ``sigma_km * sqrt(pi / 2)``, mean square ``2 * sigma_km**2``. The same seed gives the same table.

    Args:
        centres: A DataFrame, or a CSV/Parquet file, with ``lon`` and ``lat`` in degrees and optional ``weight``
            (> 0, e.g. population) and ``name`` columns.
        n: Number of locations (>= 1).
        sigma_km: Standard deviation of the offset along each axis, in km (CACo: 5, SeCo: 50).
        land_mask: Optional single-band raster in any CRS, non-zero = land, 0 = water. Points on water, on nodata
            or off the raster are redrawn around the same centre.
        dates: A :class:`DatePlan`, a flat list of dates (split into halves at the largest gap, see
            :meth:`DatePlan.from_dates`), or None for ``DatePlan.yearly()``: 1 Jan, 1 Apr, 1 Jul and 1 Oct of
            2018 (older half) and of 2022 (recent half).
        seed: Random seed.
        max_tries: Draws allowed per point, the first included (>= 1).

    Returns:
        One row per location: ``location_id`` (``loc_000000``, ...), ``centre`` (row position of its centre),
        ``centre_name`` (when the centres have names), ``lon``, ``lat``, ``distance_km`` (geodesic, to its
        centre), ``draws`` (draws it took, 1 = accepted at once), ``dates`` (ISO strings), ``half`` (``"older"``
        or ``"recent"`` per date) and a point ``geometry`` in EPSG:4326.

    Raises:
        ParameterError: Bad centres (missing column, coordinates out of range, non-positive weights), bad
            parameters, or points still off land after ``max_tries`` draws.
        DateError: A date cannot be parsed.
        CorruptFileError: The centres file or the land mask cannot be read.
    """
    from pyproj import Geod

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ParameterError(f"n={n!r} must be a positive integer (the number of locations)")
    if not np.isfinite(sigma_km) or sigma_km <= 0:
        raise ParameterError(f"sigma_km={sigma_km!r} must be a positive number of km (CACo used 5, SeCo 50)")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int | np.integer) or max_tries < 1:
        raise ParameterError(f"max_tries={max_tries!r} must be a positive integer")
    plan = dates if isinstance(dates, DatePlan) else DatePlan.yearly() if dates is None else DatePlan.from_dates(dates)
    frame, label = _read_centres(centres)
    c_lon, c_lat, probs = _validate_centres(frame, label)
    mask = _LandMask(land_mask) if land_mask is not None else None

    rng = np.random.default_rng(seed)
    geod = Geod(ellps="WGS84")
    which = rng.choice(len(c_lon), size=int(n), p=probs)
    lon = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    dist_km = np.full(n, np.nan)
    draws = np.zeros(n, dtype=np.int64)
    pending = np.arange(n)
    for _ in range(int(max_tries)):
        east, north = rng.normal(0.0, sigma_km, size=(2, len(pending)))
        distance = np.hypot(east, north)
        azimuth = np.degrees(np.arctan2(east, north))
        p_lon, p_lat, _back = geod.fwd(c_lon[which[pending]], c_lat[which[pending]], azimuth, distance * 1000.0)
        p_lon, p_lat = np.asarray(p_lon, dtype=np.float64), np.asarray(p_lat, dtype=np.float64)
        draws[pending] += 1
        ok = mask.contains(p_lon, p_lat) if mask is not None else np.ones(len(pending), dtype=bool)
        done = pending[ok]
        lon[done], lat[done], dist_km[done] = p_lon[ok], p_lat[ok], distance[ok]
        pending = pending[~ok]
        if len(pending) == 0:
            break
    if len(pending):
        raise ParameterError(
            f"{len(pending)} of {n} locations could not be placed on land in land_mask {str(land_mask)!r} after "
            f"max_tries={max_tries} draws each (around {len(np.unique(which[pending]))} centre(s)); use a larger "
            "sigma_km or max_tries, drop centres far from land, or check the mask (non-zero = land, 0 = water)"
        )

    width = max(6, len(str(n - 1)))
    iso = [d.isoformat() for d in plan.dates]
    out = pd.DataFrame(
        {
            "location_id": [f"loc_{i:0{width}d}" for i in range(n)],
            "centre": which.astype(np.int64),
            "lon": lon,
            "lat": lat,
            "distance_km": dist_km,
            "draws": draws,
            "dates": [list(iso) for _ in range(n)],
            "half": [list(plan.halves) for _ in range(n)],
        }
    )
    if "name" in frame.columns:
        out.insert(2, "centre_name", frame["name"].astype(str).to_numpy()[which])
    return gpd.GeoDataFrame(out, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")


def write_locations(locations: gpd.GeoDataFrame, path: PathLike) -> Path:
    """Write a locations table as GeoParquet, atomically (a temporary sibling renamed into place).

    Raises:
        ParameterError: ``locations`` is not a GeoDataFrame with a CRS and the columns of :data:`LOCATION_COLUMNS`.
    """
    from changescope.io.writers import atomic_path

    if not isinstance(locations, gpd.GeoDataFrame) or locations.crs is None:
        raise ParameterError("locations must be a GeoDataFrame with a CRS, as sample_locations returns it")
    missing = [c for c in LOCATION_COLUMNS if c not in locations.columns]
    if missing:
        raise ParameterError(f"locations lacks the columns {missing!r}; write what sample_locations returns")
    out = Path(path)
    with atomic_path(out) as tmp:
        locations.to_parquet(tmp, index=False)
    return out


def read_locations(path: PathLike) -> gpd.GeoDataFrame:
    """Read a locations table written by :func:`write_locations` (``dates`` and ``half`` as lists of str).

    Raises:
        ParameterError: The file does not exist.
        CorruptFileError: It cannot be read as GeoParquet, or lacks columns of :data:`LOCATION_COLUMNS`.
    """
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"locations file {str(p)!r} not found; make one with sample_locations")
    try:
        frame = gpd.read_parquet(p)
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"cannot read locations file {str(p)!r} as GeoParquet: {err}") from err
    missing = [c for c in LOCATION_COLUMNS if c not in frame.columns]
    if missing:
        raise CorruptFileError(f"locations file {str(p)!r} lacks the columns {missing!r}; re-run sample-locations")
    for col in ("dates", "half"):
        frame[col] = [[str(v) for v in values] for values in frame[col]]
    return frame
