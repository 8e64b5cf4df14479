"""Clustering change vectors into change types, and the hierarchy of those types.

:class:`ChangeClusterer` follows the scikit-learn contract (``__init__`` stores parameters, ``fit`` returns
``self``, learned state ends in ``_``):

1. Change vectors are L2-normalised (a change *type* is a direction in embedding space; its size is the
   magnitude, ranked separately) and, above ``max_dims`` dimensions, projected by PCA to ``max_dims``.
2. HDBSCAN (default) finds clusters of any shape and leaves scattered vectors as noise (``-1``); k-means
   (``method="kmeans"``) gives exactly ``n_clusters`` clusters and no noise.
3. Clusters are renumbered by decreasing size (cluster 0 is the most common change type).
4. ``centroids_`` are the clusters' mean change vectors in the original space; ``hierarchy_`` is the average-linkage
   tree of those centroids under the cosine distance, the change types as a hierarchy (similar types merge first).

**At catalog scale** (a whole Sentinel-2 tile has hundreds of thousands of events), the model is fitted on a seeded
sample of :data:`MAX_FIT_SAMPLES` (20 000) events, the same sample for the PCA and the clustering, and every event
is then assigned: with HDBSCAN, the label of its nearest sampled event (squared Euclidean in the clustering space,
exact faiss search in chunks), so an event among noise is noise; with k-means, its nearest centroid. The sizes,
centroids and hierarchy are those of all events after assignment. A type needs ``min_cluster_size`` events in the
sample to be found: by default 0.2 % of the catalog (the catalog's own rule, 0.2 % but at most 200 events, would
resolve smaller types above 100 000 events). At or below the sample size nothing changes: every event is fitted.
Memory stays at the input plus ``max_dims`` floats per event (the vectors are normalised and projected a chunk at
a time). On 2 shared cores (``benchmarks/discover_scale.py``, 200 000 events) HDBSCAN's fit on the 20 000 sampled
events (32-d) took 11-19 s and the assignment of the 180 000 others 4-26 s, depending on the other jobs' load.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from changescope.discover.index import load_faiss, normalize_rows, omp_threads
from changescope.errors import EmptySeriesError, ParameterError
from changescope.types import ClusterMethod

__all__ = [
    "MAX_FIT_SAMPLES",
    "ChangeClusterer",
    "ClusterMethod",
    "centroid_hierarchy",
    "cluster_sums",
    "default_min_cluster_size",
]

CLUSTER_METHODS: tuple[str, ...] = ("hdbscan", "kmeans")

MAX_FIT_SAMPLES = 20_000
"""Events the clustering is fitted on (a seeded sample above it; every event is then assigned)."""

CHUNK = 65_536
"""Rows projected or assigned at a time (``max_dims`` floats each)."""

CHUNK_BYTES = 16 * 2**20
"""Largest block of full-width vectors normalised or summed at a time."""

I64 = NDArray[np.int64]
F32 = NDArray[np.float32]


def default_min_cluster_size(n: int) -> int:
    """HDBSCAN's smallest cluster for a catalog of ``n`` events: 0.2 % of the events, between 5 and 200."""
    return int(min(200, max(5, round(0.002 * n))))


