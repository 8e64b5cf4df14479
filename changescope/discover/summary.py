"""Discovery in one call (cluster, rarity, rank), cluster summaries and the ``clusters.json`` file.

``clusters.json`` (written atomically) is plain JSON::

    {
      "format": "changescope.clusters", "version": 1,
      "params": {...ChangeClusterer parameters..., "min_cluster_size_used", "rank_by", "rank_weight",
                 "n_neighbors", "size_weight"},
      "n_events": 1234, "n_clusters": 7, "n_noise": 80,
      "clusters": [                      # one entry per cluster (0 = largest), then noise (id -1) if any
        {"cluster": 0, "noise": false, "size": 412,
         "first_date": "2018-03-01", "last_date": "2019-11-01",
         "per_date": {"2018-03-01": 12, ...},          # events per date
         "area": 26214400.0,                            # sum of patch polygon areas, CRS units^2 (null if mixed)
         "centroid_magnitude": 3.1,                     # norm of the mean change vector
         "mean_magnitude": 3.4, "mean_rarity": 0.21, "best_rank": 17,
         "aois": {"aoi-a": 400, "aoi-b": 12},
         "examples": ["aoi-a:2018-05-01:r3c7", ...]}    # the cluster's best-ranked event ids
      ],
      "hierarchy": {"method": "average", "metric": "cosine", "merges": [...], "tree": {...}}
    }

``hierarchy`` is :func:`~changescope.discover.cluster.centroid_hierarchy`: merges in order (closest change types
first), and the same tree nested from the root, for the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.discover.cluster import ChangeClusterer, cluster_sums
from changescope.discover.index import IndexParams
from changescope.discover.rank import RankBy, rank_events, rarity
from changescope.errors import CorruptFileError, ParameterError
from changescope.io.writers import atomic_path
from changescope.storepath import AnyPath, StorePath, as_path
from changescope.types import PathLike

__all__ = ["Discovery", "discover_changes", "read_clusters_json", "summarize_clusters", "write_clusters_json"]

CLUSTERS_FORMAT = "changescope.clusters"
CLUSTERS_VERSION = 1


def _areas(frame: pd.DataFrame) -> NDArray[np.float64] | None:
    """Every patch's area (CRS units^2), ``None`` without a single CRS or geometry."""
    if "geometry" not in frame.columns or getattr(frame, "crs", None) is None:
        return None
    import shapely

    geoms = np.asarray(frame["geometry"].to_numpy(), dtype=object)
    out: NDArray[np.float64] = np.asarray(shapely.area(geoms), dtype=np.float64)
    return out


def _column(frame: pd.DataFrame, column: str) -> NDArray[np.float64] | None:
    return frame[column].to_numpy(np.float64) if column in frame.columns else None


def summarize_clusters(
    frame: pd.DataFrame, vectors: NDArray[np.floating[Any]], *, n_examples: int = 5
) -> list[dict[str, Any]]:
    """One JSON-ready summary per cluster (then noise), see the module docstring for the fields.

    Events are grouped once (a stable sort by cluster) and the vectors summed a chunk at a time
    (:func:`~changescope.discover.cluster.cluster_sums`), so the cost is ``O(E log E)`` whatever the number of
    clusters, and no copy of the vectors is made.

    Args:
        frame: Events with ``cluster``, ``time``, ``event_id`` and optionally ``magnitude``, ``rarity``, ``rank``,
            ``aoi``, ``geometry``.
        vectors: ``(E, D)`` change vectors, row-aligned with ``frame``.
        n_examples: Best-ranked event ids listed per cluster.
    """
    if "cluster" not in frame.columns:
        raise ParameterError("summarize_clusters() needs a 'cluster' column; fit a ChangeClusterer first")
    v = np.asarray(vectors)
    labels = frame["cluster"].to_numpy(np.int64)
    days = pd.DatetimeIndex(frame["time"]).strftime("%Y-%m-%d").to_numpy()
    ranks = frame["rank"].to_numpy(np.int64) if "rank" in frame else np.arange(1, len(frame) + 1)
    ids = frame["event_id"].astype(str).to_numpy()
    aois = frame["aoi"].astype(str).to_numpy() if "aoi" in frame.columns else None
    areas = _areas(frame)
    magnitude, rarity_ = _column(frame, "magnitude"), _column(frame, "rarity")
    n_found = int(labels.max(initial=-1)) + 1
    sums, counts = cluster_sums(v, labels, n_found) if v.size else (None, None)
    order = np.argsort(labels, kind="stable")  # each cluster's events in their original order
    bounds = np.searchsorted(labels[order], np.arange(-1, n_found + 1))
    out: list[dict[str, Any]] = []
    found = [c for c in range(n_found) if bounds[c + 2] > bounds[c + 1]]
    for c in [*found, *([-1] if bounds[1] > bounds[0] else [])]:
        members = order[bounds[c + 1] : bounds[c + 2]]
        d = days[members]
        per_date = pd.Series(d).value_counts().sort_index()
        first = np.argsort(ranks[members], kind="stable")
        mean = None if sums is None or counts is None else sums[c + 1] / counts[c + 1]
        entry: dict[str, Any] = {
            "cluster": c,
            "noise": c < 0,
            "size": int(members.size),
            "first_date": str(d.min()),
            "last_date": str(d.max()),
            "per_date": {str(k): int(n) for k, n in per_date.items()},
            "area": None if areas is None else float(np.sum(areas[members])),
            "centroid_magnitude": 0.0 if mean is None else float(np.linalg.norm(mean)),
            "mean_magnitude": None if magnitude is None else float(magnitude[members].mean()),
            "mean_rarity": None if rarity_ is None else float(rarity_[members].mean()),
            "best_rank": int(ranks[members].min()),
            "examples": ids[members][first][:n_examples].tolist(),
        }
        if aois is not None:
            entry["aois"] = {str(k): int(n) for k, n in pd.Series(aois[members]).value_counts().items()}
        out.append(entry)
    return out


