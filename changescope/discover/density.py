"""The density term of rarity at catalog scale: each event's mean cosine distance to its ``k`` nearest other events.

:func:`knn_mean_distance` never forms an events x events matrix and never copies the vectors whole: it normalises
them a chunk at a time as it needs them.

- Up to ``params.exact_threshold`` events (20 000 in :data:`~changescope.discover.index.KNN_PARAMS`): exact, a flat
  faiss index (``IndexFlatIP``) filled and queried ``batch`` events at a time; ``O(N^2 D)``, bounded by the
  threshold.
- Above it, an IVF index (``nlist`` about ``2 sqrt(N)`` cells from spherical k-means on a seeded sample, ``nprobe``
  16). Up to :data:`CELL_MIN_DIMS` (256) dimensions, faiss's own IVF search, ``batch`` queries at a time; the index
  holds the only copy of the (unit) vectors.
- Above it and above 256 dimensions (the 768-d from-to descriptors of a 384-d encoder): the inverted lists are
  searched cell by cell: the events of a cell are compared exactly, by one matrix product, with every event of the
  ``nprobe`` cells nearest to the cell's centroid, and keep their ``k`` best. This is what an IVF search does (with
  the probed cells chosen per cell rather than per event), but the product reads each candidate once per cell
  instead of once per query, and no copy of the vectors is stored (only the centroids). Memory beyond the input:
  the centroids, two numbers per event, and per cell the probed events' vectors and a block of similarities (at most
  :data:`SIM_FLOATS` floats).

Measured on ``benchmarks/discover_scale.py``'s events (2 shared cores), against exact search: at 768 dimensions the
cell-by-cell search ranks the events' mean distances with a Spearman correlation of 0.9994 on 30 000 events (faiss's
IVF search: 0.9993) in 16 s instead of 34 s, and took 220 s for 200 000 events where faiss's IVF search took 816 s
(with clustered events the lists are uneven, the largest 9x the mean, and every query reads its candidates one
768-float vector at a time). At 96 dimensions it was slower (8.6 s against 4.1 s on 40 000 events) and further from
exact (0.986 against 0.994), at 256 dimensions even (11.0 s against 10.4 s, 0.992 against 0.995). A PCA projection
to 64 dimensions with exact re-ranking of the candidates (60 s for 200 000 events) was rejected: its errors made
the planted rare type look dense (its density AUC fell from 0.52, exact, to 0.22).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from changescope.discover.index import (
    KNN_PARAMS,
    IndexParams,
    new_index,
    normalize_rows,
    omp_threads,
    search_index,
    training_rows,
)
from changescope.errors import ParameterError

__all__ = ["CELL_MIN_DIMS", "SIM_FLOATS", "knn_mean_distance"]

CELL_MIN_DIMS = 256
"""Above the exact threshold, vectors of more dimensions than this are searched cell by cell, the others by faiss's
own IVF search (faster and closer to exact at low dimension; the two tie at 256)."""

SIM_FLOATS = 4 * 2**20
"""Largest block of similarities (float32) computed at a time by the cell-by-cell search (16 MiB)."""

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def _mean_distance(sims: NDArray[np.floating[Any]], ids: I64, query_ids: I64, k: int) -> F64:
    """``1 - mean`` of the ``k`` best similarities per row that are neither missing (``-1``) nor the row's own id."""
    own = ids == query_ids[:, None]
    keep = (ids >= 0) & ~own
    # drop self (or the worst hit when self was not returned), keep the k best others
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    s = np.take_along_axis(sims, order, axis=1).astype(np.float64)
    ok = np.take_along_axis(keep, order, axis=1)
    s = np.where(ok, s, np.nan)
    mean = np.nanmean(np.where(np.isnan(s).all(axis=1, keepdims=True), -1.0, s), axis=1)
    out: F64 = 1.0 - mean
    return out


def _chunks(vectors: NDArray[np.floating[Any]], which: I64 | None, step: int) -> F32:
    """Unit rows of the vectors at ``which`` (all when ``None``), normalised ``step`` rows at a time."""
    n = vectors.shape[0] if which is None else which.size
    out = np.empty((n, vectors.shape[1]), dtype=np.float32)
    for a in range(0, n, step):
        out[a : a + step] = normalize_rows(vectors[a : a + step] if which is None else vectors[which[a : a + step]])
    return out


