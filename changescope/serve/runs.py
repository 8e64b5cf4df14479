"""One served run folder: its catalog, scores, change types, labels and images, in the web app's terms.

A :class:`ServedRun` reads a finished run folder once (``run.json``, ``changes.parquet`` and its vectors,
``patch_scores.parquet``, ``clusters.json``, ``metrics.json``, the ``figures`` it has) and re-opens the run's
input lazily, for images only. Everything a request names is looked up in these tables; no request value is ever
joined to a path, except a figure name that must be one of the names listed at start-up.
"""

from __future__ import annotations

import json
import re
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from changescope.discover.catalog import CLUSTERS_FILE, Catalog
from changescope.discover.summary import read_clusters_json
from changescope.errors import NotFoundError
from changescope.patch_scores import PatchScores
from changescope.rundir import RunDir
from changescope.serve.feedback import FeedbackStore
from changescope.serve.imagery import PngCache, RunImagery

__all__ = ["CLEAR_FRACTION", "PALETTE", "ServedRun", "run_ids"]

CLEAR_FRACTION = 0.9
"""A patch is *clear* at a date when at least this share of its pixels is valid (thumbnails use only these)."""
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
NOISE_COLOR = "#9e9e9e"
_FIGURE = re.compile(r"^[A-Za-z0-9_\-]+\.png$")


def run_ids(roots: list[Path]) -> list[str]:
    """Short unique ids for run folders: the folder name, made unique with its parent's name or a number."""
    names = [re.sub(r"[^A-Za-z0-9_\-]", "_", r.name) or "run" for r in roots]
    out: list[str] = []
    for i, (root, name) in enumerate(zip(roots, names, strict=True)):
        if names.count(name) > 1:
            name = re.sub(r"[^A-Za-z0-9_\-]", "_", f"{root.parent.name}-{name}")
        while name in out:
            name = f"{name}-{i}"
        out.append(name)
    return out


def _iso(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d")


class ServedRun:
    """A finished run folder, as the web app serves it.

    Args:
        root: The run folder.
        run_id: Its id in URLs.
        cache: The PNG cache shared by the app.

    Raises:
        ParameterError: Not a finished run folder.
        CorruptFileError: Its files cannot be read.
    """

    def __init__(self, root: Path, run_id: str, cache: PngCache) -> None:
        self.root = Path(root).resolve()
        self.id = run_id
        self.rundir = RunDir(self.root)
        self.info: dict[str, Any] = self.rundir.load()
        self.catalog = Catalog.open(self.root)
        self.scores = PatchScores.read(self.root)
        self.dates = [_iso(t) or "" for t in self.scores.times]
        self.size, self.stride = int(self.scores.size), int(self.scores.stride)
        clusters = self.root / CLUSTERS_FILE
        self.clusters: dict[str, Any] = read_clusters_json(clusters) if clusters.is_file() else {}
        metrics = self.root / "metrics.json"
        self.metrics: dict[str, Any] | None = json.loads(metrics.read_text()) if metrics.is_file() else None
        figures = self.root / "figures"
        self.figures = sorted(
            p.name
            for p in (figures.iterdir() if figures.is_dir() and not figures.is_symlink() else [])
            if _FIGURE.match(p.name) and not p.is_symlink() and p.is_file()
        )
        self.feedback = FeedbackStore(self.root)
        self._ds_lock = threading.Lock()
        self._ds: xr.Dataset | None = None
        self._ds_tried = False
        self.imagery = RunImagery(self.series, self.root / "maps", self.dates, self.shape, self.stride, cache, run_id)
        self.events = self._event_table()

    # ------------------------------------------------------------------ the run
    @property
    def series(self) -> xr.Dataset | None:
        """The run's input series (``None`` when it is gone); opened once."""
        with self._ds_lock:
            if not self._ds_tried:
                self._ds_tried = True
                try:
                    self._ds = self.rundir.open_input(self.info)
                except (OSError, ValueError):
                    self._ds = None
            return self._ds

    @cached_property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image in pixels."""
        ds = self.series
        if ds is not None:
            return int(ds.sizes["y"]), int(ds.sizes["x"])
        rows, cols = self.scores.shape
        return (rows - 1) * self.stride + self.size, (cols - 1) * self.stride + self.size

    @cached_property
    def score_range(self) -> tuple[float, float]:
        """The colour scale of score overlays: 1st to 99.5th percentile of every finite score."""
        v = self.scores.score[np.isfinite(self.scores.score)]
        if not v.size:
            return 0.0, 1.0
        lo, hi = (float(x) for x in np.percentile(v, [1.0, 99.5]))
        return lo, hi if hi > lo else lo + 1.0

    @property
    def crs(self) -> str | None:
        """The catalog's CRS as text (``None`` for plain rasters)."""
        crs = self.catalog.crs
        return None if crs is None else str(crs.to_string())

    def figure(self, name: str) -> Path:
        """A figure listed at start-up (plain files only: a symlink is never listed, so never served).

        Raises:
            NotFoundError: ``name`` is not one of them.
        """
        path = self.root / "figures" / name
        if name not in self.figures or path.is_symlink() or not path.is_file():
            raise NotFoundError(f"run {self.id!r} has no figure {name!r}")
        return path

    # ------------------------------------------------------------------ types
    @cached_property
    def type_labels(self) -> dict[int, str]:
        """A short name per cluster: ``type N`` with its first and last date, ``unclustered`` for noise."""
        out = {-1: "unclustered"}
        for c in self.clusters.get("clusters", []):
            if c.get("noise"):
                continue
            first, last = c.get("first_date"), c.get("last_date")
            span = first if first == last else f"{first} to {last}"
            out[int(c["cluster"])] = f"type {c['cluster']} ({c.get('size', 0)} changes, {span})"
        return out

    def color(self, cluster: int) -> str:
        """The colour of a change type (grey for unclustered changes)."""
        return NOISE_COLOR if cluster < 0 else PALETTE[cluster % len(PALETTE)]

    def types(self) -> list[dict[str, Any]]:
        """``[{cluster, label, color, size}]`` for every type with changes."""
        counts = self.events["cluster"].value_counts()
        return [
            {
                "cluster": int(c),
                "label": self.type_labels.get(int(c), f"type {c}"),
                "color": self.color(int(c)),
                "size": int(counts[c]),
            }
            for c in sorted(counts.index)
        ]

    # ------------------------------------------------------------------ events
    def _event_table(self) -> pd.DataFrame:
        """The catalog's columns the app uses, plus the date index, pixel origin and nearest clear dates."""
        f = self.catalog.frame
        n = len(f)
        times = pd.DatetimeIndex(self.scores.times)
        ev_t = pd.DatetimeIndex(pd.to_datetime(f["time"])) if n else pd.DatetimeIndex([])
        t_idx = np.asarray(times.get_indexer(ev_t), dtype=np.int64)
        rows = f["row"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
        cols = f["col"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
        before, after = self._clear_neighbours(t_idx, rows, cols)

        def col(name: str, default: Any) -> Any:
            return f[name].to_numpy() if name in f.columns else np.full(n, default)

        table = pd.DataFrame(
            {
                "event_id": f["event_id"].astype(str).to_numpy() if n else np.zeros(0, dtype=object),
                "aoi": col("aoi", ""),
                "time": ev_t,
                "t": t_idx,
                "row": rows,
                "col": cols,
                "y0": rows * self.stride,
                "x0": cols * self.stride,
                "score": col("score", np.nan).astype(np.float64),
                "p_value": col("p_value", np.nan).astype(np.float64),
                "nfa": col("nfa", np.nan).astype(np.float64),
                "score_threshold": col("score_threshold", np.nan).astype(np.float64),
                "magnitude": col("magnitude", np.nan).astype(np.float64),
                "rarity": col("rarity", np.nan).astype(np.float64),
                "rank": col("rank", 0).astype(np.int64),
                "cluster": col("cluster", -1).astype(np.int64),
                "status": col("status", "confirmed"),
                "date_earliest": pd.to_datetime(col("date_earliest", pd.NaT)),
                "date_latest": pd.to_datetime(col("date_latest", pd.NaT)),
                "before": before,
                "after": after,
            }
        )
        if n and "rank" not in f.columns:
            table["rank"] = np.arange(1, n + 1)
        return table

    def clear_mask(self) -> NDArray[np.bool_]:
        """``(T, rows, cols)``: the patch is clear at the date."""
        vf = self.scores.valid_fraction
        if vf is None:
            return np.ones(self.scores.score.shape, dtype=bool)
        return np.asarray(np.nan_to_num(vf, nan=0.0) >= CLEAR_FRACTION)

    def _clear_neighbours(
        self, t: NDArray[np.int64], rows: NDArray[np.int64], cols: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Per event, the last clear date before it and the first clear date at or after it (-1: none)."""
        clear = self.clear_mask()
        before = np.full(len(t), -1, dtype=np.int64)
        after = np.full(len(t), -1, dtype=np.int64)
        for i, (ti, r, c) in enumerate(zip(t, rows, cols, strict=True)):
            if ti < 0:
                continue
            series = clear[:, r, c]
            prior = np.nonzero(series[:ti])[0]
            later = np.nonzero(series[ti:])[0]
            before[i] = int(prior[-1]) if prior.size else -1
            after[i] = int(ti + later[0]) if later.size else -1
        return before, after

    def position(self, event_id: str) -> int:
        """Row of an event in :attr:`events`.

        Raises:
            NotFoundError: No such event in this run.
        """
        pos = self.catalog.positions.get(event_id)
        if pos is None:
            raise NotFoundError(f"run {self.id!r} has no change {event_id!r}")
        return int(pos)

    def item(self, pos: int, events: dict[str, str], types: dict[int, str]) -> dict[str, Any]:
        """The ``ChangeItem`` of row ``pos`` (``docs/webapp.md``), with its label."""
        from changescope.serve.ranking import label_of

        r = self.events.iloc[pos]
        cluster = int(r["cluster"])
        label, source = label_of(str(r["event_id"]), cluster, events, types)
        y0, x0 = int(r["y0"]), int(r["x0"])

        def num(v: Any) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {
            "event_id": str(r["event_id"]),
            "run": self.id,
            "aoi": str(r["aoi"]),
            "date": _iso(r["time"]),
            "date_earliest": _iso(r["date_earliest"]),
            "date_latest": _iso(r["date_latest"]),
            "row": int(r["row"]),
            "col": int(r["col"]),
            "bbox": [x0, -(y0 + self.size), x0 + self.size, -y0],
            "score": num(r["score"]),
            "p_value": num(r["p_value"]),
            "nfa": num(r["nfa"]),
            "score_threshold": num(r["score_threshold"]),
            "magnitude": num(r["magnitude"]),
            "rarity": num(r["rarity"]),
            "rank": int(r["rank"]),
            "cluster": cluster,
            "type_label": self.type_labels.get(cluster, f"type {cluster}"),
            "color": self.color(cluster),
            "status": str(r["status"]),
            "label": label,
            "label_source": source,
            "before": int(r["before"]) if r["before"] >= 0 else None,
            "after": int(r["after"]) if r["after"] >= 0 else None,
        }

    def series_of(self, pos: int) -> dict[str, Any]:
        """The score and valid fraction of an event's patch at every date (``None`` where not scored)."""
        r, c = int(self.events["row"].iloc[pos]), int(self.events["col"].iloc[pos])
        score = self.scores.score[:, r, c]
        vf = self.scores.valid_fraction
        valid = vf[:, r, c] if vf is not None else np.ones(len(score))
        clear = np.nonzero(self.clear_mask()[:, r, c])[0]
        return {
            "dates": self.dates,
            "scores": [float(v) if np.isfinite(v) else None for v in score],
            "valid": [float(v) if np.isfinite(v) else None for v in valid],
            "clear": [int(i) for i in clear],
        }

    def cluster_info(self, cluster: int) -> dict[str, Any]:
        """A type's size, label, examples and its path of node ids from the hierarchy's root."""
        summary: dict[str, Any] = next(
            (c for c in self.clusters.get("clusters", []) if int(c["cluster"]) == cluster), {}
        )
        path: list[int] = []

        def walk(node: dict[str, Any], trail: list[int]) -> bool:
            here = [*trail, int(node["id"])]
            if node.get("cluster") == cluster and "children" not in node:
                path.extend(here)
                return True
            return any(walk(ch, here) for ch in node.get("children", []))

        tree = self.clusters.get("hierarchy", {}).get("tree")
        if cluster >= 0 and isinstance(tree, dict):
            walk(tree, [])
        return {
            "cluster": cluster,
            "label": self.type_labels.get(cluster, f"type {cluster}"),
            "size": int((self.events["cluster"] == cluster).sum()),
            "path": path,
            "examples": [str(e) for e in summary.get("examples", [])],
        }
