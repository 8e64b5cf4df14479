"""Clustering change vectors into change types, and the hierarchy of those types.

:class:`ChangeClusterer` follows the scikit-learn contract (``__init__`` stores parameters, ``fit`` returns
``self``, learned state ends in ``_``):

1. Change vectors are L2-normalised (a change *type* is a direction in embedding space; its size is the
   magnitude, ranked separately) and, above ``max_dims`` dimensions, projected by PCA to ``max_dims``.
2. HDBSCAN (default) finds clusters of any shape and leaves scattered vectors as noise (``-1``); k-means
   (``method="kmeans"``) gives exactly ``n_clusters`` clusters and no noise. Above ``max_fit_samples`` vectors,
   HDBSCAN is fitted on a seeded subsample and every other vector takes the label of its nearest fitted neighbour.
3. Clusters are renumbered by decreasing size (cluster 0 is the most common change type).
4. ``centroids_`` are the clusters' mean change vectors in the original space; ``hierarchy_`` is the average-linkage
   tree of those centroids under the cosine distance, the change types as a hierarchy (similar types merge first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from changescope.discover.index import IndexParams, build_index, normalize_rows, search_index
from changescope.errors import EmptySeriesError, ParameterError
from changescope.types import ClusterMethod

__all__ = ["ChangeClusterer", "ClusterMethod", "centroid_hierarchy", "default_min_cluster_size"]

CLUSTER_METHODS: tuple[str, ...] = ("hdbscan", "kmeans")


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


class ChangeClusterer:
    """Cluster change vectors into change types (HDBSCAN or k-means) and build their hierarchy.

    Args:
        method: ``"hdbscan"`` (density clusters + noise ``-1``) or ``"kmeans"``.
        n_clusters: Clusters for k-means (capped at the number of events).
        min_cluster_size: HDBSCAN's smallest cluster; ``None`` = :func:`default_min_cluster_size` of the catalog.
        min_samples: HDBSCAN's core-distance neighbours; ``None`` = ``min(min_cluster_size, 10)`` (less noise and
            a faster fit than HDBSCAN's own default, ``min_cluster_size``).
        max_dims: PCA to this many dimensions before clustering when the vectors have more (``None`` = never).
        max_fit_samples: HDBSCAN fits on a seeded subsample of this size above it; the rest take the label of
            their nearest fitted neighbour.
        random_state: Seed of PCA, k-means and the subsample.

    Attributes:
        labels_: ``(E,)`` cluster per event, ``-1`` = noise; clusters numbered by decreasing size.
        n_clusters_: Number of clusters found.
        sizes_: ``(K,)`` events per cluster.
        centroids_: ``(K, D)`` mean change vector per cluster, in the original space.
        hierarchy_: :func:`centroid_hierarchy` of the centroids.
        min_cluster_size_: The HDBSCAN minimum actually used (``None`` for k-means).
    """

    def __init__(
        self,
        method: ClusterMethod = "hdbscan",
        *,
        n_clusters: int = 8,
        min_cluster_size: int | None = None,
        min_samples: int | None = None,
        max_dims: int | None = 32,
        max_fit_samples: int = 20_000,
        random_state: int = 0,
    ) -> None:
        self.method = method
        self.n_clusters = n_clusters
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.max_dims = max_dims
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (recorded in ``clusters.json``)."""
        return {
            "method": self.method,
            "n_clusters": self.n_clusters,
            "min_cluster_size": self.min_cluster_size,
            "min_samples": self.min_samples,
            "max_dims": self.max_dims,
            "max_fit_samples": self.max_fit_samples,
            "random_state": self.random_state,
        }

    def _validate(self, vectors: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
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
        if self.max_fit_samples < 2:
            raise ParameterError(f"max_fit_samples={self.max_fit_samples!r} must be >= 2")
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2:
            raise ParameterError(f"change vectors must be a 2-D (events, dim) array, got shape {x.shape!r}")
        if x.shape[0] == 0:
            raise EmptySeriesError(
                "the change catalog is empty: there are no change vectors to cluster "
                "(lower the event threshold or check that the change stage found events)"
            )
        if not np.isfinite(x).all():
            raise ParameterError("change vectors contain NaN or inf; drop those events before clustering")
        return x

    def _reduce(self, unit: NDArray[np.float32]) -> NDArray[np.float32]:
        n, dim = unit.shape
        if self.max_dims is None or dim <= self.max_dims or n <= 2:
            return unit
        from sklearn.decomposition import PCA

        n_comp = min(self.max_dims, n)
        fit_rows = unit
        if n > self.max_fit_samples:
            rng = np.random.default_rng(self.random_state)
            fit_rows = unit[np.sort(rng.choice(n, self.max_fit_samples, replace=False))]
        pca = PCA(n_components=n_comp, random_state=self.random_state).fit(fit_rows)
        return np.ascontiguousarray(pca.transform(unit), dtype=np.float32)

    def _hdbscan(self, z: NDArray[np.float32]) -> NDArray[np.int64]:
        from sklearn.cluster import HDBSCAN

        n = z.shape[0]
        mcs = self.min_cluster_size or default_min_cluster_size(n)
        self.min_cluster_size_: int | None = mcs
        if n < mcs:
            return np.full(n, -1, dtype=np.int64)
        fit_idx = np.arange(n)
        if n > self.max_fit_samples:
            rng = np.random.default_rng(self.random_state)
            fit_idx = np.sort(rng.choice(n, self.max_fit_samples, replace=False))
        min_samples = self.min_samples or min(mcs, 10)
        model = HDBSCAN(min_cluster_size=mcs, min_samples=min_samples, copy=True)
        fit_labels = np.asarray(model.fit(z[fit_idx]).labels_, dtype=np.int64)
        if fit_idx.size == n:
            return fit_labels
        # label the rest by their nearest fitted neighbour
        zf = np.ascontiguousarray(z[fit_idx])
        params = IndexParams(kind="flat", seed=self.random_state)
        index = build_index(zf, params)
        labels = np.empty(n, dtype=np.int64)
        labels[fit_idx] = fit_labels
        rest = np.setdiff1d(np.arange(n), fit_idx)
        for start in range(0, rest.size, 8192):
            chunk = rest[start : start + 8192]
            _, ids = search_index(index, np.ascontiguousarray(z[chunk]), 1, params.resolve(fit_idx.size))
            labels[chunk] = fit_labels[ids[:, 0]]
        return labels

    def _kmeans(self, z: NDArray[np.float32]) -> NDArray[np.int64]:
        from sklearn.cluster import KMeans

        self.min_cluster_size_ = None
        k = min(self.n_clusters, z.shape[0])
        model = KMeans(n_clusters=k, n_init=4, random_state=self.random_state)
        return np.asarray(model.fit(z).labels_, dtype=np.int64)

    def fit(self, vectors: NDArray[np.floating[Any]]) -> ChangeClusterer:
        """Cluster ``(E, D)`` change vectors.

        Raises:
            EmptySeriesError: The catalog has no events.
            ParameterError: A parameter is out of range, or the vectors are not a finite 2-D array.
        """
        x = self._validate(vectors)
        z = self._reduce(normalize_rows(x))
        raw = self._hdbscan(z) if self.method == "hdbscan" else self._kmeans(z)
        found = np.unique(raw[raw >= 0])
        counts = np.array([(raw == c).sum() for c in found], dtype=np.int64)
        order = found[np.lexsort((found, -counts))]  # largest first, ties by original id
        remap = np.full(int(raw.max(initial=-1)) + 2, -1, dtype=np.int64)
        remap[order] = np.arange(order.size)
        self.labels_ = np.where(raw >= 0, remap[np.maximum(raw, 0)], -1).astype(np.int64)
        self.n_clusters_ = int(order.size)
        self.sizes_ = np.bincount(self.labels_[self.labels_ >= 0], minlength=self.n_clusters_).astype(np.int64)
        self.centroids_ = np.zeros((self.n_clusters_, x.shape[1]), dtype=np.float32)
        for c in range(self.n_clusters_):
            self.centroids_[c] = x[self.labels_ == c].mean(axis=0)
        self.hierarchy_ = centroid_hierarchy(self.centroids_, self.sizes_)
        return self

    def fit_predict(self, vectors: NDArray[np.floating[Any]]) -> NDArray[np.int64]:
        """:meth:`fit` and return ``labels_``."""
        labels: NDArray[np.int64] = self.fit(vectors).labels_
        return labels
