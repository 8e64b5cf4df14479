"""faiss building blocks for change-vector search: index parameters, construction, scoped threads, kNN.

Similarity is the **cosine** of change vectors: vectors are L2-normalised and searched by inner product
(``METRIC_INNER_PRODUCT``), so the returned scores are cosine similarities in ``[-1, 1]``.

Index kinds (:class:`IndexParams`):

- ``"flat"``: exact search (``IndexFlatIP``). Used by ``kind="auto"`` up to ``exact_threshold`` vectors.
- ``"ivf"``: inverted lists (``IndexIVFFlat``, inner product, spherical k-means coarse quantiser). The default
  approximate kind: deterministic for a seed, and it builds in under a minute per million 128-d vectors on 2 cores.
  ``nlist`` defaults to the power of two nearest ``2 * sqrt(N)`` (at least 39 training points per list) and
  ``nprobe`` to ``nlist // 16`` clipped to ``[96, 256]``. On 1M clustered 128-d vectors
  (``benchmarks/search_latency.py``, 2 shared cores) that is nlist 2048 / nprobe 128: build 40-50 s,
  single-query p50 1.9-2.7 ms (2.8-3.6 ms through ``ChangeIndex.query``), recall@20 0.995 against exact search.
- ``"hnsw"``: a navigable small-world graph (``IndexHNSWFlat``, inner product; ``M``, ``efConstruction``,
  ``efSearch``). Fast queries without training, but its build is several times slower than IVF's (about 100 s
  per 200k 128-d vectors on 2 cores) and multi-threaded insertion is not bit-for-bit reproducible.

faiss uses OpenMP threads process-wide; :func:`omp_threads` changes the count for a block and restores it, so
building uses every core and single queries run on one thread (no spin-up cost per query).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.types import IndexKind

__all__ = [
    "DEFAULT_EXACT_THRESHOLD",
    "KNN_PARAMS",
    "IndexKind",
    "IndexParams",
    "build_index",
    "knn_mean_distance",
    "load_faiss",
    "normalize_rows",
    "omp_threads",
    "search_index",
]


INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw")

DEFAULT_EXACT_THRESHOLD = 50_000
"""Catalogs up to this many events are searched exactly: a flat scan of 50k x 128-d vectors costs a few ms."""

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class IndexParams:
    """Parameters of a change-vector search index (a frozen description; persisted beside the index).

    Args:
        kind: ``"auto"`` (exact up to ``exact_threshold`` vectors, else ``"ivf"``), ``"flat"``, ``"ivf"`` or
            ``"hnsw"``.
        exact_threshold: Largest catalog that ``"auto"`` searches exactly.
        nlist: IVF lists; ``None`` = power of two nearest ``2 * sqrt(N)``, capped so every list has 39 training
            points.
        nprobe: IVF lists visited per query; ``None`` = ``nlist // 16`` clipped to ``[96, 256]`` (and to
            ``nlist``).
        train_per_list: IVF training sample size per list (capped at the catalog size).
        hnsw_m: HNSW neighbours per node.
        ef_construction: HNSW candidate list while building.
        ef_search: HNSW candidate list while searching (raised to ``k`` when a query asks for more).
        seed: Seed of the IVF training sample and k-means.
        threads: OpenMP threads while building (``None`` = all cores).
    """

    kind: IndexKind = "auto"
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD
    nlist: int | None = None
    nprobe: int | None = None
    train_per_list: int = 64
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ParameterError(f"index kind={self.kind!r} is not one of {', '.join(map(repr, INDEX_KINDS))}")
        for name in ("exact_threshold", "train_per_list", "hnsw_m", "ef_construction", "ef_search"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{name}={getattr(self, name)!r} must be a positive integer")
        for name in ("nlist", "nprobe", "threads"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ParameterError(f"{name}={value!r} must be a positive integer or None (automatic)")

    def resolve(self, n: int) -> IndexParams:
        """The concrete parameters for ``n`` vectors: ``kind`` decided, IVF ``nlist``/``nprobe`` filled in."""
        kind = self.kind
        if kind == "auto":
            kind = "flat" if n <= self.exact_threshold else "ivf"
        if kind != "ivf":
            return replace(self, kind=kind, nlist=None, nprobe=None)
        nlist = self.nlist or 2 ** round(math.log2(max(2.0 * math.sqrt(max(n, 1)), 1.0)))
        nlist = int(max(1, min(nlist, 65_536, n // 39 if n >= 39 else 1)))
        nprobe = int(min(self.nprobe or min(256, max(96, nlist // 16)), nlist))
        return replace(self, kind=kind, nlist=nlist, nprobe=nprobe)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexParams:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        fields = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in fields})


KNN_PARAMS = IndexParams(exact_threshold=20_000, nprobe=16)
"""Index parameters of :func:`knn_mean_distance` (the rarity density term): approximate sooner and cheaper."""


def normalize_rows(vectors: NDArray[np.floating[Any]]) -> F32:
    """C-contiguous float32 copy with unit-norm rows (all-zero rows stay zero)."""
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ParameterError(f"change vectors must be a 2-D (events, dim) array, got shape {x.shape!r}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


@contextmanager
def omp_threads(n: int | None) -> Iterator[None]:
    """Set faiss's OpenMP thread count inside the block (``None`` = all cores) and restore it afterwards."""
    faiss = load_faiss()
    before = int(faiss.omp_get_max_threads())
    faiss.omp_set_num_threads(int(n) if n else _usable_cores())
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def load_faiss() -> Any:
    """The faiss module, imported on first use (it is slow to import and its stubs are incomplete)."""
    import faiss

    return faiss


