"""Matplotlib figures of the report, drawn with the object API (``Figure`` + Agg canvas), never pyplot state.

Each function returns a :class:`matplotlib.figure.Figure`; :func:`changescope.report.images.figure_uri` turns it
into a ``data:`` URI and :func:`changescope.report.images.figure_png` into PNG bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["colorbar_figure", "curve_figure", "dendrogram_figure", "linkage_from_merges", "scatter_figure"]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def linkage_from_merges(merges: Sequence[Mapping[str, Any]], n_leaves: int) -> NDArray[np.float64]:
    """SciPy linkage matrix ``(K - 1, 4)`` from the ``hierarchy.merges`` of ``clusters.json``.

    Distances are made monotonic (a running maximum), as SciPy's dendrogram expects.
    """
    z = np.zeros((len(merges), 4), dtype=np.float64)
    for i, m in enumerate(merges):
        z[i] = (m["left"], m["right"], float(m["distance"]), len(m.get("clusters", [])) or 2)
    if len(z):
        z[:, 2] = np.maximum.accumulate(np.maximum(z[:, 2], 0.0))
    if len(z) != max(0, n_leaves - 1):
        from changescope.errors import CorruptFileError

        raise CorruptFileError(
            f"the hierarchy has {len(z)} merges for {n_leaves} change types (expected {n_leaves - 1})"
        )
    return z


def dendrogram_figure(merges: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> Figure:
    """The change-type hierarchy as a dendrogram (cosine distance between cluster centroids)."""
    from scipy.cluster.hierarchy import dendrogram

    z = linkage_from_merges(merges, len(labels))
    tree = dendrogram(z, no_plot=True, labels=list(labels))
    fig = _figure(max(4.0, 0.5 * len(labels) + 2), 3.0)
    ax = fig.add_subplot()
    for xs, ys in zip(tree["icoord"], tree["dcoord"], strict=True):
        ax.plot(xs, ys, color="#335", linewidth=1.2)
    ticks = 5 + 10 * np.arange(len(labels))
    ax.set_xticks(ticks, tree["ivl"], rotation=45, ha="right", fontsize=8)
    ax.set_xlim(0, 10 * len(labels))
    ax.set_ylabel("cosine distance")
    ax.set_title("change-type hierarchy", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


def colorbar_figure(vmin: float, vmax: float, cmap: str, label: str, threshold: float | None = None) -> Figure:
    """A horizontal colour bar (the legend of the score maps)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig = _figure(4.0, 0.8)
    ax = fig.add_subplot()
    fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), cax=ax, orientation="horizontal")
    if threshold is not None and vmin < threshold < vmax:
        ax.axvline(threshold, color="cyan", linewidth=2)
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    return fig


def curve_figure(x: Sequence[float], y: Sequence[float], kind: str, value: float | None = None) -> Figure:
    """A ROC (``kind="roc"``: x = FPR, y = TPR) or precision-recall (``"pr"``: x = recall, y = precision) curve."""
    fig = _figure(3.6, 3.4)
    ax = fig.add_subplot()
    ax.plot(list(x), list(y), color="#c33", linewidth=1.8)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        title = "ROC" + (f" (AUC {value:.3f})" if value is not None else "")
    else:
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        title = "precision-recall" + (f" (AP {value:.3f})" if value is not None else "")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    return fig


def scatter_figure(xy: NDArray[Any], groups: Sequence[str], title: str) -> Figure:
    """A 2-D map of points coloured by group (legend sorted; ``"no change"`` and ``"noise"`` drawn grey, first)."""
    from matplotlib import colormaps

    pts = np.asarray(xy, dtype=np.float64)
    g = np.asarray([str(v) for v in groups], dtype=object)
    quiet = {"no change", "noise"}
    names = sorted(set(g.tolist()), key=lambda s: (s not in quiet, s))
    cmap = colormaps["tab20"]
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot()
    n_colored = 0
    for name in names:
        m = g == name
        style: dict[str, Any] = {"s": 12, "alpha": 0.85}
        if name == "no change":
            style = {"s": 5, "alpha": 0.4, "color": "#bbbbbb"}
        elif name == "noise":
            style = {"s": 12, "alpha": 0.7, "color": "#666666"}
        else:
            style["color"] = cmap(n_colored % 20)
            n_colored += 1
        ax.scatter(pts[m, 0], pts[m, 1], label=f"{name} ({int(m.sum())})", linewidths=0, **style)
    if len(names) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig
