"""The feature explorer of methods.md §3: 2-D maps of a trained model's optical and SAR projections.

:func:`explore_projections` takes a seeded sample of at most ``max_points`` labelled windows of a window index
(one split, or all), runs the model on them and keeps each window's optical and SAR projections (L2-normalised,
``proj_dim`` values; the shared space of the method). The ``2 N`` projections are mapped to 2-D **together** (so
an unchanged pair, whose two views the loss pulls together, lands as two nearby points) with each method of
:func:`changescope.report.explore.embed_2d`: PCA, t-SNE (perplexity 30, clipped to ``(N - 1) / 3`` for small
samples, PCA initialisation) and UMAP (15 neighbours, fewer for tiny samples). All are seeded.

Written into ``OUT`` (each atomically):

- ``explore_{method}.png``: three panels on shared axes: the optical points coloured by label (unchanged /
  changed), the SAR points coloured by label, and both coloured by modality;
- ``explore.json``: per window its index row, sample, ROI position, label, damage class and change score; per
  method the 2-D coordinates of its optical and of its SAR projection.

UMAP needs the optional ``umap-learn`` package (``pip install 'changescope[explore]'``); it is imported only when
asked for, and asking without it raises a one-line :class:`~changescope.errors.MissingDependencyError`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from changescope.errors import MissingDependencyError, ParameterError
from changescope.io.writers import atomic_path
from changescope.types import PathLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from changescope.multimodal.index import PatchDataset
    from changescope.multimodal.model import PseudoSiamese

__all__ = ["EXPLORE_FILE", "METHODS", "check_methods", "explore_projections", "projections"]

METHODS: tuple[str, ...] = ("pca", "tsne", "umap")
EXPLORE_FILE = "explore.json"
LABEL_NAMES = {0: "unchanged", 1: "changed"}
_COLORS = {"unchanged": "#2e86de", "changed": "#e03131", "optical": "#f08c00", "SAR": "#5f3dc4"}


def check_methods(methods: Sequence[str]) -> list[str]:
    """The methods named, checked (lower case, no blanks); UMAP only when ``umap-learn`` is importable.

    Raises:
        ParameterError: An unknown method, or none.
        MissingDependencyError: UMAP is asked for and ``umap-learn`` is not installed.
    """
    wanted = [m.strip().lower() for m in methods if m.strip()]
    bad = [m for m in wanted if m not in METHODS]
    if bad or not wanted:
        raise ParameterError(f"--method {','.join(methods)!r}: choose among {list(METHODS)!r}, e.g. pca,tsne")
    if "umap" in wanted and importlib.util.find_spec("umap") is None:
        raise MissingDependencyError(
            "UMAP needs the optional 'umap-learn' package (the 'explore' extra of changescope): pip install "
            "umap-learn, or drop umap from --method"
        )
    return list(dict.fromkeys(wanted))


def projections(
    model: PseudoSiamese, dataset: PatchDataset, rows: Sequence[int], *, batch_size: int = 32
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """``(optical (N, D), sar (N, D), score (N,))`` of the dataset items ``rows``, in eval mode, without gradients."""
    import torch

    device = next(model.parameters()).device
    opt, sar, score = [], [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(rows), batch_size):
                items = [dataset.arrays(int(r)) for r in rows[i : i + batch_size]]
                o = torch.from_numpy(np.stack([it["optical"] for it in items])).to(device)
                s = torch.from_numpy(np.stack([it["sar"] for it in items])).to(device)
                out = model(o, s)
                opt.append(out.optical.cpu().numpy())
                sar.append(out.sar.cpu().numpy())
                score.append(out.score.cpu().numpy())
    finally:
        model.train(was_training)
    return (
        np.concatenate(opt).astype(np.float32),
        np.concatenate(sar).astype(np.float32),
        np.concatenate(score).astype(np.float32),
    )


def _figure(xy: NDArray[np.float64], labels: NDArray[np.int64], method: str, n: int) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 4.6), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    names = np.asarray([LABEL_NAMES[int(v)] for v in labels], dtype=object)
    for ax, part, title in ((axes[0], xy[:n], "optical"), (axes[1], xy[n:], "SAR")):
        for name in ("unchanged", "changed"):
            m = names == name
            ax.scatter(
                part[m, 0],
                part[m, 1],
                s=10,
                alpha=0.75,
                linewidths=0,
                color=_COLORS[name],
                label=f"{name} ({int(m.sum())})",
            )
        ax.set_title(f"{title} projections by label", fontsize=10)
        ax.legend(fontsize=8, markerscale=2, frameon=False)
    for part, name in ((xy[:n], "optical"), (xy[n:], "SAR")):
        axes[2].scatter(part[:, 0], part[:, 1], s=10, alpha=0.6, linewidths=0, color=_COLORS[name], label=name)
    axes[2].set_title("both, by modality", fontsize=10)
    axes[2].legend(fontsize=8, markerscale=2, frameon=False)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{method.upper()} of the optical and SAR projections ({n} windows, one joint map)", fontsize=11)
    return fig


def explore_projections(
    model_path: PathLike,
    index: PathLike,
    out: PathLike,
    *,
    split: str | None = None,
    methods: Sequence[str] = METHODS,
    max_points: int = 2000,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Map the projections of a sample of indexed windows to 2-D and write the figures and JSON (module docstring).

    Args:
        model_path: A trained model (``best.safetensors``).
        index: A window index (``changescope multimodal index``).
        out: Output folder (created).
        split: Index split to sample (``None``: all labelled windows).
        methods: Any of ``pca``, ``tsne``, ``umap``.
        max_points: Most windows in the sample (at least 4).
        seed: Seed of the sample and of t-SNE / UMAP.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        batch_size: Windows per forward pass.

    Returns:
        What ``explore.json`` holds, plus ``figures``: the PNG paths written.

    Raises:
        ParameterError: A bad method or ``max_points``, fewer than 4 windows, or a model and index of different
            window sizes.
        MissingDependencyError: UMAP without ``umap-learn``.
        EmptySeriesError: The split holds no labelled window.
    """
    from changescope.multimodal.index import PatchDataset
    from changescope.multimodal.model import load_model
    from changescope.report.explore import embed_2d
    from changescope.report.images import figure_png
    from changescope.train.ssl import resolve_device
    from changescope.train.state import write_json

    wanted = check_methods(methods)
    if max_points < 4:
        raise ParameterError(f"--max-points {max_points!r} must be at least 4")
    dataset = PatchDataset(index, split=split)
    net, _ = load_model(model_path, device=resolve_device(device))
    if (dataset.context, dataset.roi) != (net.config.context, net.config.roi):
        raise ParameterError(
            f"the index holds {dataset.roi} px ROIs in {dataset.context} px contexts but the model was trained on "
            f"{net.config.roi} px in {net.config.context} px; give the model's index"
        )
    if len(dataset) < 4:
        raise ParameterError(f"only {len(dataset)} labelled window(s) to map; a 2-D map needs at least 4")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(dataset), size=min(max_points, len(dataset)), replace=False))
    opt, sar, score = projections(net, dataset, rows.tolist(), batch_size=batch_size)
    labels = dataset.labels[rows]
    frame = dataset.frame.iloc[rows]
    root = Path(out)
    result: dict[str, Any] = {
        "model": str(model_path),
        "index": str(index),
        "split": split,
        "seed": seed,
        "n": len(rows),
        "points": [
            {
                "row": int(r),
                "sample": str(smp),
                "y": int(y),
                "x": int(x),
                "label": int(lab),
                "damage_class": int(c),
                "score": float(sc),
            }
            for r, smp, y, x, lab, c, sc in zip(
                rows,
                frame["sample"],
                frame["y"],
                frame["x"],
                labels,
                dataset.damage_classes[rows],
                score,
                strict=True,
            )
        ],
        "coordinates": {},
    }
    figures = []
    joint = np.concatenate([opt, sar])
    n = len(rows)
    for method in wanted:
        xy = embed_2d(joint, method, seed)  # type: ignore[arg-type]
        result["coordinates"][method] = {"optical": xy[:n].round(5).tolist(), "sar": xy[n:].round(5).tolist()}
        path = root / f"explore_{method}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(figure_png(_figure(xy, labels, method, n)))
        figures.append(str(path))
    result["figures"] = figures
    write_json(result, root / EXPLORE_FILE)
    return result