def build_index(unit: F32, params: IndexParams) -> Any:
    """Build a faiss inner-product index over unit-norm vectors.

    Args:
        unit: ``(N, D)`` L2-normalised float32 vectors (:func:`normalize_rows`); row ``i`` gets id ``i``.
        params: Index parameters; resolved for ``N`` first.

    Returns:
        The faiss index (``IndexFlatIP``, ``IndexIVFFlat`` or ``IndexHNSWFlat``).
    """
    faiss = load_faiss()
    n, dim = unit.shape
    p = params.resolve(n)
    with omp_threads(p.threads):
        if p.kind == "flat":
            index: Any = faiss.IndexFlatIP(dim)
        elif p.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = p.ef_construction
            index.hnsw.efSearch = p.ef_search
        else:
            nlist = int(p.nlist or 1)
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = p.seed
            index.cp.niter = 20
            index.cp.spherical = True
            n_train = min(n, nlist * p.train_per_list)
            rng = np.random.default_rng(p.seed)
            sample = unit if n_train >= n else unit[np.sort(rng.choice(n, n_train, replace=False))]
            index.train(np.ascontiguousarray(sample))
            index.nprobe = int(p.nprobe or 1)
        if n:
            index.add(unit)
    return index


def search_index(index: Any, queries: F32, k: int, params: IndexParams, *, widen: int = 1) -> tuple[F32, I64]:
    """Search ``k`` neighbours of unit-norm ``queries``.

    Args:
        index: A faiss index from :func:`build_index`.
        queries: ``(Q, D)`` unit-norm float32 queries.
        k: Neighbours per query (capped at the index size).
        params: The resolved parameters the index was built with.
        widen: Multiplier of IVF ``nprobe`` / HNSW ``efSearch`` (filtered searches widen when short of results).

    Returns:
        ``(similarities, ids)``, each ``(Q, k)``; missing results have id ``-1``.
    """
    faiss = load_faiss()
    k = max(1, min(int(k), int(index.ntotal)))
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if params.kind == "ivf" and params.nlist is not None:
        nprobe = min(params.nlist, (params.nprobe or 1) * widen)
        sims, ids = index.search(q, k, params=faiss.SearchParametersIVF(nprobe=nprobe))
    elif params.kind == "hnsw":
        ef = max(params.ef_search * widen, k)
        sims, ids = index.search(q, k, params=faiss.SearchParametersHNSW(efSearch=ef))
    else:
        sims, ids = index.search(q, k)
    return np.asarray(sims, dtype=np.float32), np.asarray(ids, dtype=np.int64)


def knn_mean_distance(
    vectors: NDArray[np.floating[Any]], k: int = 10, *, params: IndexParams | None = None, batch: int = 4096
) -> NDArray[np.float64]:
    """Mean cosine distance of every vector to its ``k`` nearest *other* vectors (a local sparsity measure).

    Exact up to ``params.exact_threshold`` vectors, approximate (IVF) above, so it scales to a million events. The
    default :data:`KNN_PARAMS` is cheaper than the search default (exact only to 20 000 vectors, ``nprobe`` 16): a
    density estimate needs neighbours that are close, not exactly the closest.

    Args:
        vectors: ``(N, D)`` change vectors (normalised here).
        k: Neighbours (capped at ``N - 1``).
        params: Index parameters (default :data:`KNN_PARAMS`).
        batch: Queries per faiss call (bounds memory).

    Returns:
        ``(N,)`` mean distances ``1 - cosine`` in ``[0, 2]``; zeros when ``N < 2``.
    """
    unit = normalize_rows(vectors)
    n = unit.shape[0]
    kk = min(int(k), n - 1)
    if kk < 1:
        return np.zeros(n, dtype=np.float64)
    p = (params or KNN_PARAMS).resolve(n)
    index = build_index(unit, p)
    out = np.empty(n, dtype=np.float64)
    with omp_threads(p.threads):
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            sims, ids = search_index(index, unit[start:stop], kk + 1, p)
            own = ids == np.arange(start, stop)[:, None]
            keep = (ids >= 0) & ~own
            # drop self (or the worst hit when self was not returned), keep the k best others
            order = np.argsort(~keep, axis=1, kind="stable")[:, :kk]
            s = np.take_along_axis(sims, order, axis=1).astype(np.float64)
            ok = np.take_along_axis(keep, order, axis=1)
            s = np.where(ok, s, np.nan)
            mean = np.nanmean(np.where(np.isnan(s).all(axis=1, keepdims=True), -1.0, s), axis=1)
            out[start:stop] = 1.0 - mean
    return out
