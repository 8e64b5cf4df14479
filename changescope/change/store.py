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

The functions read settings from a ``config`` with the attributes of :class:`changescope.run.RunConfig`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from changescope.change.events import Events, extract_events
from changescope.change.multiscale import max_over_subpatches, subpatch_breaks, subpatch_embeddings
from changescope.change.score import ChangeScorer, confirm_scores, robust_zscore, standardize_embeddings
from changescope.errors import ParameterError

__all__ = ["ScoredEvents", "score_events", "score_multiscale", "score_store"]


def score_store(
    emb: xr.Dataset,
    config: Any,
    rows_per_chunk: int | None = None,
    *,
    exclusion: int = 2,
    breaks: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Score every patch of an embeddings store.

    With ``context="peers"`` or ``standardize`` the whole store is scored at once (memory ``T x N x D`` float32);
    otherwise it is processed in chunks of patch rows.

    Args:
        emb: The embeddings store.
        config: The run parameters.
        rows_per_chunk: Patch rows per chunk when chunking is possible.
        exclusion: Patches within this many rows/cols are never peers.
        breaks: ``(T, n_rows, n_cols)`` segment starts (see the module docstring), or ``None``.

    Returns:
        ``(raw, scores, valid)`` each ``(T, n_rows, n_cols)``: raw scores, per-date normalised scores confirmed over
        ``config.confirm`` following observations, and the observations used (clear enough, with an embedding).
    """
    times = pd.DatetimeIndex(emb["time"].values)
    n_t, n_rows, n_cols = (emb.sizes[d] for d in ("time", "row", "col"))
    dim = emb.sizes["dim"]
    if breaks is not None and np.shape(breaks) != (n_t, n_rows, n_cols):
        raise ParameterError(f"breaks have shape {np.shape(breaks)!r}, expected {(n_t, n_rows, n_cols)!r}")
    whole = config.context == "peers" or config.standardize
    step = n_rows if whole else rows_per_chunk or max(1, int(2_000_000 // max(1, n_t * n_cols * dim)))
    raw = np.full((n_t, n_rows, n_cols), np.nan)
    used = np.zeros((n_t, n_rows, n_cols), dtype=bool)
    for r0 in range(0, n_rows, step):
        sl = slice(r0, min(r0 + step, n_rows))
        X = np.asarray(emb["embedding"].isel(row=sl).values, dtype=np.float32).reshape(n_t, -1, dim)
        vf = np.asarray(emb["valid_fraction"].isel(row=sl).values).reshape(n_t, -1)
        valid = (vf >= config.min_valid) & np.isfinite(X).all(axis=2)
        rr, cc = np.meshgrid(np.arange(sl.start, sl.stop), np.arange(n_cols), indexing="ij")
        scorer = ChangeScorer(
            config.method,
            config.reference,
            config.k,
            config.n_neighbors,
            config.metric,
            normalize=False,
            context=config.context,
            n_peers=config.n_peers,
            exclusion=exclusion,
            standardize=config.standardize,
        )
        seg = None if breaks is None else np.asarray(breaks, dtype=bool)[:, sl].reshape(n_t, -1)
        scorer.fit(X, valid, times, positions=np.stack([rr.ravel(), cc.ravel()], axis=1), breaks=seg)
        raw[:, sl] = scorer.raw_scores_.reshape(n_t, -1, n_cols)
        used[:, sl] = valid.reshape(n_t, -1, n_cols)
    scores = confirm_scores(robust_zscore(raw.reshape(n_t, -1)), config.confirm).reshape(raw.shape)
    return raw, scores, used


def score_multiscale(
    emb: xr.Dataset,
    fine: xr.Dataset | None,
    config: Any,
    subdivide: int = 2,
    breaks: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.float32]]:
    """:func:`score_store` on the patches, raised to the highest score of their sub-patches when ``fine`` is given.

    Args:
        emb: The patch embeddings store.
        fine: The sub-patch embeddings store (side ``patch_size / subdivide``), or ``None``.
        config: The run parameters.
        subdivide: Sub-patches per patch side in ``fine``.
        breaks: ``(T, n_rows, n_cols)`` patch segment starts (spread to their sub-patches), or ``None``.

    Returns:
        ``(raw, scores, valid, X)``: ``raw`` and ``valid`` as :func:`score_store` returns them for the patches;
        ``scores`` the maximum of the patch's and its sub-patches' scores where the patch itself is scored; ``X``
        ``(T, n_rows, n_cols, D)`` the embeddings change vectors are taken from (per patch, those of the scale at
        which it changed most, :func:`~changescope.change.multiscale.subpatch_embeddings`).
    """
    raw, scores, used = score_store(emb, config, breaks=breaks)
    X = np.asarray(emb["embedding"].values, dtype=np.float32)
    if fine is None:
        return raw, scores, used, X
    size = int(emb.attrs.get("patch_size", config.patch_size))
    stride = int(emb.attrs.get("stride", config.stride or size))
    step = stride // (size // subdivide)
    fine_breaks = None
    if breaks is not None:
        fine_breaks = subpatch_breaks(breaks, (fine.sizes["row"], fine.sizes["col"]), subdivide, step)
    _, fine_scores, _ = score_store(fine, config, exclusion=2 * subdivide, breaks=fine_breaks)
    n_rows, n_cols = scores.shape[1:]
    X = subpatch_embeddings(X, np.asarray(fine["embedding"].values), scores, fine_scores, subdivide, step)
    sub = max_over_subpatches(fine_scores, n_rows, n_cols, subdivide, step)
    return raw, np.where(np.isfinite(scores), np.fmax(scores, sub), np.nan), used, X


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
    """

    raw: NDArray[np.float64]
    scores: NDArray[np.float64]
    used: NDArray[np.bool_]
    events: Events
    breaks: NDArray[np.bool_]
    passes: int
    timings: dict[str, float] = field(default_factory=dict)


def score_events(
    emb: xr.Dataset,
    fine: xr.Dataset | None,
    config: Any,
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
    times = pd.DatetimeIndex(emb["time"].values)
    n_t, n_rows, n_cols = (emb.sizes[d] for d in ("time", "row", "col"))
    rebase = rebase and config.reference == "first" and persistence > 0
    breaks = np.zeros((n_t, n_rows * n_cols), dtype=bool)
    passes = 0
    spent = {"score": 0.0, "events": 0.0}
    while True:
        passes += 1
        seg = breaks.reshape(n_t, n_rows, n_cols) if breaks.any() else None
        t0 = time.perf_counter()
        raw, scores, used, X = score_multiscale(emb, fine, config, subdivide, breaks=seg)
        t1 = time.perf_counter()
        spent["score"] += t1 - t0
        flat = X.reshape(n_t, n_rows * n_cols, -1)
        valid = used.reshape(n_t, -1)
        if config.standardize and valid.any():  # change vectors in the units the scores used
            flat = standardize_embeddings(flat, valid)[0].astype(np.float32)
        events = extract_events(
            flat,
            valid,
            times,
            scores.reshape(n_t, -1),
            reference=config.reference,
            k=config.k,
            threshold=config.threshold,
            q=config.q,
            persistence=persistence,
            breaks=breaks if breaks.any() else None,
        )
        spent["events"] += time.perf_counter() - t1
        found = events.breaks(n_t, n_rows * n_cols)
        if not rebase or passes >= max_passes or np.array_equal(found, breaks):
            timings = {key: round(value, 3) for key, value in spent.items()}
            return ScoredEvents(raw, scores, used, events, breaks, passes, timings)
        breaks = found
