"""Embeddings read one date at a time: what keeps scoring's memory independent of the number of dates.

Scoring needs, per date, every patch's embedding of that date (a patch's peers may lie anywhere in the AOI), and,
once, each patch's reference state. Neither needs the whole ``(T, N, D)`` cube in memory. A *source* hands out one
date at a time, ``(N, D)`` float64, standardised and zero where the observation is not usable:

- :class:`ArraySource` wraps an array already in memory (the scorer's own path, and the tests');
- :class:`StoreSource` reads an embeddings store (``xarray``/Zarr, chunked by date) date by date, so scoring a
  whole Sentinel-2 tile holds ``O(N x D)``, never ``O(T x N x D)``.

Standardisation (:func:`changescope.change.score.standardize_embeddings`: per-dimension median and standard
deviation over the usable observations) is computed in the same streaming way (:func:`streamed_stats`): the
standard deviation exactly (Chan's pairwise update of per-date moments), the median exactly while the usable
observations hold at most :data:`MEDIAN_EXACT` values, and otherwise on every ``s``-th of them (a deterministic
subsample of at most that many values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from changescope.errors import ParameterError

__all__ = ["MEDIAN_EXACT", "ArraySource", "DateSource", "StoreSource", "streamed_stats"]

F64 = NDArray[np.float64]
MEDIAN_EXACT = 8_000_000
"""Values (observations x dimensions, but at least :data:`MEDIAN_MIN_OBS` observations) up to which the
standardisation median is exact; above, it is the median of a deterministic subsample of that size (64 MB of
float64)."""
MEDIAN_MIN_OBS = 10_000
"""Fewest observations the median's subsample keeps, however wide the embeddings."""


class DateSource(Protocol):
    """Embeddings handed out one date at a time, with their ``(T, N)`` usable observations ``valid``."""

    valid: NDArray[np.bool_]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, N, D)``."""
        ...

    def date(self, t: int) -> F64:
        """``(N, D)`` float64 embeddings of date ``t``: standardised, zero where the observation is not usable."""
        ...

    def patches(self, idx: NDArray[np.intp]) -> F64:
        """``(T, len(idx), D)`` float64 embeddings of patches ``idx`` (standardised, NaN where absent)."""
        ...


def _moments(x: F64) -> tuple[int, F64, F64]:
    """``(count, mean, M2)`` of the rows of ``x`` (M2: sum of squared deviations from the mean)."""
    n = x.shape[0]
    if n == 0:
        return 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    mean = x.mean(axis=0)
    return n, mean, ((x - mean) ** 2).sum(axis=0)


def streamed_stats(load: Callable[[int], F64], valid: NDArray[np.bool_], limit: int = MEDIAN_EXACT) -> tuple[F64, F64]:
    """Per-dimension median and standard deviation (1 where 0) of the usable observations, one date at a time.

    Args:
        load: ``load(t)`` gives the ``(N, D)`` raw embeddings of date ``t``.
        valid: ``(T, N)`` usable observations.
        limit: Values up to which the median is exact (module docstring).

    Raises:
        ParameterError: No usable observation.
    """
    total = int(valid.sum())
    if total == 0:
        raise ParameterError("no valid observation to standardise the embeddings with")
    count, mean, m2 = 0, np.zeros(0), np.zeros(0)
    sample = np.zeros((0, 0))
    every, filled, seen = 1, 0, 0
    for t in range(valid.shape[0]):
        rows = np.nonzero(valid[t])[0]
        if rows.size == 0:
            continue
        x = np.asarray(load(t), dtype=np.float64)[rows]
        if count == 0:  # the sample's size is known once the dimension is
            every = -(-total // max(MEDIAN_MIN_OBS, limit // x.shape[1]))  # 1 while exact
            sample = np.empty((-(-total // every), x.shape[1]))
        n_b, mean_b, m2_b = _moments(x)
        if count == 0:
            count, mean, m2 = n_b, mean_b, m2_b
        else:  # Chan et al.: merge the moments of two sets
            delta = mean_b - mean
            both = count + n_b
            mean = mean + delta * n_b / both
            m2 = m2 + m2_b + delta**2 * count * n_b / both
            count = both
        take = x[(np.arange(seen, seen + rows.size) % every) == 0]
        sample[filled : filled + len(take)] = take
        filled += len(take)
        seen += rows.size
    center = np.median(sample[:filled], axis=0, overwrite_input=True)
    spread = np.sqrt(m2 / count)
    return center, np.where(spread > 1e-12, spread, 1.0)


@dataclass
class ArraySource:
    """A ``(T, N, D)`` array in memory, scaled by ``(X - center) / spread`` when both are given."""

    X: NDArray[np.floating]
    valid: NDArray[np.bool_]
    center: F64 | None = None
    spread: F64 | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, N, D)``."""
        n_t, n, dim = self.X.shape
        return int(n_t), int(n), int(dim)

    def _scaled(self, x: NDArray[np.floating]) -> F64:
        out = np.asarray(x, dtype=np.float64)
        if self.center is not None and self.spread is not None:
            out = (out - self.center) / self.spread
        return out

    def date(self, t: int) -> F64:
        """``(N, D)`` embeddings of date ``t``, zero where not usable."""
        return np.where(self.valid[t][:, None], self._scaled(self.X[t]), 0.0)

    def patches(self, idx: NDArray[np.intp]) -> F64:
        """``(T, len(idx), D)`` embeddings of patches ``idx``."""
        return self._scaled(np.asarray(self.X)[:, idx])


