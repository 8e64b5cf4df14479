"""Per-patch novelty scorers, vectorised across patches (scikit-learn style: ``fit`` on references, ``score``).

Each patch ``n`` has its own small reference set ``R[n]`` (its earlier observations). Both scorers fit all
patches at once from arrays ``R (N, K, D)`` with a mask ``(N, K)`` of which reference slots are filled, and score
queries ``Q (N, M, D)``; there is no Python loop over patches.

- :class:`PatchDistance`: distance of a query to the centroid of its patch's references (cosine or euclidean).
- :class:`PatchLOF`: the Local Outlier Factor of a query among its patch's references, exactly as
  ``sklearn.neighbors.LocalOutlierFactor(novelty=True)`` fitted per patch computes ``-score_samples`` (tested
  against it).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.types import Metric

__all__ = ["Metric", "PatchDistance", "PatchLOF"]

F64 = NDArray[np.float64]


def _check(R: NDArray[np.floating], mask: NDArray[np.bool_]) -> tuple[F64, NDArray[np.bool_]]:
    R = np.asarray(R, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if R.ndim != 3:
        raise ParameterError(f"references must be (patches, k, dim), got shape {R.shape!r}")
    if mask.shape != R.shape[:2]:
        raise ParameterError(f"reference mask has shape {mask.shape!r}, expected {R.shape[:2]!r}")
    mask = mask & np.isfinite(R).all(axis=2)
    return np.where(mask[..., None], R, 0.0), mask


def _unit(x: F64) -> F64:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(norm, 1e-12), dtype=np.float64)


def _pairwise(a: F64, b: F64) -> F64:
    """Euclidean distances between rows of ``a (N, P, D)`` and ``b (N, Q, D)`` per patch -> ``(N, P, Q)``."""
    sq = (a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :] - 2.0 * np.einsum("npd,nqd->npq", a, b)
    return np.asarray(np.sqrt(np.maximum(sq, 0.0)), dtype=np.float64)


class PatchDistance:
    """Distance of each observation to the centroid of its patch's reference observations.

    Args:
        metric: ``"cosine"`` (1 - cosine similarity, insensitive to a global gain of the embedding) or
            ``"euclidean"``.
    """

    def __init__(self, metric: Metric = "cosine") -> None:
        self.metric = metric

    def fit(self, R: NDArray[np.floating], mask: NDArray[np.bool_]) -> PatchDistance:
        """Fit the per-patch centroids.

        Args:
            R: ``(N, K, D)`` reference observations.
            mask: ``(N, K)`` which slots hold a valid reference.

        Returns:
            ``self``, with ``centroid_ (N, D)`` (NaN for patches without reference) and ``n_reference_ (N,)``.
        """
        if self.metric not in ("cosine", "euclidean"):
            raise ParameterError(f"metric={self.metric!r} must be 'cosine' or 'euclidean'")
        R64, m = _check(R, mask)
        if self.metric == "cosine":
            R64 = np.where(m[..., None], _unit(R64), 0.0)
        count = m.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.centroid_ = np.where(count[:, None] > 0, R64.sum(axis=1) / count[:, None], np.nan)
        self.n_reference_ = count
        return self

    def score(self, Q: NDArray[np.floating]) -> F64:
        """Score queries ``(N, M, D)`` -> ``(N, M)``; NaN where a patch has no reference or the query is NaN."""
        Q64 = np.asarray(Q, dtype=np.float64)
        if self.metric == "cosine":
            cos = np.einsum("nmd,nd->nm", _unit(Q64), _unit(self.centroid_))
            return np.asarray(1.0 - cos, dtype=np.float64)
        return np.asarray(np.linalg.norm(Q64 - self.centroid_[:, None, :], axis=-1), dtype=np.float64)


class PatchLOF:
    """Novelty Local Outlier Factor of each query among its own patch's references.

    Matches ``LocalOutlierFactor(n_neighbors, novelty=True).fit(R[n]).score_samples(Q[n])`` negated, per patch,
    with ``k_n = max(1, min(n_neighbors, n_ref - 1))``. Patches with fewer than 2 references score NaN.

    Args:
        n_neighbors: Neighbours ``k`` of the LOF (scikit-learn's default is 20; per patch it is capped by the
            number of references).
        metric: ``"euclidean"``, or ``"cosine"`` (euclidean on L2-normalised vectors).
    """

    def __init__(self, n_neighbors: int = 20, metric: Metric = "euclidean") -> None:
        self.n_neighbors = n_neighbors
        self.metric = metric

    def fit(self, R: NDArray[np.floating], mask: NDArray[np.bool_]) -> PatchLOF:
        """Fit every patch's reference set.

        Args:
            R: ``(N, K, D)`` reference observations.
            mask: ``(N, K)`` which slots hold a valid reference.

        Returns:
            ``self``, with ``k_ (N,)``, ``k_distance_ (N, K)`` and ``lrd_ (N, K)``.
        """
        if self.n_neighbors < 1:
            raise ParameterError(f"n_neighbors={self.n_neighbors!r} must be >= 1")
        if self.metric not in ("cosine", "euclidean"):
            raise ParameterError(f"metric={self.metric!r} must be 'cosine' or 'euclidean'")
        R64, m = _check(R, mask)
        if self.metric == "cosine":
            R64 = np.where(m[..., None], _unit(R64), 0.0)
        n, kk = m.shape
        n_ref = m.sum(axis=1)
        k = np.clip(np.minimum(self.n_neighbors, n_ref - 1), 1, None)
        dist = _pairwise(R64, R64)
        pair_ok = m[:, :, None] & m[:, None, :] & ~np.eye(kk, dtype=bool)[None]
        dist = np.where(pair_ok, dist, np.inf)
        order = np.argsort(dist, axis=2, kind="stable")
        sorted_d = np.take_along_axis(dist, order, axis=2)
        kcol = np.minimum(k - 1, kk - 1)[:, None, None]
        k_distance = np.take_along_axis(sorted_d, np.broadcast_to(kcol, (n, kk, 1)), axis=2)[..., 0]
        lrd = self._lrd(sorted_d, order, k_distance, k)
        self.R_, self.mask_, self.k_ = R64, m, k
        self.k_distance_ = np.where(m, k_distance, np.inf)
        self.lrd_ = np.where(m, lrd, np.nan)
        self.fitted_ = n_ref >= 2
        return self

    @staticmethod
    def _lrd(sorted_d: F64, order: NDArray[np.intp], k_distance: F64, k: NDArray[np.integer]) -> F64:
        """Local reachability density from sorted neighbour distances ``(N, P, K)`` and their indices."""
        n, p, kk = sorted_d.shape
        take = np.arange(kk)[None, None, :] < k[:, None, None]
        neigh_kdist = np.take_along_axis(np.broadcast_to(k_distance[:, None, :], (n, p, kk)), order, axis=2)
        reach = np.where(take, np.maximum(sorted_d, neigh_kdist), 0.0)
        with np.errstate(invalid="ignore"):
            mean_reach = reach.sum(axis=2) / k[:, None]
        return np.asarray(1.0 / (mean_reach + 1e-10), dtype=np.float64)

    def score(self, Q: NDArray[np.floating]) -> F64:
        """LOF of queries ``(N, M, D)`` -> ``(N, M)`` (about 1 = inlier, larger = more outlying)."""
        Q64 = np.asarray(Q, dtype=np.float64)
        bad_q = np.asarray(~np.isfinite(Q64).all(axis=2), dtype=bool)
        Q64 = np.where(bad_q[..., None], 0.0, Q64)
        if self.metric == "cosine":
            Q64 = _unit(Q64)
        n, m = Q64.shape[:2]
        kk = self.R_.shape[1]
        dist = np.where(self.mask_[:, None, :], _pairwise(Q64, self.R_), np.inf)
        order = np.argsort(dist, axis=2, kind="stable")
        sorted_d = np.take_along_axis(dist, order, axis=2)
        lrd_q = self._lrd(sorted_d, order, np.where(self.mask_, self.k_distance_, 0.0), self.k_)
        take = np.arange(kk)[None, None, :] < self.k_[:, None, None]
        neigh_lrd = np.take_along_axis(np.broadcast_to(self.lrd_[:, None, :], (n, m, kk)), order, axis=2)
        mean_lrd = np.where(take, neigh_lrd, 0.0).sum(axis=2) / self.k_[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            lof = mean_lrd / lrd_q
        return np.asarray(np.where(self.fitted_[:, None] & ~bad_q, lof, np.nan), dtype=np.float64)
