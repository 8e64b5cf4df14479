"""2-D maps of a run's patch embeddings and change vectors (PCA, t-SNE, UMAP), written as PNGs.

``explore(RUN_DIR)`` writes ``RUN_DIR/figures/explore_<what>_<method>.png`` for ``what`` in ``embeddings`` (a
seeded sample of valid ``(patch, date)`` embeddings, coloured by the change type of the event at that patch and
date, ``no change`` otherwise) and ``changes`` (the change vectors, coloured by change type). The report shows
them when present. UMAP needs the optional ``umap-learn`` package; without it UMAP is skipped with a note.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.io.writers import atomic_path
from changescope.rundir import RunDir
from changescope.types import ExploreMethod, PathLike

__all__ = ["ExploreMethod", "embed_2d", "explore"]

METHODS: tuple[str, ...] = get_args(ExploreMethod)


def _note_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def embed_2d(x: NDArray[Any], method: ExploreMethod, seed: int = 0) -> NDArray[np.float64]:
    """Project ``(N, D)`` points to 2-D with PCA, t-SNE (perplexity 30, capped for few points) or UMAP (15 nb)."""
    pts = np.asarray(x, dtype=np.float64)
    if pts.shape[1] < 2:
        pts = np.concatenate([pts, np.zeros((len(pts), 2 - pts.shape[1]))], axis=1)
    if method == "pca":
        from sklearn.decomposition import PCA

        return np.asarray(PCA(n_components=2, random_state=seed).fit_transform(pts), dtype=np.float64)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (len(pts) - 1) / 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        return np.asarray(tsne.fit_transform(pts), dtype=np.float64)
    with warnings.catch_warnings():
        # umap-learn warns at import that ParametricUMAP needs TensorFlow, which changescope never uses
        warnings.filterwarnings("ignore", message="Tensorflow not installed", category=ImportWarning)
        import umap

    # n_jobs=1: a seeded UMAP runs single-threaded anyway, and saying so keeps umap-learn from warning about it
    reducer = umap.UMAP(n_neighbors=min(15, len(pts) - 1), n_components=2, random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(pts), dtype=np.float64)


def _type_names(run_dir: Path) -> dict[int, str]:
    path = run_dir / "clusters.json"
    if not path.exists():
        return {}
    from changescope.discover.summary import read_clusters_json

    return {int(c["cluster"]): _cluster_name(int(c["cluster"])) for c in read_clusters_json(path)["clusters"]}


def _cluster_name(c: int) -> str:
    return "noise" if c < 0 else f"type {c}"


def _embedding_sample(
    run_dir: Path, events: pd.DataFrame, min_valid: float, n_max: int, seed: int
) -> tuple[NDArray[np.float32], list[str]]:
    from changescope.embed.store import open_embeddings

    emb = open_embeddings(RunDir(run_dir).embeddings_store(), allow_incomplete=True)
    x = np.asarray(emb["embedding"].values, dtype=np.float32)
    _, n_r, n_c, dim = x.shape
    vf = np.asarray(emb["valid_fraction"].values, dtype=np.float32)
    flat = x.reshape(-1, dim)
    ok = np.flatnonzero((vf.ravel() >= min_valid) & np.isfinite(flat).all(axis=1))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(ok, size=min(n_max, ok.size), replace=False)) if ok.size else ok
    t = pd.DatetimeIndex(emb["time"].values).get_indexer(pd.DatetimeIndex(events["time"]))
    keys = (t * n_r + events["row"].to_numpy()) * n_c + events["col"].to_numpy()
    names = [_cluster_name(int(c)) for c in events["cluster"].to_numpy()]
    label = {int(k): n for k, n, ok in zip(keys, names, t >= 0, strict=True) if ok}
    return flat[pick], [label.get(int(i), "no change") for i in pick]


def explore(
    run_dir: PathLike,
    methods: Sequence[str] = ("pca", "tsne", "umap"),
    *,
    max_points: int = 5000,
    seed: int = 0,
    note: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write 2-D maps of a run's embeddings and change vectors into ``RUN_DIR/figures/explore_*.png``.

    Args:
        run_dir: A finished run (``changescope run``).
        methods: Any of ``pca``, ``tsne``, ``umap``. UMAP is skipped (with a note) without ``umap-learn``.
        max_points: Size of the seeded sample of valid (patch, date) embeddings.
        seed: Seed of the sample and of t-SNE/UMAP.
        note: Called with informational messages (default: printed to stderr).

    Returns:
        The PNG paths written, in order (embeddings then changes, per method).

    Raises:
        ParameterError: ``run_dir`` holds no finished run, or an unknown method is named.
    """
    from changescope.report.figures import scatter_figure
    from changescope.report.images import figure_png

    say = note or _note_stderr
    root = Path(run_dir)
    rd = RunDir(root)
    info = rd.load()
    wanted = [m.strip().lower() for m in methods if m.strip()]
    bad = [m for m in wanted if m not in METHODS]
    if bad or not wanted:
        raise ParameterError(f"methods={list(methods)!r}: choose among {list(METHODS)!r}, e.g. --method pca,tsne")
    if "umap" in wanted and importlib.util.find_spec("umap") is None:
        say("UMAP skipped: the optional 'umap-learn' package is not installed (pip install umap-learn)")
        wanted.remove("umap")
    events = rd.read_changes(columns=["row", "col", "time", "cluster"])
    min_valid = float(info.get("config", {}).get("min_valid", 0.5))
    sets: list[tuple[str, NDArray[np.float32], list[str], str]] = []
    x_emb, g_emb = _embedding_sample(root, events, min_valid, max_points, seed)
    sets.append(("embeddings", x_emb, g_emb, f"patch embeddings ({len(x_emb)} sampled patch-dates)"))
    vec_path = root / "change_vectors.npy"
    if vec_path.exists():
        vectors = np.load(vec_path).astype(np.float32)
        groups = [_cluster_name(int(c)) for c in events["cluster"].to_numpy()]
        sets.append(("changes", vectors, groups, f"change vectors ({len(vectors)} events)"))
    out_dir = root / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for what, x, groups, title in sets:
        if len(x) < 4:
            say(f"explore: {what} skipped, only {len(x)} point(s)")
            continue
        for method in wanted:
            xy = embed_2d(x, method, seed)  # type: ignore[arg-type]
            fig = scatter_figure(xy, groups, f"{title}: {method.upper()}")
            path = out_dir / f"explore_{what}_{method}.png"
            with atomic_path(path) as tmp:
                tmp.write_bytes(figure_png(fig))
            written.append(path)
    return written