def centroid_hierarchy(centroids: NDArray[np.floating[Any]], sizes: NDArray[np.integer[Any]]) -> dict[str, Any]:
    """Average-linkage (cosine) tree of cluster centroids, as plain JSON-ready data.

    Args:
        centroids: ``(K, D)`` centroids; cluster ``i`` is leaf ``i``.
        sizes: ``(K,)`` events per cluster.

    Returns:
        ``{"method": "average", "metric": "cosine", "merges": [...], "tree": {...}}``. Each merge (in order, the
        closest pair first) is ``{"id", "left", "right", "distance", "clusters", "size"}``: node ``id = K + i``
        joins nodes ``left`` and ``right`` at cosine ``distance``, covering leaf ``clusters`` with ``size`` events
        in total. ``tree`` nests the same nodes from the root: a leaf is ``{"id", "cluster", "size"}``, an inner
        node ``{"id", "distance", "size", "clusters", "children": [left, right]}``. ``tree`` is ``None`` with no
        cluster.
    """
    c = np.asarray(centroids, dtype=np.float64)
    sz = np.asarray(sizes, dtype=np.int64)
    k = c.shape[0]
    out: dict[str, Any] = {"method": "average", "metric": "cosine", "merges": [], "tree": None}
    if k == 0:
        return out
    leaves: dict[int, dict[str, Any]] = {i: {"id": i, "cluster": i, "size": int(sz[i])} for i in range(k)}
    if k == 1:
        out["tree"] = leaves[0]
        return out
    from scipy.cluster.hierarchy import linkage

    norms = np.linalg.norm(c, axis=1, keepdims=True)
    unit = np.where(norms > 0, c / np.where(norms > 0, norms, 1.0), 0.0)
    unit[(norms[:, 0] == 0), 0] = 1e-12  # a zero centroid would make the cosine undefined
    z = linkage(unit, method="average", metric="cosine")
    nodes: dict[int, dict[str, Any]] = dict(leaves)
    members: dict[int, list[int]] = {i: [i] for i in range(k)}
    for i, (a, b, dist, _count) in enumerate(z):
        left, right, node_id = int(a), int(b), k + i
        members[node_id] = sorted(members[left] + members[right])
        size = nodes[left]["size"] + nodes[right]["size"]
        merge = {
            "id": node_id,
            "left": left,
            "right": right,
            "distance": float(max(dist, 0.0)),
            "clusters": members[node_id],
            "size": size,
        }
        out["merges"].append(merge)
        nodes[node_id] = {**{key: merge[key] for key in ("id", "distance", "size", "clusters")}}
        nodes[node_id]["children"] = [nodes[left], nodes[right]]
    out["tree"] = nodes[2 * k - 2]
    return out


