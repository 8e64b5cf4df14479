"""``RUN_DIR/report.html``: the analyst's self-contained report of a finished run.

The page has no external reference: every image is a base64 PNG ``data:`` URI, the CSS is inline and the only
script is a few inline lines that record, on ``<body data-images-loaded="OK/TOTAL">``, how many images decoded
(for headless checks). Sections: AOI overview, score maps, ranked changes, change types (examples and hierarchy),
evaluation (when ``metrics.json`` is present), embedding maps (when ``explore`` wrote them) and run parameters.
The same run gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from changescope.errors import ParameterError
from changescope.io.writers import atomic_path
from changescope.patch_scores import PatchScores
from changescope.report.figures import curve_figure
from changescope.report.images import bytes_uri, figure_uri
from changescope.report.sections import (
    Imagery,
    clusters_section,
    esc,
    gallery_section,
    img_tag,
    overview_section,
    scores_section,
)
from changescope.rundir import RunDir
from changescope.storepath import AnyPath, StorePath, as_path
from changescope.types import PathLike

__all__ = ["SECTIONS", "build_report"]

SECTIONS = {
    "overview": "AOI overview",
    "scores": "Score maps",
    "gallery": "Ranked changes",
    "clusters": "Change types",
    "evaluation": "Evaluation",
    "explore": "Embedding maps",
    "parameters": "Run parameters and versions",
}
"""Section id -> heading, in page order."""

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1240px;
padding:0 16px 40px;color:#222;background:#fafafa}
h1{margin:18px 0 4px}h2{border-bottom:2px solid #ccd;padding-bottom:4px;margin-top:32px}
nav a{margin-right:12px;color:#336}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:10px}
.card{margin:0;background:#fff;border:1px solid #ddd;padding:4px}.card img{width:100%;image-rendering:pixelated}
figcaption{font-size:12px;color:#555;text-align:center}
.events{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:10px}
.event{background:#fff;border:1px solid #ddd;padding:6px}.event p{font-size:12px;margin:4px 0 0}
.pair{display:flex;gap:4px}.thumb{width:128px;height:auto;image-rendering:pixelated}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#eef}.figure img{max-width:100%}.legend img{max-width:420px}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs img{max-width:600px}
"""

_SCRIPT = (
    "<script>window.addEventListener('load',function(){var a=document.images,n=0;"
    "for(var i=0;i<a.length;i++){if(a[i].complete&&a[i].naturalWidth>0){n++;}}"
    "document.body.setAttribute('data-images-loaded',n+'/'+a.length);});</script>"
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return esc(json.dumps(value, default=str))
    return esc(value)


def _kv_table(data: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in data.items())
    return f"<table>{rows}</table>"


def _scalars(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, int | float | str | bool) or v is None}


def _grid_table(data: Mapping[str, Any], key: str) -> str:
    """A table of ``{name: {metric: value}}`` (rows: names, columns: the scalar metrics)."""
    rows = {str(k): _scalars(v) for k, v in data.items() if isinstance(v, Mapping)}
    if not rows:
        return _kv_table(_scalars(data))
    cols = sorted({c for r in rows.values() for c in r})
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join(
        "<tr><th>" + esc(name) + "</th>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>"
        for name, r in rows.items()
    )
    return f"<table><tr><th>{esc(key)}</th>{head}</tr>{body}</table>"


def _evaluation(root: AnyPath) -> str:
    path = root / "metrics.json"
    if not path.exists():
        return ""
    metrics: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    patch = metrics.get("patch") or {}
    figs = []
    for kind, x_key, y_key, value in (("roc", "fpr", "tpr", "auc"), ("pr", "recall", "precision", "ap")):
        png = root / "figures" / f"{kind}.png"
        if png.exists():
            figs.append(img_tag(bytes_uri(png.read_bytes()), f"{kind} curve"))
        elif isinstance(patch.get(kind), Mapping) and patch[kind].get(x_key):
            curve = patch[kind]
            val = patch.get(value)
            figs.append(img_tag(figure_uri(curve_figure(curve[x_key], curve[y_key], kind, val)), f"{kind} curve"))
    parts = [f'<section id="evaluation"><h2>{SECTIONS["evaluation"]}</h2>']
    parts.append(f'<div class="figs">{"".join(figs)}</div>')
    parts.append("<h3>Patch level</h3>" + _kv_table(_scalars(patch)))
    for key, title in (("by_type", "By change type"), ("by_date", "By date")):
        if isinstance(metrics.get(key), Mapping) and metrics[key]:
            parts.append(f"<h3>{title}</h3>" + _grid_table(metrics[key], key.removeprefix("by_")))
    if isinstance(metrics.get("pixel"), Mapping):
        parts.append("<h3>Pixel level</h3>" + _kv_table(_scalars(metrics["pixel"])))
    parts.append("</section>")
    return "".join(parts)


