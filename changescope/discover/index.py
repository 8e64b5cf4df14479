"""faiss building blocks for change-vector search: index parameters, construction, scoped threads, queries.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from changescope.cores import usable_cores
from changescope.errors import ParameterError
from changescope.types import IndexKind

__all__ = [
    "DEFAULT_EXACT_THRESHOLD",
    "KNN_PARAMS",
    "IndexKind",
    "IndexParams",
    "build_index",
    "load_faiss",
    "new_index",
    "normalize_rows",
    "omp_threads",
    "search_index",
    "training_rows",
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
"""Index parameters of :func:`~changescope.discover.density.knn_mean_distance` (the rarity density term):
approximate sooner and cheaper."""


def normalize_rows(vectors: NDArray[np.floating[Any]]) -> F32:
    """C-contiguous float32 copy with unit-norm rows (all-zero rows stay zero)."""
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ParameterError(f"change vectors must be a 2-D (events, dim) array, got shape {x.shape!r}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


@contextmanager
def omp_threads(n: int | None) -> Iterator[None]:
    """Set faiss's OpenMP thread count inside the block (``None`` = all cores) and restore it afterwards."""
    faiss = load_faiss()
    before = int(faiss.omp_get_max_threads())
    faiss.omp_set_num_threads(int(n) if n else usable_cores())
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def load_faiss() -> Any:
    """The faiss module, imported on first use (it is slow to import and its stubs are incomplete)."""
    import faiss

    return faiss


def training_rows(n: int, params: IndexParams) -> I64 | None:
    """Rows an IVF index over ``n`` vectors is trained on (seeded, ascending); ``None`` = all of them."""
    p = params.resolve(n)
    n_train = min(n, int(p.nlist or 1) * p.train_per_list)
    if n_train >= n:
        return None
    rng = np.random.default_rng(p.seed)
    return np.sort(rng.choice(n, n_train, replace=False))


def new_index(dim: int, params: IndexParams, *, metric: Literal["ip", "l2"] = "ip") -> Any:
    """An empty faiss index of the resolved ``params`` (an IVF one still to be trained).

    Args:
        dim: Vector dimension.
        params: Resolved index parameters (:meth:`IndexParams.resolve`).
        metric: ``"ip"`` (inner product; cosine on unit vectors) or ``"l2"`` (squared Euclidean distance).
    """
    faiss = load_faiss()
    m = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    if params.kind == "flat":
        return faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    if params.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, m)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        return index
    quantizer = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, int(params.nlist or 1), m)
    index.cp.seed = params.seed
    index.cp.niter = 20
    index.cp.spherical = metric == "ip"
    index.nprobe = int(params.nprobe or 1)
    return index


def build_index(vectors: NDArray[np.floating[Any]], params: IndexParams, *, batch: int = 65_536) -> Any:
    """Build a faiss inner-product index over the unit rows of ``vectors``, normalised ``batch`` rows at a time.

    The index holds the only full copy of the unit vectors (a catalog of 200 000 768-d events is 0.6 GB): an IVF
    index is trained on its seeded training rows (:func:`training_rows`) and filled a chunk at a time, a flat one
    filled a chunk at a time; an HNSW graph is built in one call (its layout depends on the insertion batches).
    Rows that are already unit-norm change by a rounding at most.

    Args:
        vectors: ``(N, D)`` vectors; row ``i`` gets id ``i``.
        params: Index parameters; resolved for ``N`` first.
        batch: Rows normalised and added at a time.

    Returns:
        The faiss index (``IndexFlatIP``, ``IndexIVFFlat`` or ``IndexHNSWFlat``).
    """
    n, dim = vectors.shape
    p = params.resolve(n)
    with omp_threads(p.threads):
        index = new_index(dim, p)
        if p.kind == "ivf":
            rows = training_rows(n, p)
            index.train(normalize_rows(vectors if rows is None else vectors[rows]))
        if p.kind == "hnsw":
            if n:
                index.add(normalize_rows(vectors))
            return index
        for start in range(0, n, max(1, int(batch))):
            index.add(normalize_rows(vectors[start : start + batch]))
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