def _rows_per_chunk(dim: int) -> int:
    """Rows of ``dim`` float32 values in :data:`CHUNK_BYTES` (at most :data:`CHUNK`)."""
    return int(max(1, min(CHUNK, CHUNK_BYTES // max(1, 4 * dim))))


def cluster_sums(
    vectors: NDArray[np.floating[Any]], labels: NDArray[np.integer[Any]], n_clusters: int
) -> tuple[NDArray[np.float64], I64]:
    """Per-cluster sums (float64) and counts of the vectors, a chunk at a time (no copy of the vectors).

    Args:
        vectors: ``(E, D)`` vectors.
        labels: ``(E,)`` cluster labels in ``[-1, n_clusters)`` (``-1`` = noise).
        n_clusters: Number of clusters.

    Returns:
        ``(sums (n_clusters + 1, D), counts (n_clusters + 1,))``; row ``c + 1`` is cluster ``c``, row 0 the noise.
    """
    lab = np.asarray(labels, dtype=np.int64) + 1
    sums = np.zeros((n_clusters + 1, vectors.shape[1]), dtype=np.float64)
    step = _rows_per_chunk(vectors.shape[1])
    for start in range(0, lab.size, step):
        part = lab[start : start + step]
        order = np.argsort(part, kind="stable")
        groups, first = np.unique(part[order], return_index=True)
        rows = np.asarray(vectors[start : start + step])[order]
        if rows.size:
            sums[groups] += np.add.reduceat(rows, first, axis=0, dtype=np.float64)
    return sums, np.bincount(lab, minlength=n_clusters + 1).astype(np.int64)


class ChangeClusterer:
    """Cluster change vectors into change types (HDBSCAN or k-means) and build their hierarchy.

    Args:
        method: ``"hdbscan"`` (density clusters + noise ``-1``) or ``"kmeans"``.
        n_clusters: Clusters for k-means (capped at the number of events).
        min_cluster_size: HDBSCAN's smallest cluster, in events of the fitted sample; ``None`` =
            :func:`default_min_cluster_size` of the fitted events (the catalog, or the sample above
            ``max_fit_samples``: 40 events, 0.2 %, of a 20 000 sample).
        min_samples: HDBSCAN's core-distance neighbours; ``None`` = ``min(min_cluster_size, 10)`` (less noise and
            a faster fit than HDBSCAN's own default, ``min_cluster_size``).
        max_dims: PCA to this many dimensions before clustering when the vectors have more (``None`` = never).
        max_fit_samples: Above this many events, the PCA and the clustering are fitted on a seeded sample of this
            size and every event is assigned (module docstring); ``None`` = :data:`MAX_FIT_SAMPLES`.
        random_state: Seed of PCA, k-means and the sample.

    Attributes:
        labels_: ``(E,)`` cluster per event, ``-1`` = noise; clusters numbered by decreasing size.
        n_clusters_: Number of clusters found.
        sizes_: ``(K,)`` events per cluster.
        centroids_: ``(K, D)`` mean change vector per cluster, in the original space.
        hierarchy_: :func:`centroid_hierarchy` of the centroids.
        min_cluster_size_: The HDBSCAN minimum actually used (``None`` for k-means).
        sample_: Ascending positions of the fitted events, ``None`` when all were fitted.
    """

    def __init__(
        self,
        method: ClusterMethod = "hdbscan",
        *,
        n_clusters: int = 8,
        min_cluster_size: int | None = None,
        min_samples: int | None = None,
        max_dims: int | None = 32,
        max_fit_samples: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.method = method
        self.n_clusters = n_clusters
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.max_dims = max_dims
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state

    @property
    def fit_limit(self) -> int:
        """The sample size actually used (``max_fit_samples``, else :data:`MAX_FIT_SAMPLES`)."""
        return int(MAX_FIT_SAMPLES if self.max_fit_samples is None else self.max_fit_samples)

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (recorded in ``clusters.json``; ``max_fit_samples`` as used)."""
        return {
            "method": self.method,
            "n_clusters": self.n_clusters,
            "min_cluster_size": self.min_cluster_size,
            "min_samples": self.min_samples,
            "max_dims": self.max_dims,
            "max_fit_samples": self.fit_limit,
            "random_state": self.random_state,
        }

    def _validate(self, vectors: NDArray[np.floating[Any]]) -> F32:
        if self.method not in CLUSTER_METHODS:
            raise ParameterError(f"method={self.method!r} is not one of {', '.join(map(repr, CLUSTER_METHODS))}")
        if self.n_clusters < 1:
            raise ParameterError(f"n_clusters={self.n_clusters!r} must be >= 1")
        if self.min_cluster_size is not None and self.min_cluster_size < 2:
            raise ParameterError(f"min_cluster_size={self.min_cluster_size!r} must be >= 2 events (or None)")
        if self.min_samples is not None and self.min_samples < 1:
            raise ParameterError(f"min_samples={self.min_samples!r} must be >= 1 (or None)")
        if self.max_dims is not None and self.max_dims < 1:
            raise ParameterError(f"max_dims={self.max_dims!r} must be >= 1 (or None for no PCA)")
        if self.fit_limit < 2:
            raise ParameterError(f"max_fit_samples={self.max_fit_samples!r} must be >= 2")
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2:
            raise ParameterError(f"change vectors must be a 2-D (events, dim) array, got shape {x.shape!r}")
        if x.shape[0] == 0:
            raise EmptySeriesError(
                "the change catalog is empty: there are no change vectors to cluster "
                "(lower the event threshold or check that the change stage found events)"
            )
        step = _rows_per_chunk(x.shape[1])
        if not all(np.isfinite(x[a : a + step]).all() for a in range(0, x.shape[0], step)):
            raise ParameterError("change vectors contain NaN or inf; drop those events before clustering")
        return x

    def _embed(self, x: F32, sample: I64 | None) -> F32:
        """Unit rows, PCA-projected to ``max_dims`` (fitted on the sample); whole below the sample size."""
        n, dim = x.shape
        if self.max_dims is None or dim <= self.max_dims or n <= 2:
            return normalize_rows(x)
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(self.max_dims, n), random_state=self.random_state)
        if sample is None:
            unit = normalize_rows(x)
            return np.ascontiguousarray(pca.fit(unit).transform(unit), dtype=np.float32)
        pca.fit(normalize_rows(x[sample]))
        z = np.empty((n, pca.n_components_), dtype=np.float32)
        step = _rows_per_chunk(dim)
        for start in range(0, n, step):
            z[start : start + step] = pca.transform(normalize_rows(x[start : start + step]))
        return z

    def _hdbscan(self, z: F32, sample: I64 | None) -> I64:
        from sklearn.cluster import HDBSCAN

        n_fit = z.shape[0] if sample is None else sample.size
        mcs = self.min_cluster_size or default_min_cluster_size(n_fit)
        self.min_cluster_size_: int | None = mcs
        if n_fit < mcs:
            return np.full(z.shape[0], -1, dtype=np.int64)
        min_samples = self.min_samples or min(mcs, 10)
        model = HDBSCAN(min_cluster_size=mcs, min_samples=min_samples, copy=True)
        fit_labels = np.asarray(model.fit(z if sample is None else z[sample]).labels_, dtype=np.int64)
        if sample is None:
            return fit_labels
        return _assign_nearest(z, sample, fit_labels)

    def _kmeans(self, z: F32, sample: I64 | None) -> I64:
        from sklearn.cluster import KMeans

        self.min_cluster_size_ = None
        k = min(self.n_clusters, z.shape[0])
        model = KMeans(n_clusters=k, n_init=4, random_state=self.random_state)
        if sample is None:
            return np.asarray(model.fit(z).labels_, dtype=np.int64)
        model.fit(z[sample])
        labels = np.empty(z.shape[0], dtype=np.int64)
        for start in range(0, z.shape[0], CHUNK):
            labels[start : start + CHUNK] = model.predict(z[start : start + CHUNK])
        return labels

    def fit(self, vectors: NDArray[np.floating[Any]]) -> ChangeClusterer:
        """Cluster ``(E, D)`` change vectors (fitted on a seeded sample above ``max_fit_samples``).

        Raises:
            EmptySeriesError: The catalog has no events.
            ParameterError: A parameter is out of range, or the vectors are not a finite 2-D array.
        """
        x = self._validate(vectors)
        n = x.shape[0]
        sample = None
        if n > self.fit_limit:
            rng = np.random.default_rng(self.random_state)
            sample = np.sort(rng.choice(n, self.fit_limit, replace=False))
        self.sample_: I64 | None = sample
        z = self._embed(x, sample)
        raw = self._hdbscan(z, sample) if self.method == "hdbscan" else self._kmeans(z, sample)
        del z
        counts_all = np.bincount(raw[raw >= 0])
        found = np.nonzero(counts_all)[0]
        counts = counts_all[found]
        order = found[np.lexsort((found, -counts))]  # largest first, ties by original id
        remap = np.full(int(raw.max(initial=-1)) + 2, -1, dtype=np.int64)
        remap[order] = np.arange(order.size)
        self.labels_ = np.where(raw >= 0, remap[np.maximum(raw, 0)], -1).astype(np.int64)
        self.n_clusters_ = int(order.size)
        sums, sizes = cluster_sums(x, self.labels_, self.n_clusters_)
        self.sizes_ = sizes[1:]
        self.centroids_ = (sums[1:] / np.maximum(self.sizes_, 1)[:, None]).astype(np.float32)
        self.hierarchy_ = centroid_hierarchy(self.centroids_, self.sizes_)
        return self

    def fit_predict(self, vectors: NDArray[np.floating[Any]]) -> I64:
        """:meth:`fit` and return ``labels_``."""
        labels: I64 = self.fit(vectors).labels_
        return labels


def _assign_nearest(z: F32, sample: I64, fit_labels: I64) -> I64:
    """Labels of every event from an HDBSCAN fitted on ``z[sample]`` (exact faiss search, in chunks).

    A sampled event keeps its label; another takes the label of its nearest sampled event (squared Euclidean), so
    an event among noise is noise. A change type with too few events in the sample to be a cluster (under
    ``min_cluster_size`` of them) is not found: its events join their nearest sampled events' clusters or noise.
    (Declaring an event noise when it lies farther from its nearest sampled event than HDBSCAN's reach of that
    cluster was tried: it left rare types where they were and turned 0.3-0.5 % of the planted types' events into
    noise, which then outranked the rare types' events.)
    """
    faiss = load_faiss()
    labels = np.empty(z.shape[0], dtype=np.int64)
    labels[sample] = fit_labels
    rest = np.ones(z.shape[0], dtype=bool)
    rest[sample] = False
    todo = np.nonzero(rest)[0]
    index = faiss.IndexFlatL2(z.shape[1])
    with omp_threads(None):
        index.add(np.ascontiguousarray(z[sample]))
        for start in range(0, todo.size, CHUNK):
            part = todo[start : start + CHUNK]
            _, ids = index.search(np.ascontiguousarray(z[part]), 1)
            labels[part] = fit_labels[ids[:, 0]]
    return labels