def _reader(array: Any) -> Callable[[int], F64]:
    """``load(t)``: the ``(N, D)`` float64 values of date ``t`` of a ``(time, row, col, dim)`` variable."""

    def load(t: int) -> F64:
        values = np.asarray(array.isel(time=t).values)
        return np.asarray(values.reshape(-1, values.shape[-1]), dtype=np.float64)

    return load


@dataclass
class StoreSource:
    """Embeddings of a store (lazy: Zarr, dask) read one date at a time by ``load``.

    Build it with :meth:`open` (one store; the same pass finds the usable observations and the standardisation)
    or :meth:`picked` (per patch, its own or its chosen sub-patch's embeddings).

    Attributes:
        load: ``load(t)`` gives the raw ``(N, D)`` embeddings of date ``t`` (NaN where absent).
        size: ``(T, N, D)``.
        valid: ``(T, N)`` usable observations: clear enough and with a finite embedding.
        center: Per-dimension center, or ``None`` (not standardised).
        spread: Per-dimension spread, or ``None``.
    """

    load: Callable[[int], F64]
    size: tuple[int, int, int]
    valid: NDArray[np.bool_]
    center: F64 | None = None
    spread: F64 | None = None

    @classmethod
    def open(
        cls,
        array: Any,
        valid_fraction: NDArray[np.floating],
        min_valid: float,
        *,
        standardize: bool,
        limit: int = MEDIAN_EXACT,
    ) -> StoreSource:
        """A source over ``array`` whose usable observations have ``valid_fraction >= min_valid`` and no NaN.

        Args:
            array: The ``embedding`` variable ``(time, row, col, dim)`` (``xarray.DataArray``).
            valid_fraction: ``(T, N)`` clear fraction of each observation.
            min_valid: Clear fraction an observation needs.
            standardize: Also compute the standardisation (:func:`streamed_stats`).
            limit: Values up to which the median is exact.
        """
        vf = np.asarray(valid_fraction)
        n_t, n = vf.shape
        src = cls(_reader(array), (n_t, n, int(array.sizes["dim"])), np.zeros((n_t, n), dtype=bool))
        for t in range(n_t):
            src.valid[t] = (vf[t] >= min_valid) & np.isfinite(src.load(t)).all(axis=1)
        if standardize and src.valid.any():
            src.center, src.spread = streamed_stats(src.load, src.valid, limit)
        return src

    @classmethod
    def over(cls, array: Any, valid: NDArray[np.bool_]) -> StoreSource:
        """A source over ``array`` (``(time, row, col, dim)``) with known usable observations, not standardised."""
        n_t, n = np.shape(valid)
        return cls(_reader(array), (n_t, n, int(array.sizes["dim"])), np.asarray(valid, dtype=bool))

    @classmethod
    def picked(
        cls,
        coarse: Any,
        fine: Any,
        choice: tuple[NDArray[np.bool_], NDArray[np.intp], NDArray[np.intp]],
        valid: NDArray[np.bool_],
        *,
        standardize: bool,
        limit: int = MEDIAN_EXACT,
    ) -> StoreSource:
        """Per patch of ``coarse``, its own embeddings or those of the sub-patch of ``fine`` that ``choice`` picked.

        Args:
            coarse: The patch ``embedding`` variable ``(time, row, col, dim)``.
            fine: The sub-patch one.
            choice: ``(use_fine, fine_row, fine_col)`` (:func:`~changescope.change.multiscale.subpatch_choice`).
            valid: ``(T, N)`` usable observations of the patches.
            standardize: Compute the standardisation over ``valid``.
            limit: Values up to which the median is exact.
        """
        from changescope.change.multiscale import pick_subpatches

        def load(t: int) -> F64:
            x = pick_subpatches(np.asarray(coarse.isel(time=t).values), np.asarray(fine.isel(time=t).values), choice)
            return np.asarray(x.reshape(-1, x.shape[-1]), dtype=np.float64)

        n_t, n = valid.shape
        src = cls(load, (n_t, n, int(coarse.sizes["dim"])), np.asarray(valid, dtype=bool))
        if standardize and src.valid.any():
            src.center, src.spread = streamed_stats(src.load, src.valid, limit)
        return src

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, N, D)``."""
        return self.size

    def _scaled(self, x: F64) -> F64:
        if self.center is not None and self.spread is not None:
            return (x - self.center) / self.spread
        return x

    def date(self, t: int) -> F64:
        """``(N, D)`` embeddings of date ``t``, zero where not usable (scaled in place: one ``(N, D)`` array)."""
        x = np.asarray(self.load(t), dtype=np.float64)
        if not (x.flags.owndata and x.flags.writeable):  # a view of something the loader keeps
            x = x.copy()
        if self.center is not None and self.spread is not None:
            x -= self.center
            x /= self.spread
        x[~self.valid[t]] = 0.0
        return x

    def patches(self, idx: NDArray[np.intp]) -> F64:
        """``(T, len(idx), D)`` embeddings of patches ``idx`` (one date read at a time)."""
        n_t, _, dim = self.shape
        out = np.full((n_t, len(idx), dim), np.nan)
        for t in range(n_t):
            out[t] = self._scaled(self.load(t)[idx])
        return out