def _explore(root: AnyPath) -> str:
    found: list[AnyPath] = [*(root / "figures").glob("explore_*.png")]
    pngs = sorted(found, key=str)
    if not pngs:
        return ""
    imgs = "".join(img_tag(bytes_uri(p.read_bytes()), p.stem) for p in pngs)
    return (
        f'<section id="explore"><h2>{SECTIONS["explore"]}</h2><p>2-D maps written by <code>changescope explore'
        f'</code>.</p><div class="figs">{imgs}</div></section>'
    )


def _parameters(info: Mapping[str, Any]) -> str:
    general = {
        k: info[k] for k in ("source", "aoi", "n_dates", "grid", "threshold", "n_events", "n_confirmed") if k in info
    }
    return (
        f'<section id="parameters"><h2>{SECTIONS["parameters"]}</h2>{_kv_table(general)}'
        f"<h3>Configuration</h3>{_kv_table(info.get('config', {}))}"
        f"<h3>Timings (s)</h3>{_kv_table(info.get('timings_s', {}))}"
        f"<h3>Versions</h3>{_kv_table(info.get('versions', {}))}</section>"
    )


def build_report(run_dir: PathLike | StorePath, *, top: int = 24, max_px: int = 256) -> AnyPath:
    """Write ``RUN_DIR/report.html``, a self-contained HTML report of a finished run (see the module docstring).

    Args:
        run_dir: A finished run (``changescope run``), local or in an object store; its series is re-opened from
            ``run.json``'s source.
        top: Ranked changes shown in the gallery.
        max_px: Longest side of the per-date quicklooks.

    Returns:
        The path of the report.

    Raises:
        ParameterError: ``run_dir`` holds no finished run.
    """
    from changescope.discover.summary import read_clusters_json
    from changescope.grid import PatchGrid

    if max_px < 16:
        raise ParameterError(f"--max-px {max_px!r} is too small for a quicklook; pass 16 or more (default 256)")
    if top < 0:
        raise ParameterError(f"--top {top!r} must be >= 0 (ranked changes shown in the gallery)")
    root = as_path(run_dir)
    rd = RunDir(root)
    info = rd.load()
    ds = rd.open_input(info)
    if ds is None:
        raise ParameterError(
            f"the input of run {str(root)!r} ({info.get('source')!r}) is gone; the report shows its imagery, so "
            "restore the input or rerun `changescope run`"
        )
    g = info.get("grid", {})
    grid = PatchGrid.for_series(ds, int(g.get("size", info["config"]["patch_size"])), g.get("stride"))
    im = Imagery(ds, max_px=max_px)
    cube = PatchScores.read(rd.patch_scores, grid.shape, im.times).score
    events = pd.DataFrame(rd.read_changes().drop(columns="geometry"))
    events["stride"] = grid.stride
    clusters = read_clusters_json(root / "clusters.json") if (root / "clusters.json").exists() else {}
    threshold = info.get("threshold")
    threshold = float(threshold) if threshold is not None and np.isfinite(threshold) else None
    body = [
        overview_section(im),
        scores_section(im, cube, grid, threshold),
        gallery_section(im, events, grid.size, top),
        clusters_section(im, events, clusters, grid.size),
        _evaluation(root),
        _explore(root),
        _parameters(info),
    ]
    present = [sid for sid in SECTIONS if f'<section id="{sid}">' in "".join(body)]
    nav = "".join(f'<a href="#{sid}">{SECTIONS[sid]}</a>' for sid in present)
    title = f"changescope report: {info.get('aoi', root.name)}"
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>{info.get('n_events', len(events))} changes over {len(im.times)} dates; "
        f"source <code>{esc(info.get('source', ''))}</code>.</p><nav>{nav}</nav>"
        f"{''.join(body)}{_SCRIPT}</body></html>\n"
    )
    out = root / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
