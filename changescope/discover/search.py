"""Find changes like this one: cosine search over a catalog's change vectors, with date/place/AOI filters.

``ChangeIndex.open(catalog)`` loads the index persisted beside the catalog, or builds it (and saves it) when it is
missing or stale. Two files sit beside ``changes.parquet``:

- ``changes.faiss``: the faiss index (``faiss.write_index``); id ``i`` is row ``i`` of the catalog.
- ``changes.faiss.json``: ``{"format": "changescope.search_index", "version": 1, "params": {...resolved
  IndexParams...}, "n_events", "dim", "fingerprint", "faiss_version", "changescope_version"}``.

The index is rebuilt when the catalog's fingerprint (event ids + vectors) or the requested parameters differ from
the JSON, or the files do not load. The JSON is removed before the index is rewritten and written last, both
atomically, so an interrupted save leaves no JSON and the next open rebuilds. Merged catalogs (no single source
file) are indexed in memory unless ``path=`` is given; so is a catalog whose folder is not writable.

Filters (``dates``, ``bbox``, ``aois``, ``exclude_same_patch``; the query event itself is always excluded) are
applied to over-fetched results: the search asks for more neighbours (x4 each round, IVF/HNSW also probing wider)
until ``k`` events pass or the catalog is exhausted. When the filters are selective (at most half the catalog and
at most ``subset_exact`` = 20 000 events pass) or the over-fetch grows past 65 536, the allowed events are scanned
exactly instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.discover.catalog import INDEX_FILE, Catalog
from changescope.discover.index import IndexParams, build_index, load_faiss, normalize_rows, omp_threads, search_index
from changescope.errors import ParameterError
from changescope.io.writers import atomic_path
from changescope.types import BBox, PathLike

__all__ = ["ChangeIndex", "parse_bbox", "parse_dates"]

INDEX_FORMAT = "changescope.search_index"
INDEX_VERSION = 1
MAX_FETCH = 65_536
DateRange = tuple[Any, Any]


def parse_dates(text: str, name: str = "--dates") -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """Parse ``"A/B"`` (either side may be empty for an open range) into two timestamps.

    Raises:
        ParameterError: Not ``START/END`` dates, or START after END.
    """
    parts = text.split("/")
    if len(parts) != 2 or not any(p.strip() for p in parts):
        raise ParameterError(f"{name} {text!r} must be START/END, e.g. 2018-03-01/2018-09-01 (a side may be empty)")
    try:
        a, b = (pd.Timestamp(p.strip()) if p.strip() else None for p in parts)
    except ValueError as err:
        raise ParameterError(f"{name} {text!r}: {err}; use ISO dates like 2018-03-01/2018-09-01") from err
    if a is not None and b is not None and a > b:
        raise ParameterError(f"{name} {text!r} starts after it ends; write START/END")
    return a, b


def parse_bbox(text: str, name: str = "--bbox") -> BBox:
    """Parse ``"minx,miny,maxx,maxy"``.

    Raises:
        ParameterError: Not four numbers, or min > max.
    """
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise ParameterError(f"{name} {text!r} must be four numbers minx,miny,maxx,maxy (in the catalog CRS)")
    if vals[0] > vals[2] or vals[1] > vals[3]:
        raise ParameterError(f"{name} {text!r} has min > max; write minx,miny,maxx,maxy")
    return vals[0], vals[1], vals[2], vals[3]


def _naive(ts: Any) -> pd.Timestamp | None:
    if ts is None:
        return None
    t = pd.Timestamp(ts)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


class _Allowed:
    """The events a query may return: a filter mask (``None`` = all) minus a few excluded positions."""

    def __init__(self, n: int, mask: NDArray[np.bool_] | None, excluded: NDArray[np.int64]) -> None:
        self.n = n
        self.mask = mask
        self.excluded = np.unique(excluded)
        if mask is not None:
            mask[self.excluded] = False
            self.count = int(mask.sum())
        else:
            self.count = n - int(self.excluded.size)

    def passes(self, cand: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which candidate positions are allowed."""
        if self.mask is not None:
            out: NDArray[np.bool_] = self.mask[cand]
            return out
        return ~np.isin(cand, self.excluded)

    def positions(self) -> NDArray[np.int64]:
        """All allowed positions, ascending."""
        if self.mask is not None:
            return np.nonzero(self.mask)[0]
        return np.setdiff1d(np.arange(self.n, dtype=np.int64), self.excluded)


