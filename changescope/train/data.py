"""Location crops of the user's own series, and the temporal views that MoCo, SeCo and CACo train on.

:class:`TemporalPatches` cuts every series (one per area of interest, AOI) into ``size`` x ``size`` windows on a
grid, keeps the dates that are clear enough in each window and holds those crops in memory as float16 reflectance
(NaN where invalid). Each location's usable dates are sorted and split into an *older* half (the first ``n // 2``)
and a *recent* half; CACo's long-term gap lies between them (methods.md, section 2). :meth:`TemporalPatches.sample`
draws a query, a short-term key and a long-term key per location, as each pretraining mode wants them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from changescope.encoders.base import Normalization
from changescope.errors import BandMismatchError, EmptySeriesError, ParameterError
from changescope.series import BandInfo, band_infos, reflectance
from changescope.types import SampleMode

__all__ = ["SampleMode", "TemporalPatches", "Views"]


_MODES: tuple[str, ...] = ("moco", "seco", "caco")
_STATS_CHUNK = 64  # crops per step when computing band statistics


@dataclass(frozen=True)
class Views:
    """One batch of views drawn by :meth:`TemporalPatches.sample`.

    Images are float32 reflectance ``(B, C, size, size)`` with NaN at invalid pixels; date indices are int64
    ``(B,)`` and index each location's usable dates (:meth:`TemporalPatches.dates`).

    Attributes:
        query: The query crops.
        short: The short-term keys (the query's own date in ``"moco"`` mode).
        long: The long-term keys, from the other half than the query's.
        query_date: Usable-date index of each query.
        short_date: Usable-date index of each short-term key.
        long_date: Usable-date index of each long-term key.
    """

    query: torch.Tensor
    short: torch.Tensor
    long: torch.Tensor
    query_date: np.ndarray
    short_date: np.ndarray
    long_date: np.ndarray


def _starts(n: int, size: int, stride: int) -> np.ndarray:
    return np.arange(0, n - size + 1, stride, dtype=np.int64) if n >= size else np.zeros(0, dtype=np.int64)


def _usable_dates(ds: xr.Dataset, size: int, stride: int, min_valid: float) -> tuple[np.ndarray, ...]:
    """Return ``usable (time, ny, nx)`` (valid fraction >= min_valid per window and date) and the window starts."""
    ys, xs = _starts(ds.sizes["y"], size, stride), _starts(ds.sizes["x"], size, stride)
    usable = np.zeros((ds.sizes["time"], len(ys), len(xs)), dtype=bool)
    if not len(ys) or not len(xs):
        return usable, ys, xs
    integral = np.zeros((ds.sizes["y"] + 1, ds.sizes["x"] + 1), dtype=np.int64)
    for t in range(ds.sizes["time"]):  # one date at a time keeps memory at one H x W plane
        valid = np.asarray(ds["valid"].isel(time=t).values, dtype=bool)
        integral[1:, 1:] = valid.cumsum(axis=0).cumsum(axis=1)
        y1, x1 = ys + size, xs + size
        count = (
            integral[np.ix_(y1, x1)] - integral[np.ix_(ys, x1)] - integral[np.ix_(y1, xs)] + integral[np.ix_(ys, xs)]
        )
        usable[t] = count / float(size * size) >= min_valid
    return usable, ys, xs


def _check_args(size: int, stride: int, min_valid: float, min_dates: int, max_locations: int | None, seed: int) -> None:
    for name, value in (("size", size), ("stride", stride), ("min_dates", min_dates)):
        if value < 1:
            raise ParameterError(
                f"{name}={value!r} must be a positive number of {'dates' if name == 'min_dates' else 'pixels'}"
            )
    if not 0.0 <= min_valid <= 1.0:
        raise ParameterError(f"min_valid={min_valid!r} is a fraction of valid pixels; give a value in [0, 1]")
    if max_locations is not None and max_locations < 1:
        raise ParameterError(f"max_locations={max_locations!r} must be positive, or None to keep every location")
    if seed < 0:
        raise ParameterError(f"seed={seed!r} must be a non-negative integer")


class TemporalPatches:
    """Location crops of one or more series, held in memory as float16 reflectance, for contrastive pretraining.

    Build it with :meth:`from_series`. Crops are stored location by location, each location's usable dates in time
    order; memory is about ``L x T x C x size**2 x 2`` bytes for ``L`` locations with ``T`` usable dates and ``C``
    bands (e.g. 10,000 locations x 8 dates x 4 bands x 96 x 96 px = 5.9 GB; see :attr:`nbytes`).

    Args:
        data: ``(N, C, size, size)`` float16 crops of all locations, concatenated.
        offsets: ``(L + 1,)`` start of each location's crops in ``data``.
        times: ``(N,)`` datetime64 date of each crop.
        locations: Table with columns ``aoi``, ``y0``, ``x0`` and ``n_dates``, one row per location.
        bands: The bands of the crops.
    """

    def __init__(
        self, data: np.ndarray, offsets: np.ndarray, times: np.ndarray, locations: pd.DataFrame, bands: list[BandInfo]
    ) -> None:
        self._data = data
        self._offsets = offsets
        self._times = times
        self._locations = locations
        self._bands = bands
        self._stats: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_series(
        cls,
        series: Sequence[xr.Dataset],
        *,
        size: int = 96,
        stride: int | None = None,
        min_valid: float = 0.9,
        min_dates: int = 4,
        max_locations: int | None = None,
        seed: int = 0,
    ) -> TemporalPatches:
        """Cut series into location crops and keep the locations with enough clear dates.

        Locations are the ``size`` x ``size`` windows at multiples of ``stride`` over every series. A date is usable
        at a location when at least ``min_valid`` of the window's pixels are valid; a location is kept when it has
        at least ``min_dates`` usable dates and at least 2 in each half (so at least 4). Each series' reflectance is
        read once, one window row band at a time (``T x C x size x W x 4`` bytes at most), so dask-backed series are
        never loaded whole; ``valid`` is read one date at a time.

        Args:
            series: One series per AOI, all with the same bands in the same order.
            size: Window side in pixels.
            stride: Step between windows in pixels (default ``size``: no overlap).
            min_valid: Least fraction of valid pixels for a date to be usable at a location.
            min_dates: Least number of usable dates for a location to be kept.
            max_locations: Keep a random subset of this many locations (seeded by ``seed``); ``None`` keeps all.
            seed: Seed of the ``max_locations`` subset.

        Returns:
            The crops.

        Raises:
            ParameterError: An argument is out of range, or a series lacks ``image``/``valid``.
            BandMismatchError: Two series have different bands.
            EmptySeriesError: No location has enough usable dates.
        """
        stride = size if stride is None else stride
        _check_args(size, stride, min_valid, min_dates, max_locations, seed)
        series = list(series)
        if not series:
            raise ParameterError("series=[] is empty; give at least one series (one per area of interest)")
        for i, ds in enumerate(series):
            for var in ("image", "valid"):
                if var not in ds:
                    raise ParameterError(f"series[{i}] has no {var!r} variable; build it with changescope.make_series")
        names0 = [str(b) for b in series[0]["band"].values]
        for i, ds in enumerate(series[1:], start=1):
            names = [str(b) for b in ds["band"].values]
            if names != names0:
                raise BandMismatchError(
                    f"series[0] has bands {names0!r} but series[{i}] has {names!r}; give series with the same bands "
                    f"in the same order (select them with ds.sel(band={names0!r}))"
                )
        need = max(min_dates, 4)
        kept: list[tuple[int, int, int, np.ndarray]] = []  # (aoi, y0, x0, usable time indices in time order)
        n_windows, best = 0, 0
        for a, ds in enumerate(series):
            order = np.argsort(ds["time"].values, kind="stable")
            usable, ys, xs = _usable_dates(ds, size, stride, min_valid)
            usable = usable[order]
            n_windows += len(ys) * len(xs)
            for iy, y0 in enumerate(ys):
                for ix, x0 in enumerate(xs):
                    t_idx = order[usable[:, iy, ix]]
                    best = max(best, len(t_idx))
                    if len(t_idx) >= need:
                        kept.append((a, int(y0), int(x0), t_idx))
        if n_windows == 0:
            shapes = [(ds.sizes["y"], ds.sizes["x"]) for ds in series]
            raise EmptySeriesError(
                f"every series is smaller than size={size!r} px (height, width: {shapes!r}); lower size"
            )
        if not kept:
            raise EmptySeriesError(
                f"none of the {n_windows} windows of {size}x{size} px has min_dates={min_dates!r} (and at least 4) "
                f"dates with min_valid={min_valid!r} of valid pixels (the best has {best}); lower min_valid or "
                "min_dates, use a smaller size, or add clearer dates"
            )
        if max_locations is not None and max_locations < len(kept):
            pick = np.sort(np.random.default_rng(seed).choice(len(kept), size=max_locations, replace=False))
            kept = [kept[i] for i in pick]
        return cls._read(series, kept, size)

    @classmethod
    def _read(
        cls, series: list[xr.Dataset], kept: list[tuple[int, int, int, np.ndarray]], size: int
    ) -> TemporalPatches:
        counts = np.array([len(k[3]) for k in kept], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n_bands = series[0].sizes["band"]
        data = np.empty((int(offsets[-1]), n_bands, size, size), dtype=np.float16)
        times = np.empty(int(offsets[-1]), dtype="datetime64[ns]")
        for a, ds in enumerate(series):
            refl = reflectance(ds)
            ds_times = ds["time"].values
            rows: dict[int, list[int]] = {}
            for li, (aoi, y0, _, _) in enumerate(kept):
                if aoi == a:
                    rows.setdefault(y0, []).append(li)
            for y0, members in rows.items():
                t_need = np.unique(np.concatenate([kept[li][3] for li in members]))
                x_lo = min(kept[li][2] for li in members)
                x_hi = max(kept[li][2] for li in members) + size
                band = refl.isel(time=t_need, y=slice(y0, y0 + size), x=slice(x_lo, x_hi))
                block = np.asarray(band.values, dtype=np.float32)
                for li in members:
                    x0, t_idx = kept[li][2], kept[li][3]
                    start, stop = offsets[li], offsets[li + 1]
                    data[start:stop] = block[np.searchsorted(t_need, t_idx), :, :, x0 - x_lo : x0 - x_lo + size]
                    times[start:stop] = ds_times[t_idx]
        corners = np.array([k[:3] for k in kept], dtype=np.int64).reshape(-1, 3)
        locations = pd.DataFrame(corners, columns=["aoi", "y0", "x0"]).assign(n_dates=counts)
        return cls(data, offsets, times, locations, band_infos(series[0]))

    def __len__(self) -> int:
        return self.n_locations

    def __repr__(self) -> str:
        names = [b.name for b in self._bands]
        return f"TemporalPatches(n_locations={len(self)}, size={self.size}, bands={names!r}, nbytes={self.nbytes})"

    @property
    def n_locations(self) -> int:
        """Number of locations kept."""
        return len(self._offsets) - 1

    @property
    def size(self) -> int:
        """Crop side in pixels."""
        return int(self._data.shape[-1])

    @property
    def nbytes(self) -> int:
        """Memory held by the crops, in bytes."""
        return int(self._data.nbytes)

    @property
    def bands(self) -> list[BandInfo]:
        """The bands of the crops (as described by the first series; crops are reflectance whatever the scale)."""
        return list(self._bands)

    @property
    def locations(self) -> pd.DataFrame:
        """One row per location: ``aoi`` (index of its series), ``y0``, ``x0`` (top-left pixel) and ``n_dates``."""
        return self._locations.copy()

    def _check_loc(self, loc: int | np.integer[Any]) -> int:
        if not 0 <= int(loc) < self.n_locations:
            raise ParameterError(f"loc={loc!r} is out of range; give a location index in [0, {self.n_locations})")
        return int(loc)

    def dates(self, loc: int | np.integer[Any]) -> np.ndarray:
        """Usable dates of location ``loc``, sorted, as ``datetime64[ns]``."""
        loc = self._check_loc(loc)
        return self._times[self._offsets[loc] : self._offsets[loc + 1]].copy()

    def halves(self, loc: int | np.integer[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Usable-date indices of the older half (the first ``n // 2``) and the recent half of location ``loc``."""
        n = int(self._locations["n_dates"].iloc[self._check_loc(loc)])
        return np.arange(n // 2, dtype=np.int64), np.arange(n // 2, n, dtype=np.int64)

    def band_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band mean and standard deviation of reflectance over all valid pixels of all crops.

        Pixels shared by overlapping windows count once per window, as they are seen in training.

        Returns:
            ``(mean, std)``, float64 arrays ``(C,)``; ``std`` is floored at 1e-6.

        Raises:
            EmptySeriesError: A band has no valid pixel.
        """
        if self._stats is None:
            n_bands = self._data.shape[1]
            total, total_sq, count = np.zeros(n_bands), np.zeros(n_bands), np.zeros(n_bands)
            for start in range(0, len(self._data), _STATS_CHUNK):
                chunk = self._data[start : start + _STATS_CHUNK].astype(np.float64)
                finite = np.isfinite(chunk)
                chunk = np.where(finite, chunk, 0.0)
                total += chunk.sum(axis=(0, 2, 3))
                total_sq += (chunk * chunk).sum(axis=(0, 2, 3))
                count += finite.sum(axis=(0, 2, 3))
            if np.any(count == 0):
                empty = [b.name for b, c in zip(self._bands, count, strict=True) if c == 0]
                raise EmptySeriesError(
                    f"bands {empty!r} have no valid pixel in any crop; check the series' valid masks"
                )
            mean = total / count
            std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
            self._stats = (mean, np.maximum(std, 1e-6))
        return self._stats[0].copy(), self._stats[1].copy()

    def normalization(self) -> Normalization:
        """Mean/std normalisation from :meth:`band_stats`, for the encoder trained on these crops."""
        mean, std = self.band_stats()
        return Normalization("meanstd", mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))

    def sample(self, locs: np.ndarray, mode: SampleMode, generator: torch.Generator) -> Views:
        """Draw the query, short-term and long-term views of a batch of locations.

        Args:
            locs: ``(B,)`` integer location indices (repeats allowed).
            mode: ``"moco"`` (short = the query's date), ``"seco"`` (short = another date of any half) or
                ``"caco"`` (query and short = two dates of one random half); in every mode ``long`` is a date of
                the other half than the query's.
            generator: Source of all randomness (4 uniform draws per location).

        Returns:
            The views, float32 reflectance with NaN at invalid pixels.

        Raises:
            ParameterError: ``locs`` is not a 1-D array of valid indices, or ``mode`` is unknown.
        """
        if mode not in _MODES:
            raise ParameterError(f"mode={mode!r} is not one of {list(_MODES)!r}")
        locs = np.asarray(locs)
        if locs.ndim != 1 or not np.issubdtype(locs.dtype, np.integer):
            raise ParameterError(f"locs must be a 1-D integer array, got dtype {locs.dtype} and shape {locs.shape!r}")
        if len(locs) and (locs.min() < 0 or locs.max() >= self.n_locations):
            raise ParameterError(f"locs holds indices outside [0, {self.n_locations}); pick them from batches()")
        locs = locs.astype(np.int64)
        u = torch.rand((len(locs), 4), generator=generator, dtype=torch.float64, device=generator.device)
        draw = u.cpu().numpy()
        n = self._offsets[locs + 1] - self._offsets[locs]
        older = n // 2

        def pick(col: int, count: np.ndarray) -> np.ndarray:
            out: np.ndarray = np.minimum((draw[:, col] * count).astype(np.int64), count - 1)
            return out

        if mode == "caco":
            recent = draw[:, 0] < 0.5
            lo, count = np.where(recent, older, 0), np.where(recent, n - older, older)
            query = lo + pick(1, count)
            other = pick(2, count - 1)
            short = lo + other + (other >= query - lo)
        else:
            query = pick(1, n)
            other = pick(2, n - 1)
            short = query.copy() if mode == "moco" else other + (other >= query)
        query_recent = query >= older
        long = np.where(query_recent, 0, older) + pick(3, np.where(query_recent, older, n - older))
        return Views(
            query=self._gather(locs, query),
            short=self._gather(locs, short),
            long=self._gather(locs, long),
            query_date=query,
            short_date=short,
            long_date=long,
        )

    def _gather(self, locs: np.ndarray, date_idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self._data[self._offsets[locs] + date_idx].astype(np.float32))

    def batches(self, epoch: int, batch_size: int, seed: int) -> list[np.ndarray]:
        """Cut a seeded permutation of the locations into full batches (the remainder is dropped).

        Args:
            epoch: Epoch number; the permutation depends only on ``seed`` and ``epoch``.
            batch_size: Locations per batch.
            seed: Run seed.

        Returns:
            ``n_locations // batch_size`` int64 arrays of ``batch_size`` distinct location indices.

        Raises:
            ParameterError: ``batch_size`` is not in ``[1, n_locations]``, or ``epoch``/``seed`` is negative.
        """
        if batch_size < 1 or batch_size > self.n_locations:
            raise ParameterError(
                f"batch_size={batch_size!r} but there are {self.n_locations} locations; lower batch_size or add data "
                "(more series, a smaller stride, or a lower min_valid/min_dates)"
            )
        if epoch < 0 or seed < 0:
            raise ParameterError(f"epoch={epoch!r} and seed={seed!r} must be non-negative integers")
        perm = np.random.default_rng([seed, epoch]).permutation(self.n_locations).astype(np.int64)
        n_batches = self.n_locations // batch_size
        return [perm[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]
