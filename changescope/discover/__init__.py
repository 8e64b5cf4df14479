"""Discovery: cluster change vectors into change types, rank atypical events, find changes like a given one.

- :class:`ChangeClusterer`: HDBSCAN (default) or k-means on L2-normalised change vectors, with the hierarchy of the
  change types (average-linkage tree of the cluster centroids, cosine); above 20 000 events fitted on a seeded
  sample, then every event assigned.
- :func:`rarity` and :func:`rank_events`: rarity from cluster size and kNN sparsity (a faiss index queried in
  chunks, :mod:`~changescope.discover.density`); rank by rarity, magnitude or a mix.
- :func:`discover_changes`: all of the above on a catalog frame, plus cluster summaries for ``clusters.json``;
  :func:`discover_events`: the run's discover stage (events -> the catalog files).
- :class:`Catalog`: ``changes.parquet`` + ``change_vectors.npy`` of one run, or several merged.
- :class:`ChangeIndex`: cosine search (faiss; exact or IVF/HNSW) with date, box, AOI and same-patch filters,
  persisted beside the catalog.
"""

from changescope.discover.catalog import Catalog, catalog_frame, make_event_ids
from changescope.discover.cluster import ChangeClusterer, centroid_hierarchy
from changescope.discover.index import IndexParams
from changescope.discover.pipeline import discover_events
from changescope.discover.rank import rank_events, rarity
from changescope.discover.search import ChangeIndex, parse_bbox, parse_dates
from changescope.discover.summary import (
    Discovery,
    discover_changes,
    read_clusters_json,
    summarize_clusters,
    write_clusters_json,
)

__all__ = [
    "Catalog",
    "ChangeClusterer",
    "ChangeIndex",
    "Discovery",
    "IndexParams",
    "catalog_frame",
    "centroid_hierarchy",
    "discover_changes",
    "discover_events",
    "make_event_ids",
    "parse_bbox",
    "parse_dates",
    "rank_events",
    "rarity",
    "read_clusters_json",
    "summarize_clusters",
    "write_clusters_json",
]