class ChangeIndex:
    """A cosine-similarity index over a catalog's change vectors (build with :meth:`build` or :meth:`open`).

    Attributes:
        catalog: The indexed catalog.
        params: The resolved index parameters.
        path: Where the index is persisted (``None`` = in memory).
        rebuilt: Whether :meth:`open` had to build the index (missing or stale files).
        subset_exact: Filtered queries scan the allowed events exactly when there are at most this many.
    """

    def __init__(self, catalog: Catalog, index: Any, params: IndexParams, path: Path | None = None) -> None:
        self.catalog = catalog
        self.index = index
        self.params = params
        self.path = path
        self.rebuilt = True
        self.subset_exact = 20_000

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # ------------------------------------------------------------------ building and persistence
    @classmethod
    def build(cls, catalog: Catalog, params: IndexParams | None = None) -> ChangeIndex:
        """Build an in-memory index (exact or approximate by ``params.kind``, see :class:`IndexParams`)."""
        resolved = (params or IndexParams()).resolve(len(catalog))
        return cls(catalog, build_index(catalog.vectors, resolved), resolved)

    @classmethod
    def open(
        cls,
        catalog: Catalog,
        params: IndexParams | None = None,
        *,
        path: PathLike | None = None,
        rebuild: bool = False,
    ) -> ChangeIndex:
        """Load the persisted index of ``catalog`` or build (and save) it when missing or stale.

        Args:
            catalog: The catalog to search.
            params: Index parameters; ``None`` accepts whatever a still-valid saved index used (default
                :class:`IndexParams` when building).
            path: Index file; default ``changes.faiss`` beside the catalog (in memory for merged catalogs).
            rebuild: Build even when a valid index exists.
        """
        target = Path(path) if path is not None else None
        if target is None and catalog.source is not None:
            target = catalog.source.with_name(INDEX_FILE)
        if target is not None and not rebuild:
            loaded = cls._load(catalog, target, params)
            if loaded is not None:
                return loaded
        built = cls.build(catalog, params)
        if target is not None:
            try:
                built.save(target)
            except OSError:
                built.path = None  # folder not writable: keep the index in memory
        return built

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(path.name + ".json")

    @classmethod
    def _load(cls, catalog: Catalog, path: Path, params: IndexParams | None) -> ChangeIndex | None:
        faiss = load_faiss()
        meta_path = cls._meta_path(path)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            saved = IndexParams.from_dict(meta["params"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if (
            meta.get("format") != INDEX_FORMAT
            or meta.get("fingerprint") != catalog.fingerprint
            or meta.get("n_events") != len(catalog)
            or meta.get("dim") != catalog.dim
        ):
            return None
        if params is not None:
            want = params.resolve(len(catalog)).to_dict()
            have = saved.to_dict()
            if {k: v for k, v in want.items() if k != "threads"} != {k: v for k, v in have.items() if k != "threads"}:
                return None
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:
            return None
        if int(index.ntotal) != len(catalog) or int(index.d) != catalog.dim:
            return None
        out = cls(catalog, index, saved, path)
        out.rebuilt = False
        return out

    def save(self, path: PathLike) -> Path:
        """Write the index and its JSON (atomically; the JSON last) and return the index path."""
        from changescope import __version__

        faiss = load_faiss()
        target = Path(path)
        meta_path = self._meta_path(target)
        meta_path.unlink(missing_ok=True)
        with atomic_path(target) as tmp:
            faiss.write_index(self.index, str(tmp))
        meta = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "params": self.params.to_dict(),
            "n_events": len(self.catalog),
            "dim": self.catalog.dim,
            "fingerprint": self.catalog.fingerprint,
            "faiss_version": str(getattr(faiss, "__version__", "unknown")),
            "changescope_version": __version__,
        }
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        self.path = target
        return target

    # ------------------------------------------------------------------ filters
    def _allowed(
        self, dates: DateRange | None, bbox: BBox | None, crs: Any, aois: list[str] | None
    ) -> NDArray[np.bool_] | None:
        """Mask of the events passing the filters, ``None`` when there is no filter (every event passes)."""
        if dates is None and bbox is None and aois is None:
            return None
        cat = self.catalog
        ok = np.ones(len(cat), dtype=bool)
        if dates is not None:
            if len(dates) != 2:
                raise ParameterError(f"dates={dates!r} must be a (start, end) pair; use None for an open side")
            a, b = _naive(dates[0]), _naive(dates[1])
            if a is not None and b is not None and a > b:
                raise ParameterError(f"dates={dates!r} starts after it ends; pass (start, end)")
            times = pd.DatetimeIndex(cat.frame["time"])
            if times.tz is not None:
                times = times.tz_convert("UTC").tz_localize(None)
            t = times.to_numpy()
            if a is not None:
                ok &= t >= a.to_datetime64()
            if b is not None:
                ok &= t <= b.to_datetime64()
        if aois is not None:
            known = set(cat.frame["aoi"].astype(str))
            unknown = sorted(set(aois) - known)
            if unknown:
                raise ParameterError(f"aois={unknown!r} not in the catalog; known AOIs: {sorted(known)!r}")
            ok &= cat.frame["aoi"].astype(str).isin(list(aois)).to_numpy()
        if bbox is not None:
            ok &= self._in_bbox(bbox, crs)
        return ok

    def _in_bbox(self, bbox: BBox, crs: Any) -> NDArray[np.bool_]:
        cat = self.catalog
        if len(bbox) != 4 or bbox[0] > bbox[2] or bbox[1] > bbox[3]:
            raise ParameterError(f"bbox={bbox!r} must be (minx, miny, maxx, maxy) with min <= max")
        if crs is None and cat.crs is None and len(cat.crs_names) > 1:
            raise ParameterError(
                f"bbox={bbox!r} is ambiguous: the catalogs are in {', '.join(cat.crs_names)}; pass crs= "
                "(e.g. 'EPSG:4326') to say which CRS the box is in"
            )
        b = cat.bounds
        which = cat.event_crs()
        out = np.zeros(len(cat), dtype=bool)
        for i, part_crs in enumerate(cat.part_crs):
            sel = which == i
            if not sel.any():
                continue
            box = bbox
            if crs is not None and part_crs is not None:
                from pyproj import CRS, Transformer

                src = CRS.from_user_input(crs)
                if src != part_crs:
                    tr = Transformer.from_crs(src, part_crs, always_xy=True)
                    box = tuple(tr.transform_bounds(*bbox, densify_pts=21))  # type: ignore[assignment]
            hit = (b[:, 2] >= box[0]) & (b[:, 0] <= box[2]) & (b[:, 3] >= box[1]) & (b[:, 1] <= box[3])
            out |= sel & hit
        return out

    # ------------------------------------------------------------------ query
    def query(
        self,
        query: str | NDArray[np.floating[Any]],
        k: int = 20,
        *,
        dates: DateRange | None = None,
        bbox: BBox | None = None,
        crs: Any = None,
        exclude_same_patch: bool = False,
        aois: list[str] | None = None,
    ) -> pd.DataFrame:
        """The ``k`` events whose change is most similar (cosine) to the query's.

        Args:
            query: An ``event_id`` of the catalog (that event is excluded from the results) or a vector shaped like
                the catalog's rows (a run's from-to descriptor ``[after - before, w * before]``,
                :meth:`~changescope.change.events.Events.descriptors`).
            k: Results wanted.
            dates: ``(start, end)`` inclusive; either may be ``None``.
            bbox: ``(minx, miny, maxx, maxy)``: keep events whose patch intersects it.
            crs: CRS of ``bbox`` (needed when the catalog mixes CRSs); default the catalog's CRS.
            exclude_same_patch: Drop events of the query's own patch (same AOI, row, col) at other dates.
            aois: Keep only these AOIs.

        Returns:
            The catalog rows of the results (a GeoDataFrame when the catalog has one CRS), best first, with a
            ``similarity`` column (cosine, in ``[-1, 1]``); fewer than ``k`` rows when fewer events pass the filters.

        Raises:
            EmptySeriesError: The catalog is empty.
            ParameterError: Unknown event id (close ids suggested), wrong vector size or bad filters.
        """
        cat = self.catalog
        cat.require_events()
        if int(k) < 1:
            raise ParameterError(f"k={k!r} must be >= 1 result")
        pos: int | None = None
        if isinstance(query, str):
            pos = cat.position(query)
            vec = cat.vectors[pos]
        else:
            vec = np.asarray(query, dtype=np.float32).reshape(-1)
            if vec.size != cat.dim:
                raise ParameterError(
                    f"query vector has {vec.size} values; this catalog's change vectors have {cat.dim}"
                )
            if exclude_same_patch:
                raise ParameterError("exclude_same_patch=True needs an event id as the query (a vector has no patch)")
        excluded = np.zeros(0, dtype=np.int64)
        if pos is not None:
            keys = cat.patch_keys
            excluded = np.nonzero(keys == keys[pos])[0] if exclude_same_patch else np.array([pos], dtype=np.int64)
        allowed = _Allowed(len(cat), self._allowed(dates, bbox, crs, aois), excluded)
        q = normalize_rows(vec[None, :])
        with omp_threads(1):
            ids, sims = self._search(q, min(int(k), allowed.count), allowed)
        result = cat.frame.iloc[ids].reset_index(drop=True)
        result.insert(1, "similarity", sims.astype(np.float64))
        return result

    def _search(self, q: NDArray[np.float32], k: int, allowed: _Allowed) -> tuple[NDArray[np.int64], Any]:
        n = len(self.catalog)
        n_allowed = allowed.count
        if k < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        frac = n_allowed / n
        if n_allowed <= self.subset_exact and frac <= 0.5:
            return self._exact_subset(q, k, allowed.positions())
        fetch = min(n, max(2 * k, math.ceil(2 * k / frac)) + 1)
        widen = 1
        max_widen = 1
        if self.params.kind == "ivf" and self.params.nlist:
            max_widen = math.ceil(self.params.nlist / (self.params.nprobe or 1))
        elif self.params.kind == "hnsw":
            max_widen = 64
        while True:
            sims, ids = search_index(self.index, q, fetch, self.params, widen=widen)
            got = ids[0] >= 0
            cand, cs = ids[0][got], sims[0][got]
            keep = allowed.passes(cand)
            if keep.sum() >= k or (fetch >= n and got.all()):
                order = np.lexsort((cand[keep], -cs[keep]))[:k]
                return cand[keep][order], cs[keep][order]
            if not got.all() and widen < max_widen:
                widen = min(widen * 2, max_widen)  # the probed lists ran out: probe wider
            elif fetch >= min(n, MAX_FETCH):
                return self._exact_subset(q, k, allowed.positions())
            fetch = min(n, fetch * 4)

    def _exact_subset(
        self, q: NDArray[np.float32], k: int, idx: NDArray[np.int64], chunk: int = 262_144
    ) -> tuple[NDArray[np.int64], Any]:
        best_ids = np.zeros(0, dtype=np.int64)
        best_sims = np.zeros(0, dtype=np.float32)
        for start in range(0, idx.size, chunk):
            part = idx[start : start + chunk]
            s = normalize_rows(self.catalog.vectors[part]) @ q[0]
            ids = np.concatenate([best_ids, part])
            sims = np.concatenate([best_sims, s.astype(np.float32)])
            top = np.lexsort((ids, -sims))[:k]
            best_ids, best_sims = ids[top], sims[top]
        return best_ids, best_sims
