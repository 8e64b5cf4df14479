"""The imagery sections of the report: AOI quicklooks, score maps, the ranked-change gallery, cluster examples.

Each ``*_section`` function returns an HTML fragment (a ``<section>``) with its images inlined as ``data:`` URIs.
The :class:`Imagery` object reads the series once (downsampled quicklooks) and crops full-resolution windows
around events on demand.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from changescope.report.figures import colorbar_figure, dendrogram_figure
from changescope.report.images import (
    MAGENTA,
    block_max,
    figure_uri,
    outline,
    overlay,
    painted_mean,
    png_uri,
    read_rgb,
    rgb_indices,
    stretch_limits,
    to_uint8,
)

__all__ = ["Imagery", "clusters_section", "gallery_section", "overview_section", "scores_section"]

CMAP = "inferno"
MASK_ALPHA = 0.55
THUMB_PX = 128


def esc(value: Any) -> str:
    """HTML-escape ``str(value)``."""
    return html.escape(str(value), quote=True)


def img_tag(uri: str, alt: str, cls: str = "") -> str:
    """An ``<img>`` with a ``data:`` URI."""
    extra = f' class="{cls}"' if cls else ""
    return f'<img src="{uri}" alt="{esc(alt)}"{extra}>'


@dataclass
class Imagery:
    """Downsampled RGB quicklooks of a series, with the stretch shared by every image of the report.

    Attributes:
        ds: The series.
        max_px: Longest side of a quicklook.
    """

    ds: xr.Dataset
    max_px: int = 256
    bands: list[int] = field(init=False)
    factor: int = field(init=False)
    rgb: NDArray[np.float32] = field(init=False)
    invalid: NDArray[np.float32] = field(init=False)
    limits: NDArray[np.float32] = field(init=False)

    def __post_init__(self) -> None:
        """Read every date once, downsampled."""
        self.bands = rgb_indices(self.ds)
        h, w = int(self.ds.sizes["y"]), int(self.ds.sizes["x"])
        self.factor = max(1, math.ceil(max(h, w) / self.max_px))
        pairs = [read_rgb(self.ds, t, self.bands, self.factor) for t in range(self.ds.sizes["time"])]
        self.rgb = np.stack([p[0] for p in pairs])
        self.invalid = np.stack([p[1] for p in pairs])
        clear = np.where((self.invalid < 0.5)[:, None], self.rgb, np.nan)
        self.limits = stretch_limits(clear)

    @property
    def times(self) -> pd.DatetimeIndex:
        """Dates of the series."""
        return pd.DatetimeIndex(self.ds["time"].values)

    def quicklook(self, t: int, mask: bool = True) -> NDArray[np.uint8]:
        """Stretched RGB of date ``t`` with the invalid (cloud, nodata) fraction overlaid in magenta."""
        img = to_uint8(self.rgb[t], self.limits)
        return overlay(img, MAGENTA, self.invalid[t] * MASK_ALPHA) if mask else img

    def crop(self, t: int, y0: int, x0: int, size: int, context: int) -> NDArray[np.uint8]:
        """Full-resolution RGB around the patch at ``(y0, x0)`` with ``context`` pixels around it, outlined."""
        h, w = int(self.ds.sizes["y"]), int(self.ds.sizes["x"])
        ys = slice(max(0, y0 - context), min(h, y0 + size + context))
        xs = slice(max(0, x0 - context), min(w, x0 + size + context))
        f = max(1, math.ceil(max(ys.stop - ys.start, xs.stop - xs.start) / THUMB_PX))
        rgb, invalid = read_rgb(self.ds, t, self.bands, f, (ys, xs))
        img = overlay(to_uint8(rgb, self.limits), MAGENTA, invalid * MASK_ALPHA)
        oy, ox = (y0 - ys.start) // f, (x0 - xs.start) // f
        outline(img, oy, ox, oy + max(1, size // f), ox + max(1, size // f), (255, 230, 0))
        return img


def _figure_card(uri: str, caption: str, alt: str) -> str:
    return f'<figure class="card">{img_tag(uri, alt)}<figcaption>{caption}</figcaption></figure>'


def overview_section(im: Imagery) -> str:
    """AOI overview: one quicklook per date, invalid pixels in magenta."""
    cards = []
    for t, when in enumerate(im.times):
        day = when.strftime("%Y-%m-%d")
        clear = 100 * (1 - float(np.nanmean(im.invalid[t])))
        cards.append(_figure_card(png_uri(im.quicklook(t)), f"{day} &middot; {clear:.0f}% clear", f"RGB {day}"))
    band_names = [str(im.ds["band"].values[i]) for i in im.bands]
    return (
        '<section id="overview"><h2>AOI overview</h2>'
        f"<p>RGB quicklooks (bands {esc(', '.join(band_names))}, 2&ndash;98% stretch shared by all dates, "
        f"downsampled {im.factor}&times;); cloud and invalid pixels are overlaid in magenta.</p>"
        f'<div class="grid">{"".join(cards)}</div></section>'
    )


def scores_section(im: Imagery, cube: NDArray[np.float64], grid: Any, threshold: float | None) -> str:
    """Score maps per date: patch scores painted to pixels, coloured and blended over the grey imagery."""
    from matplotlib import colormaps

    finite = cube[np.isfinite(cube)]
    top = float(np.percentile(finite, 99)) if finite.size else 1.0
    vmax = max(top, 2 * threshold if threshold is not None else 0.0, 1e-6)
    cmap = colormaps[CMAP]
    cards = []
    for t, when in enumerate(im.times):
        painted = painted_mean(grid, cube[t], im.factor, block_max)  # a hotspot stays visible when downsampled
        base = im.quicklook(t, mask=False).astype(np.float32).mean(axis=2, keepdims=True)
        grey = np.repeat(base * 0.8, 3, axis=2).astype(np.uint8)
        h, w = min(grey.shape[0], painted.shape[0]), min(grey.shape[1], painted.shape[1])
        level = np.clip(painted[:h, :w] / vmax, 0, 1)
        colors = cmap(np.nan_to_num(level))[..., :3] * 255
        alpha = np.where(np.isfinite(painted[:h, :w]), 0.25 + 0.6 * np.nan_to_num(level), 0.0)
        grey[:h, :w] = overlay(grey[:h, :w], colors, alpha)
        day = when.strftime("%Y-%m-%d")
        n_high = int(np.sum(cube[t] > threshold)) if threshold is not None else 0
        cap = f"{day} &middot; {n_high} patches above threshold" if threshold is not None else day
        cards.append(_figure_card(png_uri(grey), cap, f"scores {day}"))
    bar = figure_uri(colorbar_figure(0.0, vmax, CMAP, "change score (robust z); cyan = threshold", threshold))
    return (
        '<section id="scores"><h2>Score maps</h2>'
        f"<p>Patch change scores painted over the imagery (grey). Scores from 0 to {vmax:.2f} run from dark to "
        "bright and opaque; where the maps are downsampled, each pixel shows the highest score under it.</p>"
        f'<div class="legend">{img_tag(bar, "score colour bar")}</div>'
        f'<div class="grid">{"".join(cards)}</div></section>'
    )


def _pair(im: Imagery, ev: Mapping[Any, Any], size: int) -> tuple[str, str]:
    t = int(im.times.get_indexer(pd.DatetimeIndex([ev["time"]]))[0])
    y0, x0 = int(ev["row"]) * int(ev["stride"]), int(ev["col"]) * int(ev["stride"])
    after = png_uri(im.crop(max(t, 0), y0, x0, size, size // 2))
    before = png_uri(im.crop(max(t - 1, 0), y0, x0, size, size // 2))
    return before, after


def _event_card(im: Imagery, ev: Mapping[Any, Any], size: int, detailed: bool = True) -> str:
    before, after = _pair(im, ev, size)
    t = int(im.times.get_indexer(pd.DatetimeIndex([ev["time"]]))[0])
    prev = im.times[t - 1].strftime("%Y-%m-%d") if t > 0 else "n/a"
    day = pd.Timestamp(ev["time"]).strftime("%Y-%m-%d")
    cluster = "noise" if int(ev["cluster"]) < 0 else f"type {int(ev['cluster'])}"
    lines = [f"<b>#{int(ev['rank'])}</b> {esc(ev['event_id'])}"]
    if detailed:
        lines.append(
            f"score {float(ev['score']):.2f} &middot; {esc(cluster)} &middot; rarity {float(ev['rarity']):.2f}"
        )
        lines.append(f"before {prev} &rarr; after {day} &middot; {'confirmed' if ev['confirmed'] else 'pending'}")
    pair = img_tag(before, f"before {ev['event_id']}", "thumb") + img_tag(after, f"after {ev['event_id']}", "thumb")
    return f'<div class="event"><div class="pair">{pair}</div><p>{"<br>".join(lines)}</p></div>'


def gallery_section(im: Imagery, events: pd.DataFrame, size: int, top: int) -> str:
    """The top ``top`` ranked changes: before/after crops of each patch with context, and its attributes."""
    ranked = events.sort_values(["rank", "event_id"], kind="stable").head(top)
    cards = [_event_card(im, rec, size) for rec in ranked.to_dict("records")]
    body = "".join(cards) if cards else "<p>No change was found.</p>"
    return (
        '<section id="gallery"><h2>Ranked changes</h2>'
        f"<p>The {len(ranked)} best-ranked of {len(events)} changes. Each pair shows the date before the event and "
        "the event date, the patch outlined in yellow with half a patch of context around it.</p>"
        f'<div class="events">{body}</div></section>'
    )


def clusters_section(im: Imagery, events: pd.DataFrame, clusters: Mapping[str, Any], size: int) -> str:
    """Change types: a summary table, three example events each, and the hierarchy as a dendrogram."""
    by_id = {str(e["event_id"]): e for e in events.to_dict("records")}
    parts = ['<section id="clusters"><h2>Change types</h2>']
    entries: Sequence[Mapping[str, Any]] = clusters.get("clusters", [])
    rows = []
    for c in entries:
        name = "noise" if c.get("noise") else f"type {c['cluster']}"
        mag, rar = c.get("mean_magnitude"), c.get("mean_rarity")
        rows.append(
            f"<tr><td>{esc(name)}</td><td>{c['size']}</td><td>{esc(c['first_date'])} &ndash; {esc(c['last_date'])}"
            f"</td><td>{'' if mag is None else f'{mag:.2f}'}</td><td>{'' if rar is None else f'{rar:.2f}'}</td>"
            f"<td>{c['best_rank']}</td></tr>"
        )
    parts.append(
        f"<p>{clusters.get('n_clusters', 0)} change types and {clusters.get('n_noise', 0)} unclustered (noise) "
        "events.</p><table><tr><th>type</th><th>events</th><th>dates</th><th>mean magnitude</th>"
        f"<th>mean rarity</th><th>best rank</th></tr>{''.join(rows)}</table>"
    )
    for c in entries:
        name = "noise" if c.get("noise") else f"type {c['cluster']}"
        examples = [by_id[i] for i in c.get("examples", []) if i in by_id][:3]
        cards = "".join(_event_card(im, ev, size, detailed=False) for ev in examples)
        parts.append(f'<h3>{esc(name)} ({c["size"]} events)</h3><div class="events">{cards}</div>')
    hierarchy = clusters.get("hierarchy") or {}
    merges = hierarchy.get("merges") or []
    leaves = [f"type {c['cluster']}" for c in entries if not c.get("noise")]
    if merges and len(leaves) >= 2:
        uri = figure_uri(dendrogram_figure(merges, leaves))
        parts.append(f'<h3>Hierarchy</h3><div class="figure">{img_tag(uri, "change-type dendrogram")}</div>')
    else:
        parts.append("<h3>Hierarchy</h3><p>Fewer than two change types: no hierarchy to draw.</p>")
    parts.append("</section>")
    return "".join(parts)
