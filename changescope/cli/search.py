"""``changescope search``: find changes like a given one across dates and AOIs of one or more catalogs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from changescope.types import IndexKind

if TYPE_CHECKING:
    from changescope.discover.search import ChangeIndex

__all__ = ["register", "search"]

_SHOW = {"magnitude": "mag", "cluster": "cluster", "rarity": "rarity", "rank": "rank", "confirmed": "conf"}
"""Columns shown after the event id (which already says AOI, date, row and col), with their headers."""


def _cell(value: Any) -> str:
    import numpy as np

    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return "n/a" if not np.isfinite(value) else f"{float(value):.3f}"
    return str(value)


def _table(frame: Any, title: str, with_similarity: bool) -> Table:
    table = Table(title=title, title_justify="left")
    cols = [*(["similarity"] if with_similarity else []), *(c for c in _SHOW if c in frame.columns)]
    id_width = int(frame["event_id"].astype(str).str.len().max()) if len(frame) else 8
    table.add_column("#", justify="right", min_width=len(str(len(frame))), no_wrap=True)
    table.add_column("event_id", min_width=id_width, no_wrap=True)
    for c in cols:
        table.add_column(_SHOW.get(c, "sim"), justify="right", no_wrap=True)
    for i, rec in enumerate(frame[["event_id", *cols]].itertuples(index=False), start=1):
        table.add_row(str(i), *(_cell(v) for v in rec))
    return table


def _records(frame: Any) -> list[dict[str, Any]]:
    import numpy as np
    import pandas as pd

    out = []
    for _, rec in frame.iterrows():
        item: dict[str, Any] = {}
        for c, v in rec.items():
            if c == "geometry":
                item["bounds"] = [float(x) for x in v.bounds] if v is not None else None
            elif isinstance(v, pd.Timestamp):
                item[str(c)] = v.isoformat()
            elif isinstance(v, np.generic):
                item[str(c)] = v.item()
            else:
                item[str(c)] = v
        out.append(item)
    return out


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from changescope.io.writers import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")


def _describe(index: ChangeIndex) -> str:
    p = index.params
    detail = f"nlist {p.nlist}, nprobe {p.nprobe}" if p.kind == "ivf" else f"M {p.hnsw_m}" if p.kind == "hnsw" else ""
    if index.path is None:
        state = "built in memory"
    else:
        state = f"{'built and saved to' if index.rebuilt else 'loaded from'} {index.path}"
    return f"search index: {p.kind}{f' ({detail})' if detail else ''}, {state}"


def search(
    catalogs: Annotated[
        list[Path],
        typer.Argument(
            metavar="CATALOG", help="Run folders (or their changes.parquet); several are searched together."
        ),
    ],
    like: Annotated[
        str | None,
        typer.Option("--like", metavar="EVENT_ID", help="Event to find similar changes to; omit to list events."),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--top", help="Number of results.")] = 20,
    dates: Annotated[
        str | None, typer.Option("--dates", metavar="START/END", help="Keep events dated in this range (inclusive).")
    ] = None,
    bbox: Annotated[
        str | None,
        typer.Option("--bbox", metavar="MINX,MINY,MAXX,MAXY", help="Keep events whose patch intersects this box."),
    ] = None,
    crs: Annotated[
        str | None, typer.Option("--crs", help="CRS of --bbox (needed when the catalogs' CRSs differ).")
    ] = None,
    aoi: Annotated[list[str] | None, typer.Option("--aoi", help="Keep only this AOI (repeatable).")] = None,
    exclude_same_patch: Annotated[
        bool, typer.Option("--exclude-same-patch", help="Drop the query patch's own events at other dates.")
    ] = False,
    index_kind: Annotated[
        IndexKind, typer.Option("--index", help="Index kind: auto (exact when small), flat, ivf or hnsw.")
    ] = "auto",
    json_path: Annotated[
        Path | None, typer.Option("--json", metavar="OUT", help="Also write the results as JSON.")
    ] = None,
) -> None:
    """Find the changes most like --like EVENT_ID (cosine similarity of change vectors) in one or more catalogs.

    Without --like, list the catalog's events in rank order (the ones to look at first), to pick an EVENT_ID.
    Each catalog's search index is saved beside it (changes.faiss) and rebuilt when the catalog changes.
    """
    from changescope.discover.catalog import Catalog
    from changescope.discover.index import IndexParams
    from changescope.discover.search import ChangeIndex, parse_bbox, parse_dates
    from changescope.errors import ParameterError

    if k < 1:
        raise ParameterError(f"-k {k!r} must be >= 1 result")
    date_range = parse_dates(dates) if dates is not None else None
    box = parse_bbox(bbox) if bbox is not None else None
    console = Console(highlight=False)
    catalog = Catalog.merge([Catalog.open(p) for p in catalogs])
    catalog.require_events()
    n_cat = len(catalogs)
    where = f"{len(catalog)} events of {n_cat} catalog{'s' if n_cat > 1 else ''}"
    if like is None:
        frame = catalog.frame
        key = "rank" if "rank" in frame.columns else "magnitude" if "magnitude" in frame.columns else "event_id"
        top = frame.sort_values([key], ascending=key != "magnitude", kind="stable").head(k)
        console.print(_table(top, escape(f"Top {len(top)} of {where} by {key}"), with_similarity=False))
        console.print("pick an event_id and run again with --like EVENT_ID")
        if json_path is not None:
            _write_json(json_path, {"query": None, "results": _records(top)})
        return
    catalog.position(like)  # an unknown event id fails before the index is built and saved
    index = ChangeIndex.open(catalog, IndexParams(kind=index_kind))
    results = index.query(like, k, dates=date_range, bbox=box, crs=crs, exclude_same_patch=exclude_same_patch, aois=aoi)
    q = catalog.frame.iloc[catalog.position(like)]
    q_desc = f"{q['time']:%Y-%m-%d}" + (f", cluster {q['cluster']}" if "cluster" in q.index else "")
    title = escape(f"{len(results)} events like {like} ({q_desc}) in {where}")
    if results.empty:
        console.print(f"no event passes the filters in {where}; widen --dates/--bbox/--aoi")
    else:
        console.print(_table(results, title, with_similarity=True))
    console.print(f"[dim]{escape(_describe(index))}[/]")
    if json_path is not None:
        filters = {
            "dates": dates,
            "bbox": list(box) if box is not None else None,
            "crs": crs,
            "aois": aoi,
            "exclude_same_patch": exclude_same_patch,
        }
        payload = {
            "query": {"event_id": like, "k": k, "catalogs": [str(p) for p in catalogs], "filters": filters},
            "index": index.params.to_dict(),
            "results": _records(results),
        }
        _write_json(json_path, payload)
        console.print(f"results written to {json_path}")


def register(app: typer.Typer) -> None:
    """Add the ``search`` command to ``app``."""
    app.command("search")(search)
