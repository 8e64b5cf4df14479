"""Scoring whole embedding stores, and the segmented rescoring that turns scores into events.

:func:`score_store` scores every patch of an embeddings store; :func:`score_multiscale` adds the sub-patch scale
(:mod:`changescope.change.multiscale`). :func:`score_events` runs the loop a ``run`` uses:

1. score the store(s) against the reference and extract events (:func:`~changescope.change.events.extract_events`);
2. with ``rebase`` (``reference="first"`` only), every *confirmed* event starts a new segment of its patch: the
   dates after it are compared with the new state, not the state before the change
   (:func:`~changescope.change.reference.reference_mask`), and the stores are scored again;
3. repeat until the segment starts no longer change (at most ``max_passes`` scorings).

Without rebasing, a patch that changed for good (a forest cleared and then farmed) stays unlike its old reference
on every later date, so each later dip and rise of its score (a crop cycle on the new field) is reported again as a
"new" event of the same change, and those echoes crowd the ranking and the search results. With it, a second event
on that patch is a real second change (the clearing becoming a field), with its own before state.

The functions take a :class:`~changescope.config.ScoreConfig` (or a whole :class:`~changescope.config.RunConfig`,
whose scoring stage they use); the clear fraction an observation needs is the one its store was embedded with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from changescope.change.calibrate import MIN_NULL, NullModel, PatchNoise
from changescope.change.events import Events, extract_events
from changescope.change.multiscale import max_over_subpatches, subpatch_breaks, subpatch_choice
from changescope.change.score import ChangeScorer, confirm_with_followers, robust_zscore
from changescope.change.source import StoreSource, streamed_stats
from changescope.config import EmbedConfig, RunConfig, ScoreConfig
from changescope.errors import ParameterError
from changescope.heap import release

__all__ = [
    "Nulls",
    "ScoredEvents",
    "StoreScores",
    "calibrate",
    "score_config",
    "score_events",
    "score_multiscale",
    "score_store",
    "store_min_valid",
]


@dataclass
class StoreScores:
    """Scores of one embeddings store (or of patches and their sub-patches together), each ``(T, n_rows, n_cols)``.

    Attributes:
        raw: Raw scores (NaN where not scored).
        z: Per-date robust z-scores, before confirmation.
        scores: Confirmed scores (the minimum over the observation and the next ``confirm`` scored ones).
        used: Observations used (clear enough, with an embedding).
        pending: Scored observations with fewer than ``confirm`` scored observations after them.
        null_z: The z-scores of the reference observations, scored leave-one-out (NaN elsewhere).
        null_scores: Their confirmed scores, confirmed within the reference period (NaN where the reference period
            has fewer than ``confirm`` observations after them).
        p: p-values of ``scores`` (of ``z`` where pending) against the null (:mod:`changescope.change.calibrate`),
            set by :func:`score_multiscale`.
        nulls: The null models ``p`` comes from.
    """

    raw: NDArray[np.float64]
    z: NDArray[np.float64]
    scores: NDArray[np.float64]
    used: NDArray[np.bool_]
    pending: NDArray[np.bool_]
    null_z: NDArray[np.float64]
    null_scores: NDArray[np.float64]
    p: NDArray[np.float64] | None = None
    nulls: Nulls | None = None


@dataclass(frozen=True)
class Nulls:
    """The null of "no change" of a run's scores (:mod:`changescope.change.calibrate`).

    Attributes:
        confirmed: The null of confirmed scores.
        single: The null of single observations (pending ones).
        noise: Each patch's noise level, which divides its scores before they are tested (``null_scale="patch"``),
            or ``None`` (the plain z-scores are tested).
    """

    confirmed: NullModel
    single: NullModel
    noise: PatchNoise | None = None

    @classmethod
    def fit(cls, scored: StoreScores, scale: str = "patch", confirm: int = 1) -> Nulls:
        """The nulls of ``scored``'s reference-period scores.

        Args:
            scored: Scores with their null z-scores and confirmed null scores.
            scale: ``"patch"``: studentise by each patch's noise (falls back to ``"aoi"`` with fewer than
                ``MIN_NULL`` leave-out samples); ``"aoi"``: one null of the plain z-scores.
            confirm: The observations confirming a score (the windows of the confirmed null).

        Raises:
            ParameterError: Unknown ``scale``.
        """
        if scale not in ("patch", "aoi"):
            raise ParameterError(f"null_scale={scale!r} must be 'patch' or 'aoi'")
        n_t = scored.null_z.shape[0]
        if scale == "patch":
            noise = PatchNoise.fit(scored.null_z.reshape(n_t, -1))
            conf, single = noise.null_samples(scored.null_z.reshape(n_t, -1), confirm)
            if conf.size >= MIN_NULL:
                return cls(NullModel.fit(conf, noise.floor), NullModel.fit(single, noise.floor), noise)
        return cls(NullModel.fit(scored.null_scores), NullModel.fit(scored.null_z))

    def score_thresholds(self, p_threshold: float, n_patches: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(confirmed, single)``, each ``(n_patches,)``: the score each patch needs to reach ``p_threshold``.

        The confirmed one applies to confirmed scores, the single one to pending z-scores. Without per-patch noise
        every patch needs the same score.
        """
        scale = self.noise.scale if self.noise is not None else np.ones(n_patches)
        return (
            np.asarray(self.confirmed.isf(p_threshold) * scale, dtype=np.float64),
            np.asarray(self.single.isf(p_threshold) * scale, dtype=np.float64),
        )

    def p_values(self, scored: StoreScores) -> NDArray[np.float64]:
        """p-values of the confirmed scores, of the single z-scores where pending, NaN where not scored."""
        shape = scored.scores.shape
        scores, z = scored.scores.reshape(shape[0], -1), scored.z.reshape(shape[0], -1)
        if self.noise is not None and self.noise.level.size == scores.shape[1]:
            scores, z = self.noise.studentize(scores), self.noise.studentize(z)
        pending = scored.pending.reshape(scores.shape)
        p = np.where(pending, self.single.sf(z), self.confirmed.sf(scores))
        return np.asarray(np.where(np.isfinite(scores), p, np.nan).reshape(shape), dtype=np.float64)


