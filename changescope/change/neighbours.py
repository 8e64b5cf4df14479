"""Nearest reference states: the searches and the shared neighbour table that peer scoring draws its peers from.

:func:`changescope.change.context.peer_scores` compares each patch with the patches whose reference state was
closest to its own. This module finds them: :class:`StateSearch` (exact below :data:`EXACT_PEERS` states, a faiss
inverted-file index above), :func:`far_first` (the spatial exclusion), and :class:`PeerTable`, the far-away
candidates of every patch, built once and shared by the dates with the same reference states.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn
from numpy.typing import NDArray
from sklearn.neighbors import NearestNeighbors

from changescope.change.source import DateSource
from changescope.heap import release

__all__ = ["EXACT_PEERS", "IVF_PROBES", "Fetch", "PeerTable", "StateSearch", "far_first"]

F64 = NDArray[np.float64]
QUERY_CHUNK = 8192
"""Queries searched at once (bounded memory: a chunk of distances and neighbour lists at a time)."""
_WORKING_MB = 64
"""scikit-learn's working memory (MiB) for the exact search's distance chunks (its default is 1 GiB)."""
IVF_CELLS_PER_SQRT = 2
"""Cells of the faiss inverted-file index used above ``exact_limit`` patches: this times the square root of N."""
IVF_TRAIN_PER_CELL = 40
"""States per cell its k-means is trained on (an evenly spaced sample)."""
IVF_PROBES = 32
"""Cells searched per query (the nearest ones): recall against cost. On a whole synthetic Sentinel-2 tile's 16 px
sub-patches (295 000 states, 26-d spectral, 1085 cells), recall@150 against the exact search was 0.978 / 0.997 /
0.9996 / 1.0 at 8 / 16 / 32 / 64 probes for 0.06 / 0.10 / 0.15 / 0.21 s per 1000 queries."""
EXACT_PEERS = 50_000
"""Patches up to which peers come from an exact search (scikit-learn, float64); above, from a faiss IVF index."""
_KNN = "brute"
"""Exact neighbour search by (chunked) pairwise distances: embeddings have too many dimensions for trees to prune
(on 36864 states of 15 dimensions, 5x faster than a k-d tree, with the same neighbours)."""


class StateSearch:
    """Nearest neighbours among a set of states: exact (brute force) up to ``exact_limit`` states, else faiss IVF.

    The index is built on first use, so a date whose peers all come from the shared table builds none.
    """

    def __init__(self, state: F64, exact_limit: int, *, probes: int = IVF_PROBES) -> None:
        self.state = state
        self.exact_limit = exact_limit
        self.probes = probes
        self._model: Any = None
        self._faiss: dict[bool, Any] = {}
        self._lock = threading.Lock()  # chunks of a date search from several threads: each index is built once

    def kneighbors(self, query: F64, k: int, *, indexed: bool = True) -> NDArray[np.intp]:
        """``(len(query), k)`` positions in ``state`` of each query's ``k`` nearest states, nearest first.

        Args:
            query: ``(n, D)`` states to look up.
            k: Neighbours wanted (capped by the states there are).
            indexed: Above ``exact_limit`` states, search a faiss inverted-file index (worth training for many queries);
                otherwise an exact faiss flat search (a few queries: nothing to train). Each is built once.

        An approximate search that found fewer fills the rest with -1.
        """
        k = min(k, len(self.state))
        if len(self.state) <= self.exact_limit:
            with self._lock:
                if self._model is None:
                    self._model = NearestNeighbors(algorithm=_KNN).fit(self.state)
            with sklearn.config_context(working_memory=_WORKING_MB):  # bounded distance chunks
                found = self._model.kneighbors(query, n_neighbors=k, return_distance=False)
            return np.asarray(found, dtype=np.intp)
        with self._lock:
            model = self._faiss.get(indexed)
            if model is None:
                model = self._faiss[indexed] = self._build(indexed)
        out = np.empty((len(query), k), dtype=np.intp)
        for lo in range(0, len(query), QUERY_CHUNK):  # bounded memory: the distances of a chunk at a time
            q = np.ascontiguousarray(query[lo : lo + QUERY_CHUNK], dtype=np.float32)
            out[lo : lo + len(q)] = model.search(q, k)[1]
        return out

    def _build(self, indexed: bool) -> Any:
        """The faiss index of :meth:`kneighbors`: inverted lists over k-means cells, or flat (exact)."""
        import faiss

        data = np.ascontiguousarray(self.state, dtype=np.float32)
        dim = data.shape[1]
        if indexed:  # inverted lists over k-means cells, trained on an evenly spaced sample (deterministic)
            nlist = max(1, int(IVF_CELLS_PER_SQRT * np.sqrt(len(data))))
            model: Any = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
            model.cp.seed = 0
            step = max(1, len(data) // (IVF_TRAIN_PER_CELL * nlist))
            model.train(data[::step])
            model.nprobe = min(nlist, self.probes)
        else:
            model = faiss.IndexFlatL2(dim)
        model.add(data)
        return model


def far_first(
    found: NDArray[np.intp], positions: NDArray[np.integer], here: NDArray[np.integer], exclusion: int, n_keep: int
) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """The first ``n_keep`` of each row's neighbours ``found`` (nearest first, -1 = none) that lie far away.

    Args:
        found: ``(n, k)`` neighbour indices into ``positions``.
        positions: ``(M, 2)`` patch ``(row, col)`` of the states ``found`` indexes.
        here: ``(n, 2)`` the querying patches' positions.
        exclusion: Patches within this many rows and columns are not far.
        n_keep: Neighbours kept per row.

    Returns:
        ``(neighbours, far)``, each ``(n, n_keep)``: the far neighbours, nearest first, then near ones (``far``
        False) where a row has fewer far ones.
    """
    nb = np.where(found >= 0, found, 0)
    near = (np.abs(positions[nb, 0] - here[:, None, 0]) <= exclusion) & (
        np.abs(positions[nb, 1] - here[:, None, 1]) <= exclusion
    )
    far = ~near & (found >= 0)
    order = np.argsort(~far, axis=1, kind="stable")[:, :n_keep]  # the closest far-away patches first
    return np.take_along_axis(nb, order, axis=1), np.take_along_axis(far, order, axis=1)


@dataclass(frozen=True)
class Fetch:
    """How many far-away candidates the peer table keeps per patch (:meth:`PeerTable.build`)."""

    n_peers: int
    exclusion: int
    exact_limit: int

    def size(self, n_states: int) -> int:
        """Candidates kept: twice the peers a date needs up to ``exact_limit`` states, 1.5 times above."""
        spare = 2 * self.n_peers if n_states <= self.exact_limit else (3 * self.n_peers) // 2
        return min(n_states, spare)


class PeerTable:
    """Nearest far-away reference states of every patch, shared by the dates that have the same reference mask.

    With the ``"first"`` reference every date has the same reference states, so the nearest-neighbour search (the
    bulk of the cost) runs once instead of once per date. The spatial exclusion does not depend on the date either,
    so the table keeps only candidates outside each patch's exclusion window. Each date then keeps, per patch, the
    nearest candidates that are scorable that date; a patch with too few of them (a very cloudy date) is searched
    again among that date's scorable patches only (by its date's task in
    :func:`~changescope.change.context.peer_scores`), so the peers are exactly the ones a search per date would find
    (up to the approximation of faiss above ``exact_limit`` patches). The table is ``int32``: ``fetch`` indices per
    patch that has a reference state (``row`` gives its row; patches never observed, such as nodata outside a tile's
    swath, take none: 282 MB for 470 000 sub-patches fully observed, less in proportion otherwise), with ``fetch``
    twice the peers a date needs up to ``exact_limit`` patches and 1.5 times above (:class:`Fetch`).
    """

    def __init__(self, ref: NDArray[np.bool_], state: F64, table: NDArray[np.int32], row: NDArray[np.int32]) -> None:
        self.ref = ref
        self.state = state
        self.table = table
        self.row = row

    def candidates(self, patches: NDArray[np.intp]) -> NDArray[np.int32]:
        """``(len(patches), fetch)`` the table's candidates of ``patches`` (-1 where none; all -1 without a state)."""
        r = self.row[patches]
        cand = self.table[np.maximum(r, 0)]
        if (r < 0).any():
            cand[r < 0] = -1
        return cand

    @classmethod
    def build(
        cls,
        ref: NDArray[np.bool_],
        count: NDArray[np.integer],
        src: DateSource,
        positions: NDArray[np.integer],
        fetch: Fetch,
    ) -> PeerTable:
        """Reference states (``ref (T, N)``: reference observations of one date) and their far-away neighbours."""
        n_t, n, dim = src.shape
        has = np.nonzero(count > 0)[0]
        state = np.zeros((n, dim))
        for j in range(n_t):  # one date of embeddings at a time
            if ref[j].any():
                state[ref[j]] += src.date(j)[ref[j]]
        state[has] /= count[has, None]
        keep = fetch.size(len(has))
        table = np.full((len(has), keep), -1, dtype=np.int32)
        row = np.full(n, -1, dtype=np.int32)
        row[has] = np.arange(len(has), dtype=np.int32)
        search = StateSearch(state[has], fetch.exact_limit)
        wanted = keep + (2 * fetch.exclusion + 1) ** 2  # enough to keep `keep` after the exclusion window
        pos = np.asarray(positions)[has]
        for lo in range(0, len(has), QUERY_CHUNK):  # bounded memory: a chunk of neighbour lists at a time
            rows = has[lo : lo + QUERY_CHUNK]
            found = search.kneighbors(state[rows], wanted)
            nb, far = far_first(found, pos, pos[lo : lo + len(rows)], fetch.exclusion, keep)
            table[lo : lo + len(rows)] = np.where(far, has[nb], -1)
        del search
        release()
        return cls(np.array(ref, copy=True), state, table, row)

    def lacking(self, idx: NDArray[np.intp], ok: NDArray[np.bool_], n_keep: int) -> int:
        """How many of the patches ``idx`` hold fewer than ``n_keep`` candidates scorable where ``ok``.

        Those are searched again by the date's task (:func:`~changescope.change.context.peer_scores`). Counted a chunk
        of patches at a time.
        """
        n = 0
        for lo in range(0, len(idx), QUERY_CHUNK):
            cand = self.candidates(idx[lo : lo + QUERY_CHUNK])
            usable = (cand >= 0) & ok[np.maximum(cand, 0)]
            n += int(np.count_nonzero(usable.sum(axis=1) < n_keep))
        return n

    def neighbours(
        self, idx: NDArray[np.intp], ok: NDArray[np.bool_], local: NDArray[np.intp], n_keep: int, rows: slice
    ) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """The ``n_keep`` nearest scorable far-away candidates of the patches ``idx[rows]``, nearest first.

        Args:
            idx: The scorable patches of the date.
            ok: ``(N,)`` scorable patches of the date.
            local: ``(N,)`` each patch's position in ``idx`` (-1 where not scorable).
            n_keep: Candidates wanted.
            rows: Which of ``idx`` to look up.

        Returns:
            ``(neighbours, found)``, each ``(len(idx[rows]), n_keep)``: positions in ``idx``, and False where the
            table held fewer usable candidates (those rows must be searched again).
        """
        cand = self.candidates(idx[rows])
        usable = (cand >= 0) & ok[np.maximum(cand, 0)]
        first = np.argsort(~usable, axis=1, kind="stable")[:, :n_keep]  # usable candidates, in distance order
        found = np.take_along_axis(usable, first, axis=1)
        nb = local[np.maximum(np.take_along_axis(cand, first, axis=1), 0)]
        return np.where(found, nb, 0), found
