"""Writing what ``changescope multimodal predict`` and ``threshold`` produce: change maps, sweeps and their plot.

Change maps (:func:`write_change_map`) are single-band float32 rasters of ``1 - cos`` scores in ``[0, 2]``:

- when the **optical** image of the pair is georeferenced, a Cloud-Optimised GeoTIFF (GDAL's COG driver: tiled,
  deflate, overviews) in that image's CRS and transform, so it opens in QGIS on top of the inputs;
- otherwise (a PNG, JPEG, BMP or a TIFF without CRS) a plain GeoTIFF with **no georeference**: no CRS and the
  identity transform, i.e. pixel coordinates. A pixel of the map is the pixel of the inputs at the same row and
  column. We do not borrow the SAR image's georeference when only it has one (the optical image is the reference
  grid of the method); :func:`optical_georeference` is where that choice is made.

Damage class maps (:func:`write_class_map`) follow the same georeference rule: single-band uint8, 0 background,
1 intact, 2 damaged, 3 destroyed, 255 (nodata) on invalid pixels, band ``damage_class``, with a colour table
(:data:`CLASS_COLORS`) so QGIS shows the classes; COG overviews use nearest resampling (classes are not averaged).

Pixels invalid in either input are NaN, recorded as the nodata value. The map's band is described as
``change_score`` and the tags hold the model and window settings (``tags``).

:func:`sweep_json` turns a :class:`~changescope.multimodal.metrics.ThresholdSweep` into the JSON written by
``threshold``: the AUC, the best thresholds and the curves, the curves thinned to at most ``max_points`` evenly
spaced thresholds (a pixel sweep has one threshold per distinct score, millions on a real scene; the AUC and the
best thresholds are computed on the full sweep before thinning). :func:`write_sweep_figure` draws ROC and PR side
by side (matplotlib ``Figure`` + Agg, no pyplot state).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.io.writers import atomic_path, write_geotiff
from changescope.types import PathLike

if TYPE_CHECKING:
    from changescope.multimodal.metrics import ThresholdSweep
    from changescope.multimodal.pairs import Sample

__all__ = [
    "CLASS_COLORS",
    "optical_georeference",
    "sweep_json",
    "write_change_map",
    "write_class_map",
    "write_sweep_figure",
]

SCORE_BAND = "change_score"
MAX_CURVE_POINTS = 2001


def optical_georeference(sample: Sample) -> tuple[Any, Any]:
    """``(crs, transform)`` of the optical image of ``sample``; ``(None, None)`` when it has no CRS.

    Args:
        sample: A pair with one optical side (:func:`changescope.multimodal.pairs.pair_sample`).

    Raises:
        ParameterError: Neither side of the pair is optical.
    """
    from changescope.io.raster import raster_meta

    if sample.pre_modality == "optical":
        path = sample.pre
    elif sample.post_modality == "optical":
        path = sample.post
    else:
        raise ParameterError("the pair has no optical side; set --pre-modality or --post-modality to optical")
    meta = raster_meta(path)
    if meta.crs is None:
        return None, None
    return meta.crs, meta.transform


def write_change_map(
    path: PathLike,
    scores: NDArray[np.floating],
    *,
    crs: Any = None,
    transform: Any = None,
    valid: NDArray[np.bool_] | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write an ``(H, W)`` change map, atomically (module docstring).

    Args:
        path: Output ``.tif``.
        scores: ``(H, W)`` change scores.
        crs: CRS of the optical input; ``None`` writes a plain GeoTIFF without georeference.
        transform: Its affine transform (required with ``crs``).
        valid: ``(H, W)`` pixels valid in both inputs; the others are written as NaN (the nodata value).
        tags: Dataset-level metadata tags.

    Returns:
        The path written.

    Raises:
        ParameterError: ``scores`` is not 2-D, ``valid`` has another shape, or ``crs`` comes without ``transform``.
    """
    from affine import Affine
    from rasterio.errors import NotGeoreferencedWarning

    arr = np.asarray(scores, dtype=np.float32)
    if arr.ndim != 2:
        raise ParameterError(f"a change map is (H, W); got shape {arr.shape!r}")
    if valid is not None:
        if valid.shape != arr.shape:
            raise ParameterError(f"valid mask {valid.shape!r} does not match the map {arr.shape!r}")
        arr = np.where(valid, arr, np.float32(np.nan)).astype(np.float32)
    if crs is not None and transform is None:
        raise ParameterError("a georeferenced change map needs both crs and transform")
    common: dict[str, Any] = {"nodata": math.nan, "descriptions": [SCORE_BAND], "tags": tags}
    if crs is not None:
        return write_geotiff(Path(path), arr, crs=crs, transform=transform, cog=True, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return write_geotiff(Path(path), arr, crs=None, transform=Affine.identity(), **common)


CLASS_BAND = "damage_class"
CLASS_COLORS: dict[int, tuple[int, int, int, int]] = {
    0: (0, 0, 0, 255),
    1: (46, 160, 67, 255),
    2: (255, 176, 0, 255),
    3: (220, 30, 30, 255),
}
"""RGBA colour of each damage class (background black, intact green, damaged amber, destroyed red)."""


def write_class_map(
    path: PathLike,
    classes: NDArray[np.integer],
    *,
    crs: Any = None,
    transform: Any = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write an ``(H, W)`` damage class map (0-3, 255 = nodata), atomically (module docstring).

    Args:
        path: Output ``.tif``.
        classes: ``(H, W)`` class ids (:func:`changescope.multimodal.predict.damage_classes`).
        crs: CRS of the optical input; ``None`` writes a plain GeoTIFF without georeference.
        transform: Its affine transform (required with ``crs``).
        tags: Dataset-level metadata tags.

    Returns:
        The path written.

    Raises:
        ParameterError: ``classes`` is not 2-D or holds values other than 0-3 and 255, or ``crs`` lacks ``transform``.
    """
    import rasterio
    import rasterio.shutil
    from affine import Affine
    from rasterio.errors import NotGeoreferencedWarning

    from changescope.multimodal.predict import CLASS_NODATA

    arr = np.asarray(classes)
    if arr.ndim != 2:
        raise ParameterError(f"a class map is (H, W); got shape {arr.shape!r}")
    if not np.isin(arr, [0, 1, 2, 3, CLASS_NODATA]).all():
        raise ParameterError(f"a class map holds 0-3 and {CLASS_NODATA} (nodata) only; got {np.unique(arr)[:8]!r}")
    if crs is not None and transform is None:
        raise ParameterError("a georeferenced class map needs both crs and transform")
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": arr.shape[1],
        "height": arr.shape[0],
        "count": 1,
        "dtype": "uint8",
        "crs": crs,
        "transform": Affine.identity() if crs is None else transform,
        "nodata": CLASS_NODATA,
        "compress": "deflate",
    }
    out = Path(path)
    with warnings.catch_warnings(), atomic_path(out) as tmp:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(arr.astype(np.uint8)[None])
                dst.write_colormap(1, CLASS_COLORS)
                dst.set_band_description(1, CLASS_BAND)
                if tags:
                    dst.update_tags(**tags)
            with mem.open() as src:
                if crs is None:
                    rasterio.shutil.copy(src, tmp, driver="GTiff", compress="deflate")
                else:
                    rasterio.shutil.copy(
                        src, tmp, driver="COG", compress="deflate", blocksize=256, overview_resampling="nearest"
                    )
    return out


def _thin(n: int, max_points: int, keep: list[int]) -> NDArray[np.int64]:
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    idx = np.linspace(0, n - 1, max_points).round().astype(np.int64)
    return np.unique(np.concatenate([idx, np.asarray(keep, dtype=np.int64)]))


def sweep_json(
    sweep: ThresholdSweep, *, max_points: int = MAX_CURVE_POINTS, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON document of a sweep: ``auc``, ``best``, counts, the thinned curves and ``extra`` keys.

    Args:
        sweep: The full threshold sweep.
        max_points: Most thresholds kept in the curves (the best thresholds are always kept).
        extra: Keys added at the top level (inputs, settings).

    Returns:
        JSON-safe data; ``curves`` maps each curve name to a list, ``n_thresholds`` is the full sweep's size.

    Raises:
        ParameterError: ``max_points < 2``.
    """
    if max_points < 2:
        raise ParameterError(f"max_points={max_points!r} must be at least 2")
    full = sweep.to_dict()
    thresholds = sweep.thresholds
    keep = [int(np.flatnonzero(thresholds == b["threshold"])[0]) for b in sweep.best.values()]
    idx = _thin(len(thresholds), max_points, keep)
    names = ("thresholds", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "fpr", "tpr")
    curves = {k: [full[k][i] for i in idx.tolist()] for k in names}
    return {
        **(extra or {}),
        "auc": sweep.auc,
        "best": sweep.best,
        "n_positive": sweep.n_positive,
        "n_negative": sweep.n_negative,
        "n_thresholds": len(thresholds),
        "curves": curves,
    }


def write_sweep_figure(path: PathLike, sweep: ThresholdSweep, *, title: str = "pixel level") -> Path:
    """Write ROC (FPR vs TPR, with the AUC) and precision-recall curves side by side as a PNG, atomically.

    Args:
        path: Output ``.png``.
        sweep: The threshold sweep.
        title: What the scores are (shown in the panel titles).

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    roc, pr = fig.subplots(1, 2)
    roc.plot(sweep.fpr, sweep.tpr, linewidth=1.5, label=f"AUC {sweep.auc:.3f}")
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({title})")
    roc.legend(loc="lower right", fontsize=8)
    best_f1 = sweep.best["f1"]
    pr.plot(sweep.recall, sweep.precision, linewidth=1.5)
    i = int(np.flatnonzero(sweep.thresholds == best_f1["threshold"])[0])
    pr.plot(
        [sweep.recall[i]],
        [sweep.precision[i]],
        "o",
        label=f"best F1 {best_f1['value']:.3f} at {best_f1['threshold']:.3f}",
    )
    pr.set(xlabel="recall", ylabel="precision", title=f"precision-recall ({title})")
    pr.legend(loc="lower left", fontsize=8)
    for ax in (roc, pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
