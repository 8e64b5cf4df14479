"""The web app's logic, free of HTTP: the served runs, the ranked and filtered list, the search, the labels.

:class:`Workbench` is what every route calls; the FastAPI layer (:mod:`changescope.serve.app`) only validates
requests and turns :class:`~changescope.errors.NotFoundError` into 404 and
:class:`~changescope.errors.ParameterError` into 400.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from changescope.errors import NotFoundError, ParameterError
from changescope.serve.imagery import PngCache
from changescope.serve.ranking import feedback_query, feedback_tiers
from changescope.serve.runs import ServedRun, run_ids

__all__ = ["SORT_KEYS", "Workbench"]

SORT_KEYS = ("rank", "rarity", "magnitude", "score", "date")


class Workbench:
    """The run folders the app serves.

    Args:
        roots: Run folders (finished runs).
        cache_bytes: Bound of the PNG cache.

    Raises:
        ParameterError: No run folder, or one that is not a finished run.
    """

    def __init__(self, roots: Sequence[Path], cache_bytes: int = 256 * 2**20) -> None:
        if not roots:
            raise ParameterError("give at least one RUN_DIR (the --out of `changescope run`)")
        resolved = [Path(r).resolve() for r in roots]
        if len(set(resolved)) != len(resolved):
            raise ParameterError("a RUN_DIR is given twice; give each run folder once")
        self.cache = PngCache(cache_bytes)
        self.runs = {
            rid: ServedRun(root, rid, self.cache) for rid, root in zip(run_ids(resolved), resolved, strict=True)
        }
        self._index_lock = threading.Lock()
        self._indexes: dict[int, Any] = {}

    def run(self, run_id: str) -> ServedRun:
        """A served run by id.

        Raises:
            NotFoundError: No such run.
        """
        if run_id not in self.runs:
            raise NotFoundError(f"no served run {run_id!r}; the runs are {sorted(self.runs)}")
        return self.runs[run_id]

    # ------------------------------------------------------------------ listing
    def _ranked(self, run: ServedRun) -> pd.DataFrame:
        """The run's events with ``tier`` and ``feedback_rank`` (1-based, best first, across tiers)."""
        events, types = run.feedback.as_maps()
        ev = run.events.copy()
        ev["tier"] = feedback_tiers(list(ev["event_id"]), list(ev["cluster"]), events, types)
        order = np.lexsort((ev["rank"].to_numpy(), ev["tier"].to_numpy()))
        fr = np.empty(len(ev), dtype=np.int64)
        fr[order] = np.arange(1, len(ev) + 1)
        ev["feedback_rank"] = fr
        ev["pos"] = np.arange(len(ev))
        return ev

    def changes(
        self,
        run_id: str | None = None,
        sort: str = "rank",
        order: str | None = None,
        clusters: Sequence[int] = (),
        date_from: str | None = None,
        date_to: str | None = None,
        status: str = "all",
        bbox: tuple[float, float, float, float] | None = None,
        label: str = "all",
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """The filtered, sorted list (``{total, items}``), see ``docs/webapp.md``.

        Raises:
            ParameterError: A bad sort key, order, status, label or date, or ``bbox`` without ``run``.
            NotFoundError: Unknown run.
        """
        if sort not in SORT_KEYS:
            raise ParameterError(f"sort={sort!r} must be one of {SORT_KEYS}")
        if order not in (None, "asc", "desc"):
            raise ParameterError(f"order={order!r} must be asc or desc")
        if status not in ("all", "confirmed", "pending"):
            raise ParameterError(f"status={status!r} must be all, confirmed or pending")
        if label not in ("all", "relevant", "irrelevant", "unlabelled"):
            raise ParameterError(f"label={label!r} must be all, relevant, irrelevant or unlabelled")
        if bbox is not None and run_id is None:
            raise ParameterError("bbox is in one run's pixel space; give run= with it")
        try:
            start = pd.Timestamp(date_from) if date_from else None
            end = pd.Timestamp(date_to) if date_to else None
        except ValueError as err:
            raise ParameterError(f"date_from/date_to must be ISO dates like 2018-03-01 ({err})") from None
        runs = [self.run(run_id)] if run_id is not None else list(self.runs.values())
        parts = []
        for run in runs:
            ev = self._ranked(run)
            keep = np.ones(len(ev), dtype=bool)
            if clusters:
                keep &= ev["cluster"].isin(list(clusters)).to_numpy()
            if start is not None:
                keep &= (ev["time"] >= start).to_numpy()
            if end is not None:
                keep &= (ev["time"] <= end).to_numpy()
            if status != "all":
                keep &= (ev["status"] == status).to_numpy()
            if label != "all":
                tier = ev["tier"].to_numpy()
                keep &= {"relevant": tier <= 1, "irrelevant": tier >= 3, "unlabelled": tier == 2}[label]
            if bbox is not None:
                x0, x1 = ev["x0"].to_numpy(), ev["x0"].to_numpy() + run.size
                y_top, y_bot = -ev["y0"].to_numpy(), -(ev["y0"].to_numpy() + run.size)
                keep &= (x1 >= bbox[0]) & (x0 <= bbox[2]) & (y_top >= bbox[1]) & (y_bot <= bbox[3])
            sel = ev[keep].copy()
            sel["run_id"] = run.id
            parts.append(sel)
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        total = len(frame)
        if total:
            column = {"rank": "feedback_rank", "date": "time"}.get(sort, sort)
            ascending = order == "asc" if order else sort in ("rank", "date")
            frame = frame.sort_values(
                [column, "feedback_rank", "run_id"],
                ascending=[ascending, True, True],
                na_position="last",
                kind="stable",
            )
        page = frame.iloc[offset : offset + limit] if total else frame
        items = []
        for rec in page.itertuples(index=False):
            run = self.runs[str(rec.run_id)]
            events, types = run.feedback.as_maps()
            item = run.item(int(str(rec.pos)), events, types)
            item["feedback_rank"] = int(str(rec.feedback_rank))
            items.append(item)
        return {"total": total, "items": items}

    def detail(self, run_id: str, event_id: str) -> dict[str, Any]:
        """``ChangeDetail`` of one change.

        Raises:
            NotFoundError: Unknown run or change.
        """
        run = self.run(run_id)
        pos = run.position(event_id)
        ranked = self._ranked(run)
        events, types = run.feedback.as_maps()
        item = run.item(pos, events, types)
        item["feedback_rank"] = int(ranked["feedback_rank"].iloc[pos])
        series = run.series_of(pos)
        clear = series.pop("clear")
        return {"item": item, "series": series, "clear": clear, "cluster": run.cluster_info(item["cluster"])}

    # ------------------------------------------------------------------ search
    def _index(self, dim: int) -> tuple[Any, list[tuple[str, str]]]:
        """The search index over every served run whose change vectors have ``dim`` values, and its row keys."""
        from changescope.discover.catalog import Catalog
        from changescope.discover.search import ChangeIndex

        with self._index_lock:
            if dim not in self._indexes:
                runs = [r for r in self.runs.values() if r.catalog.dim == dim and len(r.catalog)]
                keys = [(r.id, str(e)) for r in runs for e in r.events["event_id"]]
                frame = pd.DataFrame(
                    {
                        "event_id": [f"{rid}/{eid}" for rid, eid in keys],
                        "aoi": np.concatenate([r.events["aoi"].to_numpy() for r in runs]),
                        "row": np.concatenate([r.events["row"].to_numpy() for r in runs]),
                        "col": np.concatenate([r.events["col"].to_numpy() for r in runs]),
                        "time": pd.DatetimeIndex(np.concatenate([r.events["time"].to_numpy() for r in runs])),
                        "geometry": np.concatenate([np.asarray(r.catalog.frame.geometry, dtype=object) for r in runs]),
                    }
                )
                vectors = np.vstack([r.catalog.vectors for r in runs])
                self._indexes[dim] = (ChangeIndex.build(Catalog.from_frame(frame, vectors)), keys)
            return self._indexes[dim]  # type: ignore[no-any-return]

    def similar(
        self,
        run_id: str,
        event_id: str,
        k: int = 20,
        use_feedback: bool = True,
        runs: Sequence[str] | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        exclude_same_patch: bool = True,
    ) -> dict[str, Any]:
        """Changes like this one over every served run (``docs/webapp.md``), steered by the labels.

        Raises:
            NotFoundError: Unknown run or change.
            ParameterError: Bad ``k`` or dates.
        """
        from changescope.discover.search import parse_dates

        run = self.run(run_id)
        pos = run.position(event_id)
        allowed_runs = set(runs) if runs else set(self.runs)
        for rid in allowed_runs:
            self.run(rid)
        if not 1 <= int(k) <= 500:
            raise ParameterError(f"k={k!r} must be 1-500")
        dates = parse_dates(f"{date_from or ''}/{date_to or ''}", "date_from/date_to") if date_from or date_to else None
        index, keys = self._index(run.catalog.dim)
        where = {key: i for i, key in enumerate(keys)}
        labels = {rid: r.feedback.as_maps() for rid, r in self.runs.items()}
        tiers = np.full(len(keys), 2, dtype=np.int64)
        start = 0
        for rid, r in self.runs.items():
            if r.catalog.dim != run.catalog.dim or not len(r.catalog):
                continue
            ev_labels, type_labels = labels[rid]
            tiers[start : start + len(r.events)] = feedback_tiers(
                list(r.events["event_id"]), list(r.events["cluster"]), ev_labels, type_labels
            )
            start += len(r.events)
        rel, irr = list(np.nonzero(tiers == 0)[0]), list(np.nonzero(tiers == 4)[0])
        banned = set(np.nonzero(tiers >= 3)[0].tolist())
        vecs = index.catalog.vectors
        qpos = where[(run.id, event_id)]
        if use_feedback:
            query = feedback_query(vecs[qpos], vecs[[i for i in rel if i != qpos]], vecs[irr])
        else:
            query = feedback_query(vecs[qpos])
            banned = set()
        want = int(k)
        own_patch = (run.id, int(run.events["row"].iloc[pos]), int(run.events["col"].iloc[pos]))
        same = int(((run.events["row"] == own_patch[1]) & (run.events["col"] == own_patch[2])).sum())
        elsewhere = sum(len(r.events) for r in self.runs.values() if r.id not in allowed_runs)
        fetch = want + len(banned) + same + elsewhere + 1
        frame = index.query(query, min(fetch, len(keys)), dates=dates)
        items = []
        for rec in frame.itertuples(index=False):
            rid, eid = str(rec.event_id).split("/", 1)
            i = where[(rid, eid)]
            if i == qpos or i in banned or rid not in allowed_runs:
                continue
            other = self.runs[rid]
            p = other.position(eid)
            if (
                exclude_same_patch
                and (rid, int(other.events["row"].iloc[p]), int(other.events["col"].iloc[p])) == own_patch
            ):
                continue
            ev_labels, type_labels = labels[rid]
            item = other.item(p, ev_labels, type_labels)
            item["similarity"] = float(rec.similarity)
            item["feedback_rank"] = None
            items.append(item)
            if len(items) == want:
                break
        return {
            "query": {"run": run.id, "event_id": event_id},
            "items": items,
            "used": {"relevant": len(rel) if use_feedback else 0, "irrelevant": len(irr) if use_feedback else 0},
        }

    # ------------------------------------------------------------------ labels
    def set_label(self, run_id: str, event_id: str | None, cluster: int | None, label: str) -> dict[str, Any]:
        """Store a label for a change or a whole type (``label="none"`` removes it).

        Raises:
            NotFoundError: Unknown run, change or type.
            ParameterError: Neither or both of ``event_id`` and ``cluster``.
        """
        run = self.run(run_id)
        if (event_id is None) == (cluster is None):
            raise ParameterError("give either event_id or cluster, not both")
        if event_id is not None:
            run.position(event_id)
            kind, key = "event", event_id
        else:
            if cluster is None or cluster < 0 or cluster not in set(run.events["cluster"]):
                raise NotFoundError(f"run {run.id!r} has no change type {cluster!r}")
            kind, key = "type", str(cluster)
        stored = run.feedback.set(kind, key, None if label == "none" else label)
        return {
            "run": run.id,
            "event_id": event_id,
            "cluster": cluster,
            "label": None if stored is None else stored.label,
            "updated": None if stored is None else stored.updated,
        }

    def labels(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every stored label of one or every run."""
        runs = [self.run(run_id)] if run_id is not None else list(self.runs.values())
        return [
            {
                "run": r.id,
                "event_id": lab.key if lab.kind == "event" else None,
                "cluster": int(lab.key) if lab.kind == "type" else None,
                "label": lab.label,
                "updated": lab.updated,
            }
            for r in runs
            for lab in r.feedback.labels()
        ]

    def export(self, run_id: str) -> bytes:
        """GeoParquet bytes of the run's labelled changes (their catalog rows, CRS and a ``label`` column)."""
        run = self.run(run_id)
        events, types = run.feedback.as_maps()
        tiers = feedback_tiers(list(run.events["event_id"]), list(run.events["cluster"]), events, types)
        keep = tiers != 2
        frame = run.catalog.frame[keep].copy()
        frame["label"] = np.where(tiers[keep] <= 1, "relevant", "irrelevant")
        frame["label_source"] = np.where(np.isin(tiers[keep], (0, 4)), "event", "type")
        frame["run"] = run.id
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue()

    # ------------------------------------------------------------------ types
    def types(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """The type hierarchy of one or every run as ``TypeNode`` trees."""
        runs = [self.run(run_id)] if run_id is not None else list(self.runs.values())
        return [{"run": r.id, "tree": _type_tree(r)} for r in runs]


def _type_tree(run: ServedRun) -> dict[str, Any]:
    """``TypeNode`` root: the clustering's hierarchy, plus the unclustered changes as their own node."""
    _, type_labels = run.feedback.as_maps()
    examples = {int(c["cluster"]): list(c.get("examples", [])) for c in run.clusters.get("clusters", [])}
    counts = run.events["cluster"].value_counts()

    def node(n: dict[str, Any]) -> dict[str, Any]:
        children = [node(ch) for ch in n.get("children", [])]
        cluster = n.get("cluster") if not children else None
        c = -2 if cluster is None else int(cluster)
        return {
            "id": int(n["id"]),
            "size": int(n.get("size", 0)),
            "cluster": None if cluster is None else c,
            "label": run.type_labels.get(c, f"{len(children)} sub-types, {n.get('size', 0)} changes"),
            "color": run.color(c) if cluster is not None else "#444444",
            "distance": n.get("distance"),
            "children": children,
            "examples": examples.get(c, [])[:6] if cluster is not None else [],
            "feedback": type_labels.get(c) if cluster is not None else None,
        }

    tree = run.clusters.get("hierarchy", {}).get("tree")
    kids = (
        [node(tree)]
        if isinstance(tree, dict)
        else [node({"id": int(c), "cluster": int(c), "size": int(counts[c])}) for c in sorted(counts.index) if c >= 0]
    )
    n_noise = int(counts.get(-1, 0))
    if n_noise:
        noise_examples = list(run.events.loc[run.events["cluster"] == -1].sort_values("rank")["event_id"][:6])
        kids.append(
            {
                "id": -1,
                "size": n_noise,
                "cluster": -1,
                "label": "unclustered",
                "color": run.color(-1),
                "distance": None,
                "children": [],
                "examples": noise_examples,
                "feedback": None,
            }
        )
    return {
        "id": -100,
        "size": len(run.events),
        "cluster": None,
        "label": f"all changes of {run.id}",
        "color": "#444444",
        "distance": None,
        "children": kids,
        "examples": [],
        "feedback": None,
    }
