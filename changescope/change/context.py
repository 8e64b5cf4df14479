"""Peer-referenced change: robustness to seasons, illumination and haze through patches that looked alike.

A patch's own earlier observations are a poor reference when the whole landscape moves: phenology greens and browns
every field, crops rotate, the sun and the haze change from date to date. So for each date ``t`` and patch ``n``,
the *peers* of ``n`` are the ``n_peers`` patches whose reference state (the mean of their reference observations,
see :mod:`changescope.change.reference`) was closest to ``n``'s, excluding patches within ``exclusion`` patch rows
or columns (so that one large event is not its own peer). The reference observations of ``n`` at ``t`` are then the
peers' observations *at the same date*: they share its season, illumination and haze, and if ``n`` has not changed,
some of them look like it now. ``n`` scores high only when it has become unlike every patch that used to be like it.

- ``distance``: mean euclidean distance to the ``k_nearest`` closest peer observations (not their centroid: peers
  may have diverged into several normal states, e.g. different crops);
- ``lof``: the novelty Local Outlier Factor of the observation among its peers' observations.

**Null scores** (``null=True``, ``"first"`` reference without segments): each *reference* observation of a patch is
also scored, leave-one-out, exactly as a later observation is: its change since the mean of the patch's *other*
reference observations, against its peers' leave-one-out changes of the same date. The reference period is, by the
method's own assumption, unchanged, so these scores are samples of the score under "no change" at every patch, and
:mod:`changescope.change.calibrate` turns scores into p-values with them. A leave-one-out state averages one
observation fewer, so null scores are slightly larger than the scores of unchanged later observations (for
``k = 3``, about 6 % under independent noise): the p-values err on the safe side.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.change.neighbours import EXACT_PEERS, Fetch, PeerTable, StateSearch, far_first
from changescope.change.reference import Reference, reference_mask
from changescope.change.schedule import compute_dates, runs_one_at_a_time
from changescope.change.scorers import PatchLOF
from changescope.change.source import ArraySource, DateSource
from changescope.cores import usable_cores
from changescope.errors import ParameterError
from changescope.heap import release

__all__ = ["null_mask", "peer_scores"]

F64 = NDArray[np.float64]
GATHER_BYTES = 64 * 2**20
"""Most bytes of peer changes ``(patches, n_peers, D)`` float64 gathered at once (fewer patches for wide
embeddings: 4096 x 100 x 768 would be 2.5 GB)."""
REDO_PROBES = 8
"""Cells searched per query by a date's own index (:data:`REDO_INDEXED`): on a cloudy date most patches lack
usable candidates in the table and are searched again, so this search sets the stage's time (recall@150 0.978 at 8
probes on the whole tile's sub-patches, 4x faster than 32; the 24-date whole tile spent 58 % of its score stage
in these searches at 32 probes)."""
REDO_INDEXED = 1024
"""A date on which at least this many patches lack scorable candidates in the table searches them in an IVF index
of its scorable states (trained once for the date) rather than exhaustively (about 2.3 s per 1000 queries at
295 000 states); fewer queries take the exact flat search. The choice is the date's, whatever its chunks."""
DATE_THREADS = 8
"""Most threads sharing a date's chunks of patches when the dates run one at a time in this process (at most the
usable cores). Their gathered peer changes share :data:`GATHER_BYTES`. Measured on a 6144 px x 24-date synthetic
Sentinel-2 tile (2 cores): see the README's scale section."""


