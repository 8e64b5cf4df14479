"""The discover stage of a run: events -> ``changes.parquet`` + ``change_vectors.npy`` + ``clusters.json``.

:func:`discover_events` turns one AOI's :class:`~changescope.change.events.Events` into the catalog (patch
polygons from the grid, human-readable event ids), clusters the change vectors, scores rarity, ranks the events and
writes the three files atomically. The search index (``changes.faiss``) is built on the first search and saved
beside them (:class:`~changescope.discover.search.ChangeIndex`).

An AOI without any event still gets its (empty) files, so a run always finishes with a readable catalog.

Memory stays bounded at catalog scale (a whole Sentinel-2 tile, hundreds of thousands of events): the descriptors
are computed a chunk of events at a time, the clustering is fitted on a seeded sample and every event assigned
(:mod:`~changescope.discover.cluster`), the rarity's neighbours come from a faiss index queried in chunks
(:mod:`~changescope.discover.density`) and the summaries group the events once; nothing holds an events x events
array. ``benchmarks/discover_scale.py`` measures it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from changescope.config import DiscoverConfig, RunConfig
from changescope.discover.catalog import CLUSTERS_FILE, EVIDENCE_COLUMNS, Catalog, catalog_frame
from changescope.discover.cluster import ChangeClusterer, ClusterMethod, centroid_hierarchy
from changescope.discover.rank import RankBy
from changescope.discover.summary import (
    CLUSTERS_FORMAT,
    CLUSTERS_VERSION,
    discover_changes,
    write_clusters_json,
)
from changescope.storepath import StorePath, as_path
from changescope.types import PathLike

if TYPE_CHECKING:
    from changescope.change.events import Events
    from changescope.grid import PatchGrid

__all__ = ["discover_events"]


DESCRIPTOR_BYTES = 16 * 2**20
"""Bytes of before (and of after) states whose descriptors are computed at a time: :meth:`Events.descriptors`
makes several float64 temporaries of that size."""


def _setting(config: DiscoverConfig, name: str, override: Any) -> Any:
    return getattr(config, name) if override is None else override


def _descriptors(events: Events, from_weight: float) -> NDArray[np.float32]:
    """:meth:`Events.descriptors`, computed a chunk of events at a time into one float32 array (same values)."""
    n = len(events.before)
    step = max(1, DESCRIPTOR_BYTES // max(1, 4 * int(np.prod(events.before.shape[1:]))))
    if n <= step:
        return events.descriptors(from_weight)

    def block(start: int) -> NDArray[np.float32]:
        rows = slice(start, min(start + step, n))
        part = replace(events, frame=events.frame.iloc[rows], before=events.before[rows], after=events.after[rows])
        return part.descriptors(from_weight)

    first = block(0)
    out = np.empty((n, first.shape[1]), dtype=np.float32)
    out[: first.shape[0]] = first
    for start in range(step, n, step):
        out[start : start + step] = block(start)
    return out


def discover_events(
    events: Events,
    grid: PatchGrid,
    *,
    aoi: str | None,
    crs: Any = None,
    config: DiscoverConfig | RunConfig | None = None,
    out: PathLike | StorePath | None = None,
    cluster: ClusterMethod | None = None,
    n_clusters: int | None = None,
    rank_by: RankBy | None = None,
    rank_weight: float | None = None,
    seed: int | None = None,
    from_weight: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Cluster, score and rank one AOI's events; write its catalog files into ``out``.

    Settings come from the keyword overrides, else from ``config`` (a :class:`~changescope.config.DiscoverConfig`,
    or the discover stage of a :class:`~changescope.config.RunConfig`), else the defaults of
    :class:`~changescope.config.DiscoverConfig` (HDBSCAN, rank by ``"mix"`` with weight 0.5, seed 0, from-to
    descriptors with ``from_weight`` 1).
    The catalog's vectors are the events' from-to descriptors (:meth:`Events.descriptors`).

    Args:
        events: The AOI's events; ``frame.patch`` is the row-major flat index ``row * n_cols + col``.
        grid: The patch grid (polygons).
        aoi: AOI name (event id prefix); ``None`` = ``"aoi"``.
        crs: CRS of the polygons (default the grid's).
        config: Run configuration to read settings from.
        out: Run folder to write ``changes.parquet``, ``change_vectors.npy`` and ``clusters.json`` into (none
            written when ``None``).
        cluster: ``"hdbscan"`` or ``"kmeans"``.
        n_clusters: k-means clusters (default 8).
        rank_by: ``"rarity"``, ``"magnitude"`` or ``"mix"``.
        rank_weight: Rarity's share in ``"mix"``.
        seed: Clustering seed.
        from_weight: Weight of the before state in the descriptors (0 = change vectors ``after - before`` only).
        metadata: Run parameters and versions stored in ``changes.parquet``'s schema metadata.

    Returns:
        The catalog GeoDataFrame (with ``cluster``, ``rarity``, ``rank``), row-aligned with the descriptors.
    """
    cfg = config.discover if isinstance(config, RunConfig) else config or DiscoverConfig()
    cfg = DiscoverConfig(
        from_weight=float(_setting(cfg, "from_weight", from_weight)),
        cluster=_setting(cfg, "cluster", cluster),
        n_clusters=_setting(cfg, "n_clusters", n_clusters),
        rank_by=_setting(cfg, "rank_by", rank_by),
        rank_weight=float(_setting(cfg, "rank_weight", rank_weight)),
        seed=int(_setting(cfg, "seed", seed)),
    )
    method, by, weight, random_state = cfg.cluster, cfg.rank_by, cfg.rank_weight, cfg.seed
    k = 8 if cfg.n_clusters is None else cfg.n_clusters
    if crs is not None and getattr(grid, "crs", None) is None:
        grid = replace(grid, crs=crs)
    frame = catalog_frame(events, grid, aoi or "aoi")
    if crs is not None:
        frame = frame.set_crs(crs, allow_override=True)
    vectors = _descriptors(events, cfg.from_weight)
    clusterer = ChangeClusterer(method, n_clusters=k, random_state=random_state)
    if len(frame):
        found = discover_changes(frame, vectors, clusterer=clusterer, by=by, weight=weight)
        frame = found.frame
        clusters_json: dict[str, Any] = found.to_json_dict()
    else:
        frame["cluster"] = np.zeros(0, dtype=np.int64)
        frame["rarity"] = np.zeros(0, dtype=np.float64)
        frame["rank"] = np.zeros(0, dtype=np.int64)
        clusters_json = {
            "format": CLUSTERS_FORMAT,
            "version": CLUSTERS_VERSION,
            "params": {**clusterer.get_params(), "rank_by": by, "rank_weight": weight},
            "n_events": 0,
            "n_clusters": 0,
            "n_noise": 0,
            "clusters": [],
            "hierarchy": centroid_hierarchy(np.zeros((0, vectors.shape[1])), np.zeros(0, dtype=np.int64)),
        }
    columns = ["event_id", "aoi", "row", "col", "time", "score", "magnitude", "cluster", "rarity", "rank"]
    frame = frame[[*columns, "confirmed", *[c for c in EVIDENCE_COLUMNS if c in frame], "geometry"]]
    if "date_latest" in frame:
        frame.insert(frame.columns.get_loc("date_earliest"), "date", frame["time"])
    if out is not None:
        target = as_path(out)
        Catalog.from_frame(frame, vectors).write(target, metadata)
        write_clusters_json(target / CLUSTERS_FILE, clusters_json)
    return frame