@dataclass(frozen=True)
class Discovery:
    """The result of :func:`discover_changes`.

    Attributes:
        frame: The input events with ``cluster``, ``rarity`` and ``rank`` filled in.
        clusterer: The fitted :class:`ChangeClusterer`.
        clusters: :func:`summarize_clusters` of ``frame``.
        params: Parameters of the ranking, recorded in ``clusters.json``.
    """

    frame: pd.DataFrame
    clusterer: ChangeClusterer
    clusters: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        """The ``clusters.json`` content."""
        labels = self.frame["cluster"].to_numpy(np.int64)
        return {
            "format": CLUSTERS_FORMAT,
            "version": CLUSTERS_VERSION,
            "params": {
                **self.clusterer.get_params(),
                "min_cluster_size_used": self.clusterer.min_cluster_size_,
                **self.params,
            },
            "n_events": len(self.frame),
            "n_clusters": int(self.clusterer.n_clusters_),
            "n_noise": int((labels < 0).sum()),
            "clusters": self.clusters,
            "hierarchy": self.clusterer.hierarchy_,
        }


def discover_changes(
    frame: pd.DataFrame,
    vectors: NDArray[np.floating[Any]],
    *,
    clusterer: ChangeClusterer | None = None,
    by: RankBy = "rarity",
    weight: float = 0.5,
    n_neighbors: int = 10,
    size_weight: float = 0.5,
    index_params: IndexParams | None = None,
    n_examples: int = 5,
) -> Discovery:
    """Cluster the change vectors, score rarity, rank the events and summarise the clusters.

    Args:
        frame: Catalog events (:func:`~changescope.discover.catalog.catalog_frame`), row-aligned with ``vectors``.
        vectors: ``(E, D)`` change vectors.
        clusterer: An unfitted clusterer (default ``ChangeClusterer()``: HDBSCAN).
        by: Ranking criterion (:func:`~changescope.discover.rank.rank_events`).
        weight: Rarity's share for ``by="mix"``.
        n_neighbors: ``k`` of the rarity density term.
        size_weight: Weight of the cluster-size term of rarity.
        index_params: Neighbour index for the density term.
        n_examples: Example ids per cluster summary.

    Raises:
        EmptySeriesError: The catalog has no events.
    """
    clus = (clusterer or ChangeClusterer()).fit(vectors)
    out = frame.copy()
    out["cluster"] = clus.labels_
    out["rarity"] = rarity(
        vectors, clus.labels_, n_neighbors=n_neighbors, size_weight=size_weight, index_params=index_params
    )
    out = rank_events(out, by=by, weight=weight)
    params = {"rank_by": by, "rank_weight": weight, "n_neighbors": n_neighbors, "size_weight": size_weight}
    return Discovery(out, clus, summarize_clusters(out, vectors, n_examples=n_examples), params)


def write_clusters_json(path: PathLike | StorePath, discovery: Discovery | dict[str, Any]) -> AnyPath:
    """Write ``clusters.json`` atomically and return its path."""
    data = discovery.to_json_dict() if isinstance(discovery, Discovery) else discovery
    target = as_path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return target


def read_clusters_json(path: PathLike | StorePath) -> dict[str, Any]:
    """Read a ``clusters.json``.

    Raises:
        CorruptFileError: Not JSON, or not a changescope clusters file.
    """
    p = as_path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"cannot read {str(p)!r} as clusters.json: {err}") from err
    if not isinstance(data, dict) or data.get("format") != CLUSTERS_FORMAT:
        raise CorruptFileError(f"{str(p)!r} is not a changescope clusters.json (format {CLUSTERS_FORMAT!r})")
    return data
