"""Change scores per patch per date: references, scorers and the per-date AOI-level normalisation.

``ChangeScorer(method, reference, ...).fit(X, valid, times)`` scores every observation of every patch against
that patch's reference observations (:mod:`changescope.change.reference`) with a distance or the Local Outlier
Factor (:mod:`changescope.change.scorers`), vectorised across patches and processed in chunks of patches so
memory stays bounded. Invalid observations (cloudy, nodata, too few clear pixels) are never scored and never enter
a reference.

The raw scores are then normalised per date across the AOI with a robust z-score (median / MAD over the patches
scored that date). A global illumination or haze change shifts every patch's raw score of that date by about the
same amount; the per-date normalisation cancels it, so only patches that change *more than the AOI as a whole*
stand out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.change.reference import REFERENCES, Reference, reference_mask
from changescope.change.scorers import Metric, PatchDistance, PatchLOF
from changescope.change.source import DateSource
from changescope.config import ScoreConfig
from changescope.errors import ParameterError
from changescope.types import Context, Method

__all__ = [
    "METHODS",
    "ChangeScorer",
    "Method",
    "confirm_scores",
    "confirm_with_followers",
    "robust_zscore",
    "standardize_embeddings",
]

METHODS: tuple[str, ...] = ("distance", "lof")
F64 = NDArray[np.float64]


def robust_zscore(scores: F64, min_patches: int = 5, *, out: F64 | None = None) -> F64:
    """Per-date robust z-score across patches: ``(s - median_t) / (1.4826 * MAD_t)``.

    Args:
        scores: ``(T, N)`` raw scores, NaN where not scored.
        min_patches: Dates with fewer scored patches keep NaN (too few to estimate the AOI's level).
        out: A float64 ``(T, N)`` array to write the result to (``scores`` itself is allowed: one date is read
            before it is written); ``None`` allocates one.
    """
    s = np.asarray(scores, dtype=np.float64)
    if out is None:
        out = np.full_like(s, np.nan)
    elif out.shape != s.shape or out.dtype != np.float64:
        raise ParameterError(f"out has shape {out.shape!r} and dtype {out.dtype}; pass float64 {s.shape!r}")
    for t in range(s.shape[0]):
        row = s[t]
        fin = np.isfinite(row)
        if fin.sum() < min_patches:
            out[t] = np.nan
            continue
        med = np.median(row[fin])
        mad = np.median(np.abs(row[fin] - med)) * 1.4826
        if mad <= 1e-12:
            mad = max(float(np.std(row[fin])), 1e-9 + 1e-6 * abs(med))
        out[t] = (row - med) / mad
    return out


def confirm_scores(scores: NDArray[np.floating], following: int = 1) -> F64:
    """Keep only changes that last: each score becomes the minimum of itself and the next ``following`` scores.

    A real change (a cleared forest, a new building, a flood of a few weeks) is still there at the patch's next
    clear observation; a glitch (an unmasked cloud edge, a haze or shadow residue, a one-date mis-registration) is
    not. Taking the minimum over the observation and the next ``following`` scored observations of the same patch
    (NaN dates skipped) keeps the first and removes the second. The last observations of a patch, which have fewer
    followers, keep the minimum over what there is (a change on the last date is still reported).

    Args:
        scores: ``(T, N)`` scores, NaN where not scored.
        following: Scored observations that must confirm (0 returns the scores unchanged).

    Returns:
        ``(T, N)`` confirmed scores, NaN exactly where ``scores`` is NaN.

    Raises:
        ParameterError: ``following`` is negative.
    """
    return confirm_with_followers(scores, following)[0]


def confirm_with_followers(scores: NDArray[np.floating], following: int = 1) -> tuple[F64, NDArray[np.bool_]]:
    """:func:`confirm_scores`, and the scored observations with fewer than ``following`` scored ones after them.

    One sweep from the last date to the first keeps, per patch, the next ``following`` scored values: the working
    memory is ``following x N`` beside the ``(T, N)`` result (a whole Sentinel-2 tile's 470 000 sub-patches over 24
    dates held ten ``(T, N)`` temporaries, 0.86 GB, in the vectorised form this replaces).

    Returns:
        ``(confirmed, short)``: the confirmed scores, and where a scored observation has fewer than ``following``
        scored observations after it (it cannot be confirmed yet: pending).
    """
    if following < 0:
        raise ParameterError(f"following={following!r} must be >= 0 observations")
    s = np.asarray(scores, dtype=np.float64)
    n_t, n = s.shape
    out = np.full((n_t, n), np.nan)
    short = np.zeros((n_t, n), dtype=bool)
    ahead = np.full((following, n), np.nan)  # the next scored values after the current date, nearest first
    seen = np.zeros(n, dtype=np.int64)  # scored observations after the current date (counted up to `following`)
    for t in range(n_t - 1, -1, -1):
        row = s[t]
        fin = np.isfinite(row)
        best = row.copy()
        for j in range(following):
            np.fmin(best, ahead[j], out=best)
        out[t, fin] = best[fin]
        short[t] = fin & (seen < following)
        if following:
            ahead[1:, fin] = ahead[:-1, fin]
            ahead[0, fin] = row[fin]
            seen += fin
    return out, short


def standardize_embeddings(X: NDArray[np.floating], valid: NDArray[np.bool_]) -> tuple[F64, F64, F64]:
    """Scale each dimension of ``(T, N, D)`` embeddings to unit spread over the valid observations.

    Returns:
        ``(X_scaled, center, spread)``: center = per-dimension median, spread = standard deviation (1 where 0).
    """
    obs = np.asarray(np.asarray(X)[np.asarray(valid, dtype=bool)], dtype=np.float64)
    if obs.size == 0:
        raise ParameterError("no valid observation to standardise the embeddings with")
    center = np.median(obs, axis=0)
    spread = obs.std(axis=0)
    spread = np.where(spread > 1e-12, spread, 1.0)
    return (np.asarray(X, dtype=np.float64) - center) / spread, center, spread


def _gather(Xn: F64, mask: NDArray[np.bool_]) -> tuple[F64, NDArray[np.bool_]]:
    """Compress ``(N, T, D)`` with a slot mask ``(N, T)`` to ``(N, K, D)``, K = most references of any patch."""
    k = max(int(mask.sum(axis=1).max(initial=0)), 1)
    order = np.argsort(~mask, axis=1, kind="stable")[:, :k]
    R = np.take_along_axis(Xn, order[..., None], axis=1)
    return R, np.take_along_axis(mask, order, axis=1)


_DEFAULTS = ScoreConfig()


class ChangeScorer:
    """Score change per patch per date against reference observations.

    The defaults are those of :class:`~changescope.config.ScoreConfig` (and so of ``changescope run``): distance
    against the peers' changes, standardised embeddings; :meth:`from_config` builds one from a configuration.

    Args:
        method: ``"distance"`` to the reference centroid, or ``"lof"`` (novelty Local Outlier Factor among the
            patch's reference observations).
        reference: ``"first"`` k dates, ``"previous"`` date, ``"rolling"`` last k dates, or ``"season"`` (same
            season of the previous year).
        k: Reference size for ``"first"`` and ``"rolling"``.
        n_neighbors: LOF neighbours (capped per patch by its reference count minus one).
        metric: ``"cosine"`` or ``"euclidean"``; default cosine for distance, euclidean for LOF.
        normalize: Apply the per-date robust z-score across patches.
        season_window: Days either side of one year earlier for ``reference="season"``.
        chunk: Patches processed at once (bounds memory).
        context: ``"none"``: score each patch against its own reference observations; ``"peers"``: against the
            same-date observations of the patches that looked like it in its reference period
            (:mod:`changescope.change.context`), which cancels seasons, illumination and haze.
        n_peers: Peers per patch for ``context="peers"``.
        exclusion: Patches within this many rows/cols of a patch are never its peers.
        standardize: Scale each embedding dimension to unit spread (median / standard deviation over the valid
            observations) before scoring, so that no feature dominates by its units.
        null: With ``context="peers"`` and the ``"first"`` reference, also score every reference observation
            leave-one-out (:mod:`changescope.change.context`): samples of the score under "no change" for
            :mod:`changescope.change.calibrate`, in ``null_raw_`` / ``null_scores_``.
    """

    def __init__(
        self,
        method: Method = _DEFAULTS.method,
        reference: Reference = _DEFAULTS.reference,
        k: int = _DEFAULTS.k,
        n_neighbors: int = _DEFAULTS.n_neighbors,
        metric: Metric | None = _DEFAULTS.metric,
        normalize: bool = True,
        season_window: int = 45,
        chunk: int = 4096,
        context: Context = _DEFAULTS.context,
        n_peers: int = _DEFAULTS.n_peers,
        exclusion: int = 2,
        standardize: bool = _DEFAULTS.standardize,
        null: bool = False,
    ) -> None:
        self.method = method
        self.reference = reference
        self.k = k
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.normalize = normalize
        self.season_window = season_window
        self.chunk = chunk
        self.context = context
        self.n_peers = n_peers
        self.exclusion = exclusion
        self.standardize = standardize
        self.null = null

    @classmethod
    def from_config(cls, config: ScoreConfig, **overrides: Any) -> ChangeScorer:
        """A scorer with the options of a :class:`~changescope.config.ScoreConfig` (``overrides`` win)."""
        kw: dict[str, Any] = {
            "method": config.method,
            "reference": config.reference,
            "k": config.k,
            "n_neighbors": config.n_neighbors,
            "metric": config.metric,
            "context": config.context,
            "n_peers": config.n_peers,
            "standardize": config.standardize,
        }
        return cls(**{**kw, **overrides})

    def _validate(self, X: NDArray[np.floating], valid: NDArray[np.bool_], n_times: int) -> None:
        if self.method not in METHODS:
            raise ParameterError(f"method={self.method!r} is unknown; choose one of {list(METHODS)!r}")
        if self.reference not in REFERENCES:
            raise ParameterError(f"reference={self.reference!r} is unknown; choose one of {list(REFERENCES)!r}")
        if X.ndim != 3:
            raise ParameterError(f"embeddings must be (time, patches, dim), got shape {X.shape!r}")
        if valid.shape != X.shape[:2]:
            raise ParameterError(f"valid has shape {valid.shape!r}, expected {X.shape[:2]!r}")
        if n_times != X.shape[0]:
            raise ParameterError(f"got {n_times} times for {X.shape[0]} dates of embeddings")
        if self.chunk < 1:
            raise ParameterError(f"chunk={self.chunk!r} must be >= 1")
        if self.context not in ("none", "peers"):
            raise ParameterError(f"context={self.context!r} must be 'none' or 'peers'")

    def fit(
        self,
        X: NDArray[np.floating],
        valid: NDArray[np.bool_],
        times: pd.DatetimeIndex | NDArray[np.datetime64],
        positions: NDArray[np.integer] | None = None,
        breaks: NDArray[np.bool_] | None = None,
    ) -> ChangeScorer:
        """Score every observation of every patch.

        Args:
            X: ``(T, N, D)`` embeddings (NaN rows = no embedding).
            valid: ``(T, N)`` usable observations (e.g. ``valid_fraction >= min_valid``).
            times: ``T`` sorted dates.
            positions: ``(N, 2)`` patch ``(row, col)``, for the spatial exclusion of ``context="peers"``
                (without them no patch is excluded).
            breaks: ``(T, N)``, True where a confirmed change starts a new segment of the patch: with
                ``reference="first"`` later dates are then compared with the new state
                (:func:`~changescope.change.reference.reference_mask`).

        Returns:
            ``self`` with ``raw_scores_ (T, N)``, ``scores_ (T, N)`` (normalised when ``normalize``), NaN where
            not scored, and ``scored_ (T, N)``; ``null_raw_`` / ``null_scores_ (T, N)`` hold the leave-one-out
            scores of the reference observations (NaN elsewhere, and everywhere without ``null``), normalised
            together with the scores.

        Raises:
            ParameterError: Bad arguments, or ``lof`` with fewer than 2 reference observations for every patch
                (e.g. a two-date series): use ``method="distance"`` there.
        """
        X = np.asarray(X)
        valid = np.asarray(valid, dtype=bool)
        self._validate(X, valid, len(times))
        valid = valid & np.isfinite(X).all(axis=2)
        n_t, n = valid.shape
        if self.standardize and valid.any():
            X, self.center_, self.spread_ = standardize_embeddings(X, valid)
        if breaks is not None:
            breaks = np.asarray(breaks, dtype=bool)
            if breaks.shape != valid.shape:
                raise ParameterError(f"breaks have shape {breaks.shape!r}, expected {valid.shape!r}")
        if self.context == "peers":
            return self._fit_peers(X, valid, times, positions, breaks)
        raw = np.full((n_t, n), np.nan)
        scored_all = np.zeros((n_t, n), dtype=bool)
        max_ref = 0
        for lo in range(0, n, self.chunk):
            sl = slice(lo, min(lo + self.chunk, n))
            seg = None if breaks is None else breaks[:, sl]
            ref, scored = reference_mask(valid[:, sl], times, self.reference, self.k, self.season_window, seg)
            max_ref = max(max_ref, int(ref.sum(axis=1).max(initial=0)))
            Xn = np.asarray(X[:, sl], dtype=np.float64).transpose(1, 0, 2)
            Xn = np.where(np.isfinite(Xn), Xn, 0.0)
            raw[:, sl] = self._score_chunk(Xn, ref, scored, same_ref=seg is None or not seg[1:].any())
            scored_all[:, sl] = scored
        if self.method == "lof" and max_ref < 2:
            raise ParameterError(
                f"method='lof' needs at least 2 reference observations per patch, but with reference="
                f"{self.reference!r} and k={self.k} this series of {n_t} date(s) gives at most {max_ref}; "
                "use method='distance' (e.g. for two-date pairs such as OSCD) or a longer series"
            )
        raw = np.where(scored_all, raw, np.nan)
        self.raw_scores_ = raw
        self.scored_ = scored_all & np.isfinite(raw)
        self.scores_ = robust_zscore(raw) if self.normalize else raw
        self.null_raw_ = np.full_like(raw, np.nan)
        self.null_scores_ = np.full_like(raw, np.nan)
        return self

    def fit_source(
        self,
        source: DateSource,
        times: pd.DatetimeIndex | NDArray[np.datetime64],
        positions: NDArray[np.integer] | None = None,
        breaks: NDArray[np.bool_] | None = None,
    ) -> ChangeScorer:
        """:meth:`fit` with ``context="peers"`` on embeddings handed out one date at a time.

        The source carries its usable observations (``source.valid``) and its standardisation
        (:class:`~changescope.change.source.StoreSource`); memory is ``O(N x D)`` whatever the number of dates.

        Raises:
            ParameterError: Another context, or shapes that disagree.
        """
        if self.context != "peers":
            raise ParameterError(f"fit_source scores against peers; context={self.context!r} needs fit()")
        valid = np.asarray(source.valid, dtype=bool)
        n_t, n, _ = source.shape
        if valid.shape != (n_t, n) or len(times) != n_t:
            raise ParameterError(f"valid {valid.shape!r} and {len(times)} times do not match a source of {n_t} x {n}")
        if breaks is not None:
            breaks = np.asarray(breaks, dtype=bool)
            if breaks.shape != valid.shape:
                raise ParameterError(f"breaks have shape {breaks.shape!r}, expected {valid.shape!r}")
        return self._fit_peers(source, valid, times, positions, breaks)

    def _fit_peers(
        self,
        X: NDArray[np.floating] | DateSource,
        valid: NDArray[np.bool_],
        times: pd.DatetimeIndex | NDArray[np.datetime64],
        positions: NDArray[np.integer] | None,
        breaks: NDArray[np.bool_] | None = None,
    ) -> ChangeScorer:
        from changescope.change.context import null_mask, peer_scores

        n = valid.shape[1]
        if positions is None:  # unknown layout: space patches apart so that none is excluded
            positions = np.stack([np.arange(n) * (self.exclusion + 1), np.zeros(n, dtype=int)], axis=1)
        raw = peer_scores(
            X,
            valid,
            times,
            positions,
            method=self.method,
            reference=self.reference,
            k=self.k,
            season_window=self.season_window,
            n_peers=self.n_peers,
            exclusion=self.exclusion,
            n_neighbors=self.n_neighbors,
            chunk=self.chunk,
            breaks=breaks,
            null=self.null,
        )
        nm = np.zeros_like(valid)
        if self.null and self.reference == "first" and (breaks is None or not breaks.any()):
            nm = null_mask(valid, self.k) & np.isfinite(raw)
        both = raw
        raw = np.where(nm, np.nan, both)
        if self.method == "lof" and not np.isfinite(raw).any() and valid.sum(axis=0).max(initial=0) < 3:
            raise ParameterError(
                "method='lof' needs reference dates to compare with; use method='distance' for two-date pairs"
            )
        self.raw_scores_ = raw
        self.scored_ = np.isfinite(raw)
        self.null_raw_ = np.where(nm, both, np.nan)
        if self.normalize:
            z = robust_zscore(both)
            self.scores_ = np.where(nm, np.nan, z)
            self.null_scores_ = np.where(nm, z, np.nan)
        else:  # the same values: share them ((T, N) arrays are this path's memory on large AOIs)
            self.scores_, self.null_scores_ = raw, self.null_raw_
        return self

    def _make(self) -> PatchDistance | PatchLOF:
        if self.method == "distance":
            return PatchDistance(metric=self.metric or "cosine")
        return PatchLOF(n_neighbors=self.n_neighbors, metric=self.metric or "euclidean")

    def _score_chunk(self, Xn: F64, ref: NDArray[np.bool_], scored: NDArray[np.bool_], *, same_ref: bool = True) -> F64:
        n_t = ref.shape[0]
        out = np.full((n_t, Xn.shape[0]), np.nan)
        if self.reference == "first" and same_ref:  # one reference for every date: fit once
            R, m = _gather(Xn, ref[0].T)
            out[:] = self._make().fit(R, m).score(Xn).T
            return out
        for t in range(n_t):
            if not scored[t].any():
                continue
            R, m = _gather(Xn, ref[t].T)
            out[t] = self._make().fit(R, m).score(Xn[:, t : t + 1])[:, 0]
        return out

    def score(
        self,
        X: NDArray[np.floating],
        valid: NDArray[np.bool_],
        times: pd.DatetimeIndex | NDArray[np.datetime64],
        breaks: NDArray[np.bool_] | None = None,
    ) -> F64:
        """``fit(X, valid, times, breaks=breaks).scores_``."""
        return self.fit(X, valid, times, breaks=breaks).scores_