def peer_scores(
    X: NDArray[np.floating] | DateSource,
    valid: NDArray[np.bool_],
    times: pd.DatetimeIndex | NDArray[np.datetime64],
    positions: NDArray[np.integer],
    *,
    method: str = "distance",
    reference: Reference = "first",
    k: int = 3,
    season_window: int = 45,
    n_peers: int = 100,
    exclusion: int = 2,
    k_nearest: int = 3,
    n_neighbors: int = 20,
    chunk: int = 4096,
    breaks: NDArray[np.bool_] | None = None,
    null: bool = False,
    exact_limit: int | None = None,
) -> F64:
    """Score every observation against its peers' observations of the same date.

    Args:
        X: ``(T, N, D)`` embeddings, or a source handing them out one date at a time
            (:mod:`changescope.change.source`; memory ``O(N x D)`` whatever ``T``).
        valid: ``(T, N)`` usable observations.
        times: ``T`` dates.
        positions: ``(N, 2)`` patch ``(row, col)`` of each patch (for the spatial exclusion).
        method: ``"distance"`` or ``"lof"``.
        reference: Reference strategy defining each patch's reference state.
        k: Reference size.
        season_window: Window of the ``"season"`` strategy.
        n_peers: Peers per patch (capped by the patches available).
        exclusion: Patches within this many rows/cols are never peers.
        k_nearest: Peer observations averaged by ``distance``.
        n_neighbors: LOF neighbours (capped by the peers available).
        chunk: Most patches scored at once (memory ``chunk x n_peers x D`` float64, and their neighbour lists; fewer
            when that exceeds :data:`GATHER_BYTES`).
        breaks: ``(T, N)`` segment starts after confirmed changes
            (:func:`~changescope.change.reference.reference_mask`): a patch's reference state, and so its peers,
            follow its latest segment.
        null: Also score the reference observations leave-one-out (module docstring; ``"first"`` without
            ``breaks`` only, ignored otherwise): where :func:`null_mask` is True the result holds these null scores.
        exact_limit: Patches up to which the peer search is exact; above, faiss IVF (default
            :data:`EXACT_PEERS`).

    Returns:
        ``(T, N)`` raw scores, NaN where not scored (invalid, no reference, too few peers).
    """
    if method not in ("distance", "lof"):
        raise ParameterError(f"method={method!r} must be 'distance' or 'lof'")
    if n_peers < 2 or k_nearest < 1:
        raise ParameterError(f"n_peers={n_peers!r} must be >= 2 and k_nearest={k_nearest!r} >= 1")
    if chunk < 1:
        raise ParameterError(f"chunk={chunk!r} must be >= 1 patches")
    src: DateSource = X if not isinstance(X, np.ndarray) else ArraySource(X, np.asarray(valid, dtype=bool))
    exact_limit = EXACT_PEERS if exact_limit is None else exact_limit
    n_t, n, _ = src.shape
    pos = np.asarray(positions)
    ref, scored = reference_mask(valid, times, reference, k, season_window, breaks=breaks)
    loo = null_mask(valid, k) if null and reference == "first" and (breaks is None or not breaks.any()) else None
    out = np.full((n_t, n), np.nan)
    extra = (2 * exclusion + 1) ** 2
    from dask.delayed import delayed

    # dates one at a time here (the default): each date's chunks share the cores; else the scheduler's workers do
    threads = min(DATE_THREADS, usable_cores()) if runs_one_at_a_time() else 1
    job = _DateJob(n_peers, extra, exclusion, k_nearest, n_neighbors, chunk, method, exact_limit, threads)
    # named, so dask never hashes (or copies into every task) the source and the positions
    src_d = delayed(src, name=f"peer-source-{uuid.uuid4().hex}", traverse=False)
    pos_d = delayed(pos, name=f"peer-positions-{uuid.uuid4().hex}", traverse=False)
    tables: dict[bytes, Any] = {}
    tasks, dates = [], []
    for t in range(n_t):
        count = ref[t].sum(axis=0)
        ok = scored[t] & (count > 0)
        if loo is not None:
            ok = ok | loo[t]
        if min(n_peers, int(ok.sum()) - 1) < max(k_nearest + 1, 5):
            continue
        key = np.packbits(ref[t]).tobytes()  # dates with the same reference states share one table ("first": all)
        if key not in tables:
            tables[key] = delayed(PeerTable.build, pure=False)(
                np.array(ref[t]),
                count,
                src_d,
                pos_d,
                Fetch(n_peers, exclusion, exact_limit),
                dask_key_name=f"peer-table-{t}-{uuid.uuid4().hex}",
            )
        own = None if loo is None else loo[t]
        tasks.append(
            delayed(_score_date, pure=False)(
                tables[key], src_d, pos_d, t, ok, own, count, job, dask_key_name=f"peer-date-{t}-{uuid.uuid4().hex}"
            )
        )
        dates.append(t)
    for t, (idx, values) in zip(dates, compute_dates(tasks), strict=True):
        out[t, idx] = values
    return out


@dataclass(frozen=True)
class _DateJob:
    """The settings of one date's peer scoring (:func:`_score_date`)."""

    n_peers: int
    extra: int
    exclusion: int
    k_nearest: int
    n_neighbors: int
    chunk: int
    method: str
    exact_limit: int
    threads: int = 1


