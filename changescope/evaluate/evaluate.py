"""Evaluate a finished run against ground truth: patch ROC/PR, per change type, per date, and pixel F1.

Truth comes from the run's own series (re-opened from ``run.json``'s source with its format and AOI) or from
``truth=PATH``: a series with ``labels`` (e.g. a DynamicEarthNet root or AOI), an OSCD city, or a change-mask
raster (``*-cm.tif``/``cm.png``) on the run's pixel grid. Per-patch truth follows :mod:`changescope.truth`
(``reference="previous"``: the date a change appears).

Rules (patch level):

- A patch's score is its highest score over the scored dates; a patch never scored ranks below every scored one
  (:func:`~changescope.evaluate.metrics.fill_unscored`).
- **Positive**: the patch changed (``fraction >= min_fraction``) at some date. **Negative**: its truth is known at
  every date and no pixel of it changed. Everything else (unknown truth, a little change under ``min_fraction``)
  is left out, as in ``benchmarks/detection_quality.py``.
- **By type**: positives of one change type (the dominant ``from -> to`` class transition at the date of the
  patch's largest change, named from the series class table; ``"change"`` for masks) against all negatives.
- **By date**: for each truth date ``d``, the patches whose change appears at ``d`` against all negatives, scored
  by their highest score over the image dates after the previous truth date and up to ``d``.

Pixel level: each patch's score is painted back onto its pixels (:meth:`PatchGrid.paint`, overlaps averaged),
thresholded at the patch-level best-F1 threshold, and compared with the pixel change map (labels that changed
between any two consecutive labelled dates, or the change mask). Only pixels covered by the patch grid and with
known truth are counted.

``RUN_DIR/metrics.json`` schema::

    {
      "patch": {auc, ap, best_f1, threshold, precision, recall, n_pos, n_neg, n_left_out,
                roc: {fpr: [...], tpr: [...]}, pr: {precision: [...], recall: [...]}},   # curves <= 200 points
      "by_type": {"<from> -> <to>": {auc, ap, best_f1, threshold, precision, recall, n_pos, n_neg}, ...},
      "by_date": {"YYYY-MM-DD": {auc, ap, best_f1, threshold, precision, recall, n_pos, n_neg}, ...},
      "pixel": {f1, precision, recall, threshold, n_pixels, n_changed},
      "params": {run_dir, truth, truth_kind, min_fraction, min_labelled, reference, patch_size, stride,
                 encoder, method, changescope_version}
    }

``auc``/``ap`` are ``null`` when a class is absent. Figures ``RUN_DIR/figures/roc.png`` and ``pr.png`` are
written beside it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from changescope.errors import GridMismatchError, ParameterError
from changescope.evaluate.metrics import binary_metrics, fill_unscored, pixel_metrics
from changescope.grid import PatchGrid
from changescope.io.writers import atomic_path
from changescope.patch_scores import PatchScores
from changescope.rundir import RunDir
from changescope.truth import (
    DEFAULT_MIN_FRACTION,
    DEFAULT_MIN_LABELLED,
    change_mask_on_grid,
    mask_change,
    series_truth,
    truth_on_series_grid,
)
from changescope.types import PathLike

__all__ = ["Truth", "evaluate_run", "load_truth", "open_run_series", "score_metrics", "write_curves"]

MASK_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class Truth:
    """Change truth on a patch grid.

    Attributes:
        grid: The patch grid the truth was aggregated on.
        patches: Per-patch per-date truth (``series_truth`` output: ``fraction, known, changed, from_class,
            to_class`` over ``(time, row, col)``).
        pixel_changed: Pixels that changed at some date ``(height, width)``.
        pixel_known: Pixels whose change is known.
        kind: ``"labels"`` or ``"change_mask"``.
        classes: Class table ``{id: name}`` of the labels (empty for masks).
        source: Where the truth came from.
    """

    grid: PatchGrid
    patches: xr.Dataset
    pixel_changed: NDArray[np.bool_]
    pixel_known: NDArray[np.bool_]
    kind: str
    classes: dict[int, str]
    source: str


def _mask_truth(mask: NDArray[Any], grid: PatchGrid, when: Any, min_fraction: float, source: str) -> Truth:
    res = mask_change(mask, grid, min_fraction=min_fraction, min_labelled=DEFAULT_MIN_LABELLED)
    coords = {"time": [pd.Timestamp(when)], "row": np.arange(grid.n_rows), "col": np.arange(grid.n_cols)}
    names = ("fraction", "known", "changed", "from_class", "to_class")
    patches = xr.Dataset(
        {n: (("time", "row", "col"), getattr(res, n)[None]) for n in names},
        coords=coords,
        attrs={"min_fraction": min_fraction, "min_labelled": DEFAULT_MIN_LABELLED, "reference": "first"},
    )
    m = np.asarray(mask)
    return Truth(grid, patches, m > 0, m >= 0, "change_mask", {}, source)


def _series_truth(ds: xr.Dataset, grid: PatchGrid, min_fraction: float, source: str) -> Truth:
    from changescope.series import class_table

    if "labels" in ds:
        patches = series_truth(ds[["labels"]], grid, reference="previous", min_fraction=min_fraction)
        labels = np.asarray(ds["labels"].values)
        kept = [t for t in range(labels.shape[0]) if (labels[t] >= 0).any()]
        changed = np.zeros(labels.shape[1:], dtype=bool)
        known = np.zeros(labels.shape[1:], dtype=bool)
        for a, b in itertools.pairwise(kept):
            comparable = (labels[a] >= 0) & (labels[b] >= 0)
            changed |= comparable & (labels[a] != labels[b])
            known |= comparable
        return Truth(grid, patches, changed, known, "labels", class_table(ds), source)
    if "change" in ds:
        return _mask_truth(np.asarray(ds["change"].values), grid, ds["time"].values[-1], min_fraction, source)
    raise ParameterError(
        f"truth source {source!r} has no 'labels' or 'change' variable; pass truth= a series with land-cover "
        "labels (e.g. a DynamicEarthNet AOI) or an OSCD change mask (*-cm.tif)"
    )


def _shape(ds: xr.Dataset) -> tuple[int, int]:
    return int(ds.sizes["y"]), int(ds.sizes["x"])


def load_truth(
    series: xr.Dataset | None,
    truth: PathLike | None,
    patch_size: int,
    stride: int | None = None,
    *,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    aoi: str | None = None,
) -> Truth:
    """Build the change truth of a series on its patch grid.

    Args:
        series: The scored series (its grid is the reference); may be ``None`` when ``truth`` is a series.
        truth: ``None`` (use ``series``' own labels or change mask), a change-mask raster, or any input
            ``changescope.open`` reads that carries labels or a change mask.
        patch_size: Patch side of the run.
        stride: Patch step of the run.
        min_fraction: Changed share from which a patch counts as changed.
        aoi: AOI id passed to ``changescope.open`` for multi-AOI truth roots.

    Raises:
        GridMismatchError: The truth raster is not on the series' pixel grid.
        ParameterError: No truth can be found.
    """
    import changescope

    if truth is None:
        if series is None:
            raise ParameterError("truth=None needs the run's series; pass truth= (--truth PATH)")
        return _series_truth(series, PatchGrid.for_series(series, patch_size, stride), min_fraction, "run series")
    path = Path(truth)
    if path.is_file() and path.suffix.lower() in MASK_SUFFIXES:
        if series is not None:
            mask = change_mask_on_grid(path, series)  # reprojected (with a warning) when on another grid
            grid = PatchGrid.for_series(series, patch_size, stride)
            when = series["time"].values[-1]
        else:
            from changescope.io.oscd import read_oscd_change_mask

            mask = read_oscd_change_mask(path)
            grid = PatchGrid(patch_size, stride or patch_size, int(mask.shape[0]), int(mask.shape[1]))
            when = pd.Timestamp("NaT")
        return _mask_truth(mask, grid, when, min_fraction, str(path))
    tds = changescope.open(path, **({} if aoi is None else {"aoi": aoi}))
    if series is not None:
        tds = _on_series_grid(tds, series, str(path))
    return _series_truth(
        tds, PatchGrid.for_series(tds if series is None else series, patch_size, stride), min_fraction, str(path)
    )


def _on_series_grid(tds: xr.Dataset, series: xr.Dataset, source: str) -> xr.Dataset:
    """The truth variables (``labels`` or ``change``) of a truth series on the pixel grid of the scored series."""
    same = _shape(tds) == _shape(series)
    if same and tds.rio.crs == series.rio.crs and tds.rio.transform() == series.rio.transform():
        return tds
    name = "labels" if "labels" in tds else "change" if "change" in tds else None
    if name is None:
        return tds  # _series_truth says what is missing
    values = truth_on_series_grid(tds[name], series, source=source)
    dims = ("time", "y", "x") if values.ndim == 3 else ("y", "x")
    coords: dict[str, Any] = {"y": series["y"].values, "x": series["x"].values}
    if "time" in dims:
        coords["time"] = tds["time"].values
    out = xr.Dataset({name: (dims, values)}, coords=coords, attrs=tds.attrs)
    if "time" not in dims:
        out = out.expand_dims(time=tds["time"].values[-1:])
    return out


def _type_names(truth: Truth) -> NDArray[np.object_]:
    p = truth.patches
    frac = np.nan_to_num(np.asarray(p["fraction"].values), nan=-1.0)
    at = frac.argmax(axis=0)[None]
    fc = np.take_along_axis(np.asarray(p["from_class"].values), at, axis=0)[0]
    tc = np.take_along_axis(np.asarray(p["to_class"].values), at, axis=0)[0]
    names = np.full(fc.shape, "", dtype=object)
    for idx in np.ndindex(fc.shape):
        if truth.kind == "change_mask":
            names[idx] = "change"
        elif fc[idx] >= 0:
            names[idx] = (
                f"{truth.classes.get(int(fc[idx]), str(fc[idx]))} -> {truth.classes.get(int(tc[idx]), str(tc[idx]))}"
            )
    return names


def score_metrics(scores: pd.DataFrame | PatchScores, truth: Truth) -> dict[str, Any]:
    """Every metric of patch scores (a :class:`~changescope.patch_scores.PatchScores` or its table) against a truth.

    See the module docstring for the rules.

    Returns:
        ``{"patch", "by_type", "by_date", "pixel"}`` as in ``metrics.json``.
    """
    ps = scores if isinstance(scores, PatchScores) else PatchScores.from_frame(scores, truth.grid.shape)
    times, cube = ps.times, ps.score
    smax = ps.max_over_time()
    p = truth.patches
    changed = np.asarray(p["changed"].values, dtype=bool)
    known = np.asarray(p["known"].values, dtype=bool)
    fraction = np.asarray(p["fraction"].values)
    pos: NDArray[np.bool_] = np.asarray(changed.any(axis=0), dtype=bool)
    neg: NDArray[np.bool_] = np.asarray(
        known.all(axis=0) & (np.nan_to_num(fraction, nan=1.0) == 0).all(axis=0) & ~pos, dtype=bool
    )
    keep = pos | neg
    patch = binary_metrics(pos[keep], fill_unscored(smax[keep]))
    patch["n_left_out"] = int((~keep).sum())

    types = _type_names(truth)
    by_type: dict[str, Any] = {}
    for kind in sorted({str(t) for t in types[pos]}):
        sel = (pos & (types == kind)) | neg
        by_type[kind] = binary_metrics(pos[sel], fill_unscored(smax[sel]), curves=False)

    by_date: dict[str, Any] = {}
    truth_times = pd.DatetimeIndex(p["time"].values)
    prev = pd.Timestamp.min
    for i, when in enumerate(truth_times):
        window = (times > prev) & (times <= when)
        prev = when
        if not window.any() or not changed[i].any():
            continue
        s_date = np.fmax.reduce(cube[window], axis=0)
        sel = changed[i] | neg
        by_date[when.strftime("%Y-%m-%d")] = binary_metrics(changed[i][sel], fill_unscored(s_date[sel]), curves=False)

    painted = truth.grid.paint(smax)
    covered = np.isfinite(truth.grid.paint(np.zeros(truth.grid.shape)))
    thr = patch["threshold"]
    with np.errstate(invalid="ignore"):
        predicted = painted >= thr if thr is not None else np.zeros(painted.shape, dtype=bool)
    pixel = pixel_metrics(predicted, truth.pixel_changed, truth.pixel_known & covered)
    pixel["threshold"] = thr
    return {"patch": patch, "by_type": by_type, "by_date": by_date, "pixel": pixel}


def write_curves(path: Path, curves: Sequence[tuple[str, Sequence[float], Sequence[float]]], kind: str) -> Path:
    """Write overlaid ROC (``kind="roc"``: x = FPR, y = TPR) or PR (``"pr"``: x = recall, y = precision) curves.

    Uses ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state). Written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, x, y in curves:
        ax.plot(x, y, label=label, linewidth=1.5)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC (patch level)")
    else:
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("precision-recall (patch level)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if curves:
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def open_run_series(run: dict[str, Any], run_dir: PathLike) -> xr.Dataset | None:
    """Re-open a run's input series (:meth:`~changescope.rundir.RunDir.open_input`); ``None`` when it is gone."""
    return RunDir(run_dir).open_input(run)


def evaluate_run(
    run_dir: PathLike, truth: PathLike | Truth | None = None, min_fraction: float = DEFAULT_MIN_FRACTION
) -> dict[str, Any]:
    """Evaluate a finished run and write ``metrics.json`` and ``figures/{roc,pr}.png`` into it.

    Args:
        run_dir: A folder written by ``changescope run``.
        truth: ``None`` (the run's own series), a path (see :func:`load_truth`) or a prepared :class:`Truth`.
        min_fraction: Changed share from which a patch counts as changed.

    Returns:
        The metrics (the content of ``metrics.json``; schema in the module docstring).

    Raises:
        ParameterError: No finished run, or no truth available.
        GridMismatchError: Truth and run are on different grids.
    """
    import changescope

    out = Path(run_dir)
    rd = RunDir(out)
    run = rd.load()
    cfg = run.get("config", {})
    size = int(cfg.get("patch_size", 32))
    stride = cfg.get("stride")
    if isinstance(truth, Truth):
        tr = truth
    else:
        series = open_run_series(run, out)
        if series is None and truth is None:
            raise ParameterError(
                f"the source of run {str(out)!r} ({run.get('source')!r}) cannot be re-opened; pass truth= "
                "(--truth PATH) with labels or a change mask on the run's grid"
            )
        tr = load_truth(series, truth, size, stride, min_fraction=min_fraction, aoi=cfg.get("aoi"))
    grid_run = run.get("grid", {})
    run_shape = (int(grid_run.get("rows", tr.grid.n_rows)), int(grid_run.get("cols", tr.grid.n_cols)))
    if run_shape != tr.grid.shape:
        raise GridMismatchError(
            f"run {str(out)!r} has a {run_shape!r} patch grid but the truth gives {tr.grid.shape!r}; pass truth of "
            "the same scene and pixel grid"
        )
    metrics = score_metrics(PatchScores.read(rd.patch_scores, tr.grid.shape), tr)
    metrics["params"] = {
        "run_dir": str(out),
        "truth": tr.source,
        "truth_kind": tr.kind,
        "min_fraction": min_fraction,
        "min_labelled": DEFAULT_MIN_LABELLED,
        "reference": str(tr.patches.attrs.get("reference", "previous")),
        "patch_size": size,
        "stride": stride or size,
        "encoder": cfg.get("encoder"),
        "method": cfg.get("method"),
        "changescope_version": changescope.__version__,
    }
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, default=str))
    name = f"{cfg.get('encoder')} / {cfg.get('method')}"
    auc = metrics["patch"]["auc"]
    label = f"{name} (AUC {auc:.3f})" if auc is not None else name
    roc, pr = metrics["patch"]["roc"], metrics["patch"]["pr"]
    write_curves(out / "figures" / "roc.png", [(label, roc["fpr"], roc["tpr"])], "roc")
    write_curves(out / "figures" / "pr.png", [(label, pr["recall"], pr["precision"])], "pr")
    return metrics