def score_config(config: ScoreConfig | RunConfig) -> ScoreConfig:
    """The scoring configuration of ``config`` (its ``score`` stage for a :class:`RunConfig`).

    Raises:
        ParameterError: ``config`` is neither.
    """
    if isinstance(config, RunConfig):
        return config.score
    if not isinstance(config, ScoreConfig):
        raise ParameterError(f"config must be a ScoreConfig or RunConfig, not {type(config).__name__}")
    return config


def store_min_valid(emb: xr.Dataset) -> float:
    """The clear fraction the store's observations were embedded with (the embedding default when unrecorded)."""
    return float(emb.attrs.get("min_valid", EmbedConfig().min_valid))


def score_store(
    emb: xr.Dataset,
    config: ScoreConfig | RunConfig,
    rows_per_chunk: int | None = None,
    *,
    exclusion: int = 2,
    breaks: NDArray[np.bool_] | None = None,
    null: bool = True,
) -> StoreScores:
    """Score every patch of an embeddings store, and its reference observations leave-one-out (the null).

    The store is read one date at a time with the peers context (:mod:`changescope.change.source`: memory
    ``O(N x D)``, whatever the number of dates) and in chunks of patch rows otherwise; the standardisation is
    computed over the whole store in a first streaming pass. With the peers context and the ``"first"`` reference
    (and ``null``), the reference observations are also scored leave-one-out (:mod:`changescope.change.context`)
    and normalised with the other scores of their date; otherwise there are no null scores.

    Args:
        emb: The embeddings store.
        config: The run parameters.
        rows_per_chunk: Patch rows per chunk when chunking is possible.
        exclusion: Patches within this many rows/cols are never peers.
        breaks: ``(T, n_rows, n_cols)`` segment starts (see the module docstring), or ``None``.
        null: Compute the null scores (a rescoring pass reuses the first pass's null models and skips them).
    """
    config = score_config(config)
    min_valid = store_min_valid(emb)
    times = pd.DatetimeIndex(emb["time"].values)
    n_t, n_rows, n_cols = (emb.sizes[d] for d in ("time", "row", "col"))
    dim = emb.sizes["dim"]
    if breaks is not None and np.shape(breaks) != (n_t, n_rows, n_cols):
        raise ParameterError(f"breaks have shape {np.shape(breaks)!r}, expected {(n_t, n_rows, n_cols)!r}")
    vf = np.asarray(emb["valid_fraction"].values).reshape(n_t, -1)
    source = StoreSource.open(emb["embedding"], vf, min_valid, standardize=config.standardize)
    rr, cc = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    positions = np.stack([rr.ravel(), cc.ravel()], axis=1)
    if config.context == "peers":  # one date of embeddings at a time (a patch's peers lie anywhere)
        scorer = ChangeScorer.from_config(config, normalize=False, exclusion=exclusion, null=null)
        seg = None if breaks is None else np.asarray(breaks, dtype=bool).reshape(n_t, -1)
        scorer.fit_source(source, times, positions=positions, breaks=seg)
        raw = scorer.raw_scores_.reshape(n_t, n_rows, n_cols)
        null_raw = scorer.null_raw_.reshape(n_t, n_rows, n_cols)
        del scorer  # and the (T, N) arrays this function does not use
    else:  # each patch on its own: chunks of patch rows, standardised with the statistics of the whole store
        step = rows_per_chunk or max(1, int(2_000_000 // max(1, n_t * n_cols * dim)))
        raw = np.full((n_t, n_rows, n_cols), np.nan)
        null_raw = np.full((n_t, n_rows, n_cols), np.nan)
        for r0 in range(0, n_rows, step):
            sl = slice(r0, min(r0 + step, n_rows))
            X = np.asarray(emb["embedding"].isel(row=sl).values, dtype=np.float64).reshape(n_t, -1, dim)
            if source.center is not None and source.spread is not None:
                X = (X - source.center) / source.spread
            scorer = ChangeScorer.from_config(config, normalize=False, standardize=False, null=null)
            seg = None if breaks is None else np.asarray(breaks, dtype=bool)[:, sl].reshape(n_t, -1)
            valid = source.valid.reshape(n_t, n_rows, n_cols)[:, sl].reshape(n_t, -1)
            scorer.fit(X, valid, times, breaks=seg)
            raw[:, sl] = scorer.raw_scores_.reshape(n_t, -1, n_cols)
    used = source.valid.reshape(n_t, n_rows, n_cols)
    is_null = np.isfinite(null_raw).reshape(n_t, -1)
    both = np.where(is_null, null_raw.reshape(n_t, -1), raw.reshape(n_t, -1))
    del null_raw
    both = robust_zscore(both, out=both)
    z = np.where(is_null, np.nan, both)
    null_z = both  # (T, N) arrays are the score stage's memory: reuse this one
    null_z[~is_null] = np.nan
    del both, is_null
    scores, pending = confirm_with_followers(z, config.confirm)
    null_scores, short = confirm_with_followers(null_z, config.confirm)
    null_scores[short] = np.nan  # confirmed within the reference period only
    del source, short
    release()
    shape = raw.shape
    return StoreScores(
        raw,
        z.reshape(shape),
        scores.reshape(shape),
        used,
        pending.reshape(shape),
        null_z.reshape(shape),
        null_scores.reshape(shape),
    )


def _raise(coarse: NDArray[np.float64], fine: NDArray[np.float64], subdivide: int, step: int) -> NDArray[np.float64]:
    """Each patch's value raised to the highest of its sub-patches' (where the patch has a value)."""
    n_rows, n_cols = coarse.shape[1:]
    best = max_over_subpatches(fine, n_rows, n_cols, subdivide, step)
    return np.where(np.isfinite(coarse), np.fmax(coarse, best), np.nan)


def calibrate(
    scored: StoreScores, nulls: Nulls | None = None, *, scale: str = "patch", confirm: int = 1
) -> StoreScores:
    """Set ``scored.p``: confirmed scores against the null of confirmed scores, pending ones against the single one.

    The null models are fitted to the same statistic computed over the reference period (:meth:`Nulls.fit`, with
    ``scale`` and ``confirm``) unless ``nulls`` are given.
    """
    if nulls is None:
        nulls = Nulls.fit(scored, scale, confirm)
    scored.p = nulls.p_values(scored)
    scored.nulls = nulls
    return scored


def score_multiscale(
    emb: xr.Dataset,
    fine: xr.Dataset | None,
    config: ScoreConfig | RunConfig,
    subdivide: int = 2,
    breaks: NDArray[np.bool_] | None = None,
    nulls: Nulls | None = None,
) -> tuple[StoreScores, StoreSource]:
    """:func:`score_store` on the patches, raised to the highest score of their sub-patches, then calibrated.

    The null statistic is raised the same way (a patch's reference-period score is the highest of its own and its
    sub-patches'), so the p-values account for testing every patch at ``1 + subdivide**2`` units; with
    ``null_scale="patch"`` that raised statistic is studentised by the patch's noise.

    Args:
        emb: The patch embeddings store.
        fine: The sub-patch embeddings store (side ``patch_size / subdivide``), or ``None``.
        config: The run parameters.
        subdivide: Sub-patches per patch side in ``fine``.
        breaks: ``(T, n_rows, n_cols)`` patch segment starts (spread to their sub-patches), or ``None``.
        nulls: The null models to reuse (:func:`calibrate`), or ``None`` to fit them.

    Returns:
        ``(scores, source)``: the calibrated patch scores (:class:`StoreScores`, ``p`` set) and the embeddings change
        vectors are taken from, one date at a time (:class:`~changescope.change.source.StoreSource`, not
        standardised; per patch, those of the scale at which it changed most,
        :func:`~changescope.change.multiscale.subpatch_choice`), usable where the patch's observation is.
    """
    config = score_config(config)
    coarse = score_store(emb, config, breaks=breaks, null=nulls is None)
    n_t = emb.sizes["time"]
    scale, confirm = config.null_scale, config.confirm
    if fine is None:
        source = StoreSource.over(emb["embedding"], coarse.used.reshape(n_t, -1))
        return calibrate(coarse, nulls, scale=scale, confirm=confirm), source
    size = int(emb.attrs["patch_size"])
    stride = int(emb.attrs.get("stride") or size)
    step = stride // (size // subdivide)
    fine_breaks = None
    if breaks is not None:
        fine_breaks = subpatch_breaks(breaks, (fine.sizes["row"], fine.sizes["col"]), subdivide, step)
    sub = score_store(fine, config, exclusion=2 * subdivide, breaks=fine_breaks, null=nulls is None)
    choice = subpatch_choice(coarse.scores, sub.scores, subdivide, step)
    source = StoreSource.picked(
        emb["embedding"], fine["embedding"], choice, coarse.used.reshape(n_t, -1), standardize=False
    )
    # the sub-patch arrays (4x the patches) are the stage's largest: each is dropped once raised onto the patches
    parts = {name: getattr(sub, name) for name in ("z", "scores", "null_z", "null_scores")}
    del sub, choice
    raised = {name: _raise(getattr(coarse, name), parts.pop(name), subdivide, step) for name in tuple(parts)}
    release()
    merged = StoreScores(
        raw=coarse.raw,
        z=raised["z"],
        scores=raised["scores"],
        used=coarse.used,
        pending=coarse.pending,
        null_z=raised["null_z"],
        null_scores=raised["null_scores"],
    )
    return calibrate(merged, nulls, scale=scale, confirm=confirm), source


@dataclass
class ScoredEvents:
    """What :func:`score_events` found.

    Attributes:
        raw: ``(T, n_rows, n_cols)`` raw patch scores of the final pass.
        scores: ``(T, n_rows, n_cols)`` normalised (multi-scale, confirmed) scores of the final pass.
        used: ``(T, n_rows, n_cols)`` observations used.
        events: The events of the final pass (change vectors in the standardised units the scores used).
        breaks: ``(T, n_rows * n_cols)`` segment starts the final pass used (all False without rebasing).
        passes: Scoring passes run.
        timings: Seconds spent scoring (``"score"``) and extracting events (``"events"``), over all passes.
        detail: Everything the final pass computed (z-scores, p-values, pending observations, the null).
    """

    raw: NDArray[np.float64]
    scores: NDArray[np.float64]
    used: NDArray[np.bool_]
    events: Events
    breaks: NDArray[np.bool_]
    passes: int
    timings: dict[str, float] = field(default_factory=dict)
    detail: StoreScores | None = None


def score_events(
    emb: xr.Dataset,
    fine: xr.Dataset | None,
    config: ScoreConfig | RunConfig,
    subdivide: int = 2,
    *,
    persistence: int = 1,
    rebase: bool = False,
    max_passes: int = 3,
) -> ScoredEvents:
    """Score, extract events and (with ``rebase``) rescore with segments until they settle (module docstring).

    Args:
        emb: The patch embeddings store.
        fine: The sub-patch embeddings store, or ``None``.
        config: The run parameters (``reference``, ``k``, ``threshold``, ``q``, ``standardize`` and the scoring ones).
        subdivide: Sub-patches per patch side in ``fine``.
        persistence: Following valid dates that must confirm an event.
        rebase: Restart a patch's reference after each confirmed event (``reference="first"`` only).
        max_passes: Most scoring passes.

    Raises:
        ParameterError: ``max_passes < 1``.
    """
    if max_passes < 1:
        raise ParameterError(f"max_passes={max_passes!r} must be >= 1")
    config = score_config(config)
    times = pd.DatetimeIndex(emb["time"].values)
    n_t, n_rows, n_cols = (emb.sizes[d] for d in ("time", "row", "col"))
    rebase = rebase and config.reference == "first" and persistence > 0
    breaks = np.zeros((n_t, n_rows * n_cols), dtype=bool)
    passes = 0
    spent = {"score": 0.0, "events": 0.0}
    nulls: Nulls | None = None
    while True:
        passes += 1
        seg = breaks.reshape(n_t, n_rows, n_cols) if breaks.any() else None
        t0 = time.perf_counter()
        scored, source = score_multiscale(emb, fine, config, subdivide, breaks=seg, nulls=nulls)
        nulls = scored.nulls  # the null of "no change" does not depend on the segments
        t1 = time.perf_counter()
        spent["score"] += t1 - t0
        valid = scored.used.reshape(n_t, -1)
        if config.standardize and valid.any():  # change vectors in the units the scores used
            source.center, source.spread = streamed_stats(source.load, valid)
        events = extract_events(
            source,
            valid,
            times,
            scored.scores.reshape(n_t, -1),
            reference=config.reference,
            k=config.k,
            threshold=config.threshold,
            q=config.q,
            persistence=persistence,
            breaks=breaks if breaks.any() else None,
            pvalues=None if scored.p is None else scored.p.reshape(n_t, -1),
            pending=scored.pending.reshape(n_t, -1),
            null=None if scored.nulls is None else scored.nulls.confirmed,
            false_alarms=config.false_alarms,
            fdr=config.fdr,
        )
        events = _with_score_thresholds(events, scored.nulls, n_rows * n_cols)
        spent["events"] += time.perf_counter() - t1
        found = events.breaks(n_t, n_rows * n_cols)
        if not rebase or passes >= max_passes or np.array_equal(found, breaks):
            timings = {key: round(value, 3) for key, value in spent.items()}
            return ScoredEvents(scored.raw, scored.scores, scored.used, events, breaks, passes, timings, scored)
        breaks = found


def _with_score_thresholds(events: Events, nulls: Nulls | None, n_patches: int) -> Events:
    """``events`` with each event's ``score_threshold``, the score its patch needed.

    Confirmed events needed the confirmed threshold, pending ones the single-observation one. With per-patch noise,
    :attr:`Events.threshold` becomes the median over patches of the confirmed score each needs; otherwise every
    patch needs the run's one threshold.
    """
    frame = events.frame.copy()
    if events.decision is None or nulls is None:
        frame["score_threshold"] = np.full(len(frame), events.threshold, dtype=np.float64)
        return replace(events, frame=frame)
    confirmed, single = nulls.score_thresholds(events.decision.p_threshold, n_patches)
    patch = frame["patch"].to_numpy(dtype=np.int64)
    frame["score_threshold"] = np.where(frame["confirmed"].to_numpy(dtype=bool), confirmed[patch], single[patch])
    typical = float(np.median(confirmed)) if nulls.noise is not None and confirmed.size else events.threshold
    return replace(events, frame=frame, threshold=typical)