def _score_date(
    table: PeerTable,
    src: DateSource,
    pos: NDArray[np.integer],
    t: int,
    ok: NDArray[np.bool_],
    loo: NDArray[np.bool_] | None,
    count: NDArray[np.integer],
    job: _DateJob,
) -> tuple[NDArray[np.intp], F64]:
    """Score the scorable patches ``ok`` of date ``t`` against their peers (a task of :func:`peer_scores`).

    The patches are scored in chunks (memory: :data:`GATHER_BYTES` of gathered peer changes in all), shared among
    ``job.threads`` threads; each patch's score depends on its own peers only, so the result is the same whatever
    the chunks and threads.

    Returns:
        ``(idx, scores)``: the scored patches and their raw scores (NaN where too few peers).
    """
    idx = np.nonzero(ok)[0]
    n_eff = min(job.n_peers, len(idx) - 1)  # small AOIs: every other scorable patch is a candidate peer
    state = table.state[idx]
    delta = src.date(t)[idx]  # becomes each patch's change since its reference state, in place
    own, since_others = None, None
    if loo is not None and loo.any():  # reference observations: since the mean of the others
        own = loo[idx]
        c = count[idx][own, None].astype(np.float64)
        x_own = delta[own]
        since_others = x_own - (state[own] * c - x_own) / (c - 1)
    delta -= state
    if own is not None:
        delta[own] = since_others
    threads = max(1, job.threads)
    work = _DateChunks(
        table=table,
        job=job,
        idx=idx,
        ok=ok,
        state=state,
        delta=delta,
        pidx=pos[idx],
        n_eff=n_eff,
        step=min(job.chunk, max(16, GATHER_BYTES // (8 * n_eff * delta.shape[1] * threads))),
        # searched again: an index of the date's states is worth building
        many=table.lacking(idx, ok, n_eff) >= REDO_INDEXED,
    )
    del state, delta
    starts = range(0, len(idx), work.step)
    if threads > 1 and len(starts) > 1:  # numpy, faiss and scikit-learn release the GIL in their loops
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(work, starts):
                pass
    else:
        for lo in starts:
            work(lo)
    scores = work.scores
    del work
    release()  # what this date allocated goes back to the system before the next date
    return idx, scores


class _DateChunks:
    """One date's patches scored a chunk of ``step`` patches at a time (:func:`_score_date`).

    Chunks run in any order and thread, each writing its own slice of :attr:`scores`.
    """

    def __init__(
        self,
        *,
        table: PeerTable,
        job: _DateJob,
        idx: NDArray[np.intp],
        ok: NDArray[np.bool_],
        state: F64,
        delta: F64,
        pidx: NDArray[np.integer],
        n_eff: int,
        step: int,
        many: bool,
    ) -> None:
        self.table, self.job, self.idx, self.ok = table, job, idx, ok
        self.state, self.delta, self.pidx = state, delta, pidx
        self.n_eff, self.step, self.many = n_eff, step, many
        self.n_query = min(len(idx), n_eff + job.extra + 1)
        self.search = StateSearch(state, job.exact_limit, probes=REDO_PROBES)
        self.local = np.full(ok.shape[0], -1, dtype=np.intp)
        self.local[idx] = np.arange(len(idx))
        self.scores = np.full(len(idx), np.nan)
        self._buffers = threading.local()  # each thread's (step, n_eff, D) gather buffer, reused by its chunks

    def _buffer(self, n: int) -> F64:
        """This thread's buffer for ``n`` patches' peer changes.

        One buffer per thread and date, not a fresh array per chunk: a gather into it took 4.7 ms against 12.6 ms
        for ``np.take`` allocating (1613 patches x 100 peers x 26 dims: no new pages to fault in), and the allocator
        keeps no freed chunks of it in the threads' arenas.
        """
        buf: F64 | None = getattr(self._buffers, "gather", None)
        if buf is None:
            buf = self._buffers.gather = np.empty((self.step, self.n_eff, self.delta.shape[1]))
        return buf[:n]

    def __call__(self, lo: int) -> None:
        """Score patches ``idx[lo : lo + step]``.

        Memory: ``(step, n_peers)`` neighbours and ``(step, n_peers, D)`` peer changes.
        """
        job, n_eff = self.job, self.n_eff
        sl = slice(lo, lo + self.step)
        peers, mask = self.table.neighbours(self.idx, self.ok, self.local, n_eff, sl)
        redo = np.nonzero(mask.sum(axis=1) < n_eff)[0]
        if redo.size:  # too many of the table's candidates unusable this date: search the scorable ones
            rows = np.arange(lo, min(lo + self.step, len(self.idx)))[redo]
            found = self.search.kneighbors(self.state[rows], self.n_query, indexed=self.many)
            peers[redo], mask[redo] = far_first(found, self.pidx, self.pidx[rows], job.exclusion, n_eff)
        gathered = np.take(self.delta, peers, axis=0, out=self._buffer(len(peers)), mode="clip")
        self.scores[sl] = _score_against_peers(
            self.delta[sl], gathered, mask, job.method, min(job.k_nearest, n_eff), job.n_neighbors
        )


def null_mask(valid: NDArray[np.bool_], k: int) -> NDArray[np.bool_]:
    """``(T, N)``: the reference observations of the ``"first"`` reference that get a leave-one-out null score.

    These are the patch's first ``k`` valid observations (as :func:`~changescope.change.reference.reference_mask`
    chooses them), for patches with at least two of them.
    """
    ref, _ = reference_mask(
        np.asarray(valid, dtype=bool), np.arange(valid.shape[0]).astype("datetime64[D]"), "first", k
    )
    first = ref[-1] if ref.shape[0] else np.zeros_like(valid)
    return np.asarray(first & (first.sum(axis=0) >= 2)[None, :], dtype=bool)


def _score_against_peers(
    delta: F64, R: F64, mask: NDArray[np.bool_], method: str, k_nearest: int, n_neighbors: int
) -> F64:
    """Score each patch's change ``delta (n, D)`` against its peers' changes ``R (n, n_peers, D)`` (overwritten)."""
    q = delta[:, None, :]
    if method == "distance":
        diff = np.subtract(R, q, out=R)  # R is the caller's fresh gather: reuse its memory
        d2 = np.where(mask, np.einsum("npd,npd->np", diff, diff), np.inf)
        near = np.sqrt(np.partition(d2, k_nearest - 1, axis=1)[:, :k_nearest])
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(near).all(axis=1), near.mean(axis=1), np.nan)
    return np.asarray(PatchLOF(n_neighbors=n_neighbors).fit(R, mask).score(q)[:, 0], dtype=np.float64)
