"""The change catalog: ``changes.parquet`` (GeoParquet, one row per event) + ``change_vectors.npy`` (row-aligned).

A run folder holds::

    changes.parquet      event_id, aoi, row, col, time, score, p_value, nfa, magnitude, cluster, rarity, rank,
                         confirmed, status, date, date_earliest, date_latest, geometry
    change_vectors.npy   float32 (E, D); row i is the change vector of row i of changes.parquet
    clusters.json        cluster summaries and their hierarchy (changescope.discover.summary)
    changes.faiss        the search index and changes.faiss.json its parameters (changescope.discover.search)

``event_id`` is ``"{aoi}:{YYYY-MM-DD}:r{row}c{col}"``: globally unique as long as AOI names are.

Catalogs of several AOIs are merged with :meth:`Catalog.merge` (same vector dimension, unique event ids). Their
CRSs may differ: the merged frame then has a geometry column without a CRS, each event keeps its own CRS
(:meth:`Catalog.event_crs`), and a bounding-box filter needs the CRS of the box (``crs=``); it is transformed into
each AOI's CRS. With one shared CRS the merged frame is an ordinary GeoDataFrame in that CRS.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.errors import CorruptFileError, EmptySeriesError, ParameterError
from changescope.io.writers import atomic_path
from changescope.storepath import AnyPath, StorePath, as_path
from changescope.types import PathLike

if TYPE_CHECKING:
    from changescope.change.events import Events
    from changescope.grid import PatchGrid

__all__ = [
    "CHANGES_FILE",
    "CLUSTERS_FILE",
    "INDEX_FILE",
    "REQUIRED_COLUMNS",
    "VECTORS_FILE",
    "Catalog",
    "catalog_frame",
    "make_event_ids",
]

CHANGES_FILE = "changes.parquet"
VECTORS_FILE = "change_vectors.npy"
CLUSTERS_FILE = "clusters.json"
INDEX_FILE = "changes.faiss"
REQUIRED_COLUMNS: tuple[str, ...] = ("event_id", "aoi", "row", "col", "time", "geometry")
EVIDENCE_COLUMNS: tuple[str, ...] = ("p_value", "nfa", "score_threshold", "status", "date_earliest", "date_latest")
"""The evidence and dating of each event (:mod:`changescope.change.events`), kept when the events have them."""


def make_event_ids(aoi: str, times: Any, rows: Any, cols: Any) -> list[str]:
    """``"{aoi}:{YYYY-MM-DD}:r{row}c{col}"`` for aligned sequences of dates, rows and cols."""
    days = pd.DatetimeIndex(times).strftime("%Y-%m-%d")
    return [f"{aoi}:{d}:r{int(r)}c{int(c)}" for d, r, c in zip(days, np.asarray(rows), np.asarray(cols), strict=True)]


def catalog_frame(events: Events, grid: PatchGrid, aoi: str) -> Any:
    """The base catalog GeoDataFrame of one AOI's events (no cluster/rarity/rank yet).

    Args:
        events: Events of the AOI; ``frame.patch`` is the row-major flat patch index ``row * n_cols + col``.
        grid: The patch grid the events were scored on (polygons and CRS).
        aoi: AOI name, the first part of every ``event_id``.

    Returns:
        A GeoDataFrame with ``event_id, aoi, row, col, time, score, magnitude, confirmed, geometry``.
    """
    import geopandas as gpd

    f = events.frame
    patch = f["patch"].to_numpy(np.int64)
    rows, cols = patch // grid.n_cols, patch % grid.n_cols
    data = pd.DataFrame(
        {
            "event_id": make_event_ids(aoi, f["time"], rows, cols),
            "aoi": aoi,
            "row": rows,
            "col": cols,
            "time": pd.DatetimeIndex(f["time"]),
            "score": f["score"].to_numpy(np.float64),
            "magnitude": f["magnitude"].to_numpy(np.float64),
            "confirmed": f["confirmed"].to_numpy(bool),
        }
    )
    for name in EVIDENCE_COLUMNS:  # events from older code (or built by hand) may lack them
        if name in f:
            data[name] = f[name].to_numpy()
    return gpd.GeoDataFrame(data, geometry=grid.polygons(rows, cols), crs=grid.crs)


def _crs_name(crs: Any) -> str:
    return "no CRS" if crs is None else str(crs.to_string())


@dataclass(frozen=True, eq=False)
class Catalog:
    """Change events and their change vectors, from one run or merged from several AOIs.

    Args:
        frame: One row per event (at least :data:`REQUIRED_COLUMNS`); a GeoDataFrame when all events share a CRS.
        vectors: ``(E, D)`` float32 change vectors, row-aligned with ``frame``.
        source: The ``changes.parquet`` it was read from (``None`` when built in memory or merged).
        part_crs: CRS (pyproj) of each merged part; a single entry for a plain catalog.
        part: ``(E,)`` part index of each event; ``None`` = all in part 0.
    """

    frame: pd.DataFrame
    vectors: NDArray[np.float32]
    source: Path | None = None
    part_crs: tuple[Any, ...] = (None,)
    part: NDArray[np.int64] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.frame.columns]
        where = f" ({self.source})" if self.source else ""
        if missing:
            raise CorruptFileError(f"change catalog{where} lacks the column(s) {missing!r}")
        v = np.asarray(self.vectors)
        if v.ndim != 2 or v.shape[0] != len(self.frame):
            raise CorruptFileError(
                f"change catalog{where} has {len(self.frame)} events but change vectors of shape {v.shape!r}; "
                "rewrite the run's changes.parquet and change_vectors.npy together"
            )
        if v.dtype != np.float32 or not v.flags.c_contiguous:
            object.__setattr__(self, "vectors", np.ascontiguousarray(v, dtype=np.float32))
        if not self.frame.index.equals(pd.RangeIndex(len(self.frame))):
            object.__setattr__(self, "frame", self.frame.reset_index(drop=True))

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def open(cls, path: PathLike) -> Catalog:
        """Read a catalog from a run folder or its ``changes.parquet`` (vectors from ``change_vectors.npy``).

        Raises:
            ParameterError: The path does not exist or holds no ``changes.parquet``.
            CorruptFileError: The files cannot be read, or their rows do not match.
        """
        import geopandas as gpd

        p = Path(path)
        parquet = p / CHANGES_FILE if p.is_dir() else p
        if not parquet.is_file():
            raise ParameterError(
                f"catalog {str(path)!r} not found: pass a run folder containing {CHANGES_FILE} or the file itself"
            )
        vec_path = parquet.with_name(VECTORS_FILE)
        if not vec_path.is_file():
            raise CorruptFileError(f"{str(vec_path)!r} is missing beside {parquet.name}; re-run the change stage")
        try:
            frame = gpd.read_parquet(parquet)
            vectors = np.load(vec_path, mmap_mode=None, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise CorruptFileError(f"cannot read the catalog {str(parquet)!r}: {err}") from err
        if "time" in frame.columns:
            frame["time"] = pd.to_datetime(frame["time"])
        return cls(frame=frame, vectors=vectors, source=parquet.resolve(), part_crs=(frame.crs,))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, vectors: NDArray[np.floating[Any]]) -> Catalog:
        """An in-memory catalog (checks columns, alignment and unique event ids)."""
        crs = getattr(frame, "crs", None)
        cat = cls(frame=frame, vectors=np.asarray(vectors, dtype=np.float32), part_crs=(crs,))
        cat._check_unique()
        return cat

    def write(self, run_dir: PathLike | StorePath, metadata: dict[str, Any] | None = None) -> AnyPath:
        """Write ``changes.parquet`` and ``change_vectors.npy`` into ``run_dir`` (atomically); return the parquet.

        ``metadata`` (the run's parameters and versions) is stored as JSON under the Parquet schema key
        ``changescope``, beside GeoParquet's ``geo``.

        Raises:
            ParameterError: The catalog mixes CRSs (GeoParquet stores one CRS per file): write each AOI apart.
        """
        import geopandas as gpd

        if len(self.part_crs) > 1 and self.crs is None and any(c is not None for c in self.part_crs):
            raise ParameterError("a catalog with several CRSs cannot be written as one GeoParquet; write each AOI")
        out = as_path(run_dir)
        gdf = self.frame if isinstance(self.frame, gpd.GeoDataFrame) else gpd.GeoDataFrame(self.frame)
        with atomic_path(out / VECTORS_FILE) as tmp, open(tmp, "wb") as fh:
            np.save(fh, self.vectors, allow_pickle=False)
        with atomic_path(out / CHANGES_FILE) as tmp:
            gdf.to_parquet(tmp, index=False)
            if metadata is not None:
                import json

                import pyarrow.parquet as pq

                table = pq.read_table(tmp)
                meta = {**(table.schema.metadata or {}), b"changescope": json.dumps(metadata, default=str).encode()}
                pq.write_table(table.replace_schema_metadata(meta), tmp)
        return out / CHANGES_FILE

    @classmethod
    def merge(cls, catalogs: Sequence[Catalog]) -> Catalog:
        """Concatenate catalogs (several AOIs, or several runs) into one searchable catalog.

        Raises:
            ParameterError: No catalog given, vector dimensions differ, or an event id occurs twice.
        """
        import geopandas as gpd

        cats = list(catalogs)
        if not cats:
            raise ParameterError("Catalog.merge() needs at least one catalog")
        if len(cats) == 1:
            return cats[0]
        dims = {c.dim for c in cats}
        if len(dims) > 1:
            detail = ", ".join(f"{c.name}: {c.dim}" for c in cats)
            raise ParameterError(
                f"catalogs have different change-vector dimensions ({detail}); merge only runs made with the "
                "same encoder"
            )
        crs_list: list[Any] = []
        part_parts: list[NDArray[np.int64]] = []
        for c in cats:
            base = len(crs_list)
            crs_list.extend(c.part_crs)
            part_parts.append(base + (c.part if c.part is not None else np.zeros(len(c), dtype=np.int64)))
        shared = crs_list[0]
        one_crs = all(
            (x is None and shared is None) or (x is not None and shared is not None and x == shared) for x in crs_list
        )
        frames = []
        for c in cats:
            f = pd.DataFrame(c.frame)
            f["geometry"] = np.asarray(f["geometry"].array, dtype=object)  # plain shapely objects, no CRS
            frames.append(f)
        frame = gpd.GeoDataFrame(
            pd.concat(frames, ignore_index=True), geometry="geometry", crs=shared if one_crs else None
        )
        merged = cls(
            frame=frame,
            vectors=np.concatenate([c.vectors for c in cats], axis=0),
            part_crs=tuple(crs_list),
            part=np.concatenate(part_parts),
        )
        merged._check_unique()
        return merged

    def _check_unique(self) -> None:
        ids = self.frame["event_id"]
        if ids.duplicated().any():
            dup = ids[ids.duplicated()].astype(str).unique()[:3].tolist()
            raise ParameterError(
                f"event ids occur more than once ({dup!r}...): the same run was given twice, or two AOIs share a "
                "name; pass each run once and give AOIs unique names"
            )

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self.frame)

    @property
    def dim(self) -> int:
        """Change-vector dimension."""
        return int(self.vectors.shape[1])

    @property
    def name(self) -> str:
        """A short name for messages (the source path, or the AOIs)."""
        if self.source is not None:
            return str(self.source.parent if self.source.name == CHANGES_FILE else self.source)
        aois = pd.unique(self.frame["aoi"].astype(str))
        return "catalog of " + (", ".join(aois[:3]) + (" ..." if len(aois) > 3 else "") if len(aois) else "no AOI")

    @property
    def crs(self) -> Any:
        """The CRS shared by every event, or ``None`` (no CRS, or several)."""
        first = self.part_crs[0]
        return first if all(c == first for c in self.part_crs) else None

    @property
    def crs_names(self) -> list[str]:
        """Distinct CRS names of the events, for messages."""
        return sorted({_crs_name(c) for c in self.part_crs})

    def event_crs(self) -> NDArray[np.int64]:
        """``(E,)`` index into :attr:`part_crs` of every event's CRS."""
        return self.part if self.part is not None else np.zeros(len(self), dtype=np.int64)

    @cached_property
    def fingerprint(self) -> str:
        """BLAKE2 digest of the event ids and the change vectors (a changed catalog gets a new fingerprint)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.vectors.shape}".encode())
        h.update("\n".join(self.frame["event_id"].astype(str)).encode())
        h.update(np.ascontiguousarray(self.vectors).data)
        return h.hexdigest()

    @cached_property
    def positions(self) -> dict[str, int]:
        """``event_id -> row`` lookup."""
        return {str(e): i for i, e in enumerate(self.frame["event_id"])}

    @cached_property
    def patch_keys(self) -> NDArray[np.int64]:
        """``(E,)`` integer key of every event's patch (equal keys = same AOI, row and col)."""
        codes, _ = pd.factorize(self.frame["aoi"].astype(str))
        rows = self.frame["row"].to_numpy(np.int64)
        cols = self.frame["col"].to_numpy(np.int64)
        n_rows = int(rows.max(initial=0)) + 1
        n_cols = int(cols.max(initial=0)) + 1
        keys: NDArray[np.int64] = (codes.astype(np.int64) * n_rows + rows) * n_cols + cols
        return keys

    @cached_property
    def bounds(self) -> NDArray[np.float64]:
        """``(E, 4)`` ``minx, miny, maxx, maxy`` of every event's patch polygon (in its own CRS)."""
        import shapely

        geoms = np.asarray(self.frame["geometry"].to_numpy(), dtype=object)
        return np.asarray(shapely.bounds(geoms), dtype=np.float64).reshape(-1, 4)

    # ------------------------------------------------------------------ look-ups
    def require_events(self) -> None:
        """Raise :class:`EmptySeriesError` when the catalog has no event."""
        if len(self) == 0:
            raise EmptySeriesError(
                f"the change catalog {self.name} is empty: no event to search or rank "
                "(the change stage found no change; lower its threshold)"
            )

    def suggest(self, event_id: str, n: int = 3) -> list[str]:
        """Up to ``n`` known event ids close to ``event_id`` (same AOI and date first)."""
        ids = list(self.positions)
        parts = event_id.split(":")
        if len(ids) > 20_000 and len(parts) >= 2:
            for prefix in (":".join(parts[:2]) + ":", parts[0] + ":"):
                narrowed = [i for i in ids if i.startswith(prefix)]
                if narrowed:
                    ids = narrowed
                    break
            ids = ids[:20_000]
        return difflib.get_close_matches(event_id, ids, n=n, cutoff=0.6)

    def position(self, event_id: str) -> int:
        """Row of ``event_id``.

        Raises:
            ParameterError: Unknown id; the message suggests close ids and how to list them.
        """
        try:
            return self.positions[event_id]
        except KeyError:
            close = self.suggest(event_id)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            raise ParameterError(
                f"unknown event id {event_id!r} in {self.name}; {hint}ids look like 'AOI:YYYY-MM-DD:rROWcCOL': "
                "list them with `changescope search CATALOG` (no --like) or the event_id column of changes.parquet"
            ) from None