def _per_query(vectors: NDArray[np.floating[Any]], k: int, p: IndexParams, batch: int) -> F64:
    """One faiss index (flat, IVF or HNSW), trained, filled and queried ``batch`` events at a time."""
    n, dim = vectors.shape
    index = new_index(dim, p)
    if p.kind == "ivf":
        index.train(_chunks(vectors, training_rows(n, p), batch))
    for start in range(0, n, batch):
        index.add(normalize_rows(vectors[start : start + batch]))
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        sims, ids = search_index(index, normalize_rows(vectors[start:stop]), k + 1, p)
        out[start:stop] = _mean_distance(sims, ids, np.arange(start, stop), k)
    return out


def _by_cell(vectors: NDArray[np.floating[Any]], k: int, p: IndexParams, batch: int) -> F64:
    """IVF lists searched cell by cell (module docstring)."""
    n, dim = vectors.shape
    index = new_index(dim, p)
    index.train(_chunks(vectors, training_rows(n, p), batch))
    quantizer = index.quantizer
    nlist = int(index.nlist)
    inv = np.empty(n, dtype=np.float32)
    cell = np.empty(n, dtype=np.int64)
    for start in range(0, n, batch):
        chunk = np.asarray(vectors[start : start + batch], dtype=np.float32)
        norms = np.linalg.norm(chunk, axis=1)
        inv[start : start + batch] = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
        cell[start : start + batch] = quantizer.search(chunk * inv[start : start + batch, None], 1)[1][:, 0]
    centroids = quantizer.reconstruct_n(0, nlist)
    probes = quantizer.search(np.ascontiguousarray(centroids, dtype=np.float32), min(int(p.nprobe or 1), nlist))[1]
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(nlist + 1))
    slot = np.zeros(n, dtype=np.int64)  # position of an event among the current cell's candidates
    out = np.empty(n, dtype=np.float64)
    for c in range(nlist):
        queries = order[bounds[c] : bounds[c + 1]]
        if queries.size == 0:
            continue
        cand = np.concatenate([order[bounds[q] : bounds[q + 1]] for q in probes[c] if q >= 0])
        found = np.asarray(vectors[cand], dtype=np.float32) * inv[cand, None]
        slot[cand] = np.arange(cand.size)
        take = min(k, cand.size)
        step = max(1, SIM_FLOATS // max(1, cand.size))
        for a in range(0, queries.size, step):
            qq = queries[a : a + step]
            sims = (np.asarray(vectors[qq], dtype=np.float32) * inv[qq, None]) @ found.T
            pos = slot[qq]
            mine = cand[pos] == qq
            sims[np.nonzero(mine)[0], pos[mine]] = -np.inf  # never oneself
            best = np.argpartition(-sims, take - 1, axis=1)[:, :take] if take < cand.size else None
            top = sims if best is None else np.take_along_axis(sims, best, axis=1)
            ids = np.broadcast_to(cand, sims.shape) if best is None else cand[best]
            out[qq] = _mean_distance(top, np.where(np.isfinite(top), ids, -1), qq, k)
    return out


def knn_mean_distance(
    vectors: NDArray[np.floating[Any]], k: int = 10, *, params: IndexParams | None = None, batch: int = 4096
) -> F64:
    """Mean cosine distance of every vector to its ``k`` nearest *other* vectors (a local sparsity measure).

    Exact up to ``params.exact_threshold`` vectors, approximate (IVF lists searched cell by cell) above, in bounded
    memory (module docstring).

    Args:
        vectors: ``(N, D)`` change vectors (normalised here, a chunk at a time).
        k: Neighbours (capped at ``N - 1``).
        params: Index parameters (default :data:`~changescope.discover.index.KNN_PARAMS`: exact only up to 20 000
            vectors, ``nprobe`` 16; a density estimate needs neighbours that are close, not exactly the closest).
            ``kind="hnsw"`` queries an HNSW index event by event.
        batch: Events normalised, added or queried at a time.

    Returns:
        ``(N,)`` mean distances ``1 - cosine`` in ``[0, 2]``; zeros when ``N < 2``.

    Raises:
        ParameterError: ``vectors`` not 2-D, or ``batch`` below 1.
    """
    v = np.asarray(vectors)
    if v.ndim != 2:
        raise ParameterError(f"change vectors must be a 2-D (events, dim) array, got shape {v.shape!r}")
    if int(batch) < 1:
        raise ParameterError(f"batch={batch!r} must be >= 1")
    n = v.shape[0]
    kk = min(int(k), n - 1)
    if kk < 1:
        return np.zeros(n, dtype=np.float64)
    p = (params or KNN_PARAMS).resolve(n)
    with omp_threads(p.threads):
        if p.kind == "ivf" and v.shape[1] > CELL_MIN_DIMS:
            return _by_cell(v, kk, p, batch)
        return _per_query(v, kk, p, batch)
