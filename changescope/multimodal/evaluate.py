"""``changescope multimodal evaluate``: predict a set of pairs, then score the maps against their truth.

For every sample (a BRIGHT / DFC25 split, or one ``--pre/--post/--truth`` pair), :func:`evaluate_samples`

- computes the change map (:func:`~changescope.multimodal.predict.change_map`) and writes it to
  ``OUT/maps/{id}_change.tif`` (COG in the optical image's CRS, or a plain GeoTIFF without one);
- where the model has a damage head, computes the class map (:func:`~changescope.multimodal.predict.class_map`,
  ROI painting at ``class_stride``) and writes ``OUT/maps/{id}_damage.tif``
  (:func:`~changescope.multimodal.io.write_class_map`);
- runs the training-free baselines of :mod:`~changescope.multimodal.baselines` on the stored pixels (log-ratio,
  CVA on ranks, structure consistency), unless ``baselines=False``.

With ``holdout`` (the window index the model was trained from), a pair that the index split by region (``halves``
or ``blocks``, for single scenes) is scored only on its held-out region
(:func:`~changescope.multimodal.index.holdout_region`): the pixels the model never trained on. The maps still cover
the whole pair.

Then over **all pixels of all samples** (valid in both images and the truth; "changed" = damage class > 1 or the
change mask): the threshold sweep of the model's scores (``OUT/sweep.json`` and ``OUT/sweep.png``), the ROC AUC of
each baseline, and, for BRIGHT targets with a class head, the DFC25 4-class mIoU
(:func:`~changescope.multimodal.metrics.miou_4class`: one confusion matrix over all pixels of all images). As the
DFC25 evaluator scores every target pixel, pixels invalid in an input (the 0 fill of BRIGHT tiles) are scored as
predicted background there (the written class map keeps them as nodata 255). Everything lands in
``OUT/evaluation.json``, which ``changescope multimodal report OUT`` turns into a page.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.multimodal.pairs import Sample
from changescope.types import PathLike

if TYPE_CHECKING:
    import pandas as pd

    from changescope.multimodal.predict import Paint, Weighting

__all__ = ["BASELINES", "EVALUATION_FILE", "EvalSettings", "evaluate_samples", "read_evaluation"]

EVALUATION_FILE = "evaluation.json"
BASELINES: tuple[str, ...] = ("log-ratio", "CVA (rank)", "structure consistency")
"""The training-free baselines scored beside the model, in table order."""


@dataclass(frozen=True)
class EvalSettings:
    """How the maps are computed.

    Attributes:
        window: Window side in pixels; ``None`` = the model's context.
        stride: Step between the change-map windows; ``None`` = 64 for whole windows, half the ROI for ROIs
            (:func:`~changescope.multimodal.predict.default_stride`).
        class_stride: Step between the class-map ROIs; ``None`` = the model's ROI side (ROIs tile the image).
        weighting: ``"uniform"`` or ``"dome"``.
        batch_size: Windows per forward pass.
        baselines: Also score the training-free baselines.
        paint: Which pixels a change-map window's score goes to: ``"window"`` (all of it) or ``"roi"`` (its centred
            ROI; :func:`~changescope.multimodal.predict.change_map`).
        tta: Test-time views averaged per window (1, 2, 4 or 8; :func:`~changescope.multimodal.predict.change_map`).
    """

    window: int | None = None
    stride: int | None = None
    class_stride: int | None = None
    weighting: Weighting = "uniform"
    batch_size: int = 32
    baselines: bool = True
    paint: Paint = "window"
    tta: int = 1


def _baseline_maps(pre: NDArray[np.float32], post: NDArray[np.float32], valid: NDArray[np.bool_]) -> list[Any]:
    from changescope.multimodal.baselines import log_ratio_cva, structure_consistency

    return [
        log_ratio_cva(pre, post, mode="log_ratio", valid=valid),
        log_ratio_cva(pre, post, mode="rank", valid=valid),
        structure_consistency(pre, post, valid=valid),
    ]


def _auc(scores: NDArray[np.float32], labels: NDArray[np.bool_]) -> float | None:
    from sklearn.metrics import roc_auc_score

    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


def _sample_record(sample: Sample) -> dict[str, Any]:
    return {
        "id": sample.id,
        "event": sample.event,
        "split": sample.split,
        "pre": str(sample.pre),
        "post": str(sample.post),
        "target": None if sample.target is None else str(sample.target),
        "pre_modality": sample.pre_modality,
        "post_modality": sample.post_modality,
        "target_kind": sample.target_kind,
        "zero_nodata": sample.zero_nodata,
    }


def evaluate_samples(
    model_path: PathLike,
    samples: Sequence[Sample],
    out: PathLike,
    settings: EvalSettings | None = None,
    *,
    device: str = "auto",
    on_sample: Callable[[int, int, str], None] | None = None,
    holdout: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Predict and score ``samples`` into the folder ``out`` (module docstring).

    Args:
        model_path: A model written by ``changescope multimodal train``.
        samples: Pairs with truth, one optical and one SAR side each.
        out: Output folder (created).
        settings: Map settings (default :class:`EvalSettings`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        on_sample: Called with ``(number, total, id)`` after each sample.
        holdout: The training index: score region-split pairs only on their held-out region (module docstring).

    Returns:
        The content written to ``OUT/evaluation.json``.

    Raises:
        ParameterError: No sample, a sample without truth or without an optical and a SAR side, or truth of
            one class only.
        ParameterError: With ``holdout``, a sample is not in the index.
        GridMismatchError: Images or truth of a sample differ in size.
        BandMismatchError: A side's band count does not fit its modality (a SAR file given as optical).
    """
    from changescope.multimodal.index import holdout_region
    from changescope.multimodal.io import (
        optical_georeference,
        sweep_json,
        write_change_map,
        write_class_map,
        write_sweep_figure,
    )
    from changescope.multimodal.metrics import miou_4class, threshold_sweep
    from changescope.multimodal.model import load_model
    from changescope.multimodal.pairs import normalise_pair, read_pair_arrays
    from changescope.multimodal.predict import change_map, class_map, damage_classes, default_stride
    from changescope.train.ssl import resolve_device
    from changescope.train.state import write_json

    s = settings or EvalSettings()
    if not samples:
        raise ParameterError("no sample to evaluate; check --root, --split and --select-disaster")
    for sample in samples:
        if sample.target is None:
            raise ParameterError(
                f"sample {sample.id!r} has no truth raster (DFC25 val/ without target/?); evaluate a split with truth"
            )
        if {sample.pre_modality, sample.post_modality} != {"optical", "sar"}:
            raise ParameterError(f"sample {sample.id!r} is not one optical and one SAR image; set the modalities")
    net, _ = load_model(model_path, device=resolve_device(device))
    window = net.config.context if s.window is None else s.window
    class_stride = int(net.config.roi) if s.class_stride is None else s.class_stride
    stride = default_stride(s.paint, int(net.config.roi)) if s.stride is None else s.stride
    root = Path(out)
    maps_dir = root / "maps"
    began = time.perf_counter()
    scores: list[NDArray[np.float32]] = []
    labels: list[NDArray[np.bool_]] = []
    bases: list[list[NDArray[np.float32]]] = [[] for _ in BASELINES]
    preds, targets, records = [], [], []
    for n, sample in enumerate(samples, start=1):
        pair = read_pair_arrays(sample)
        optical, sar, valid = normalise_pair(pair)
        truth = pair.truth
        if truth is None:  # checked above; keeps the type checker informed
            raise ParameterError(f"sample {sample.id!r} has no truth raster")
        score = change_map(
            net,
            optical,
            sar,
            window=window,
            stride=stride,
            weighting=s.weighting,
            batch_size=s.batch_size,
            paint=s.paint,
            tta=s.tta,
        )
        crs, transform = optical_georeference(sample)
        tags = {
            "model": str(model_path),
            "window": str(window),
            "stride": str(stride),
            "tta": str(s.tta),
            "sample": sample.id,
        }
        rec = _sample_record(sample)
        rec["change_map"] = str(
            write_change_map(
                maps_dir / f"{sample.id}_change.tif", score, crs=crs, transform=transform, valid=valid, tags=tags
            )
        )
        keep = valid & truth.valid
        if holdout is not None:
            region = holdout_region(holdout, sample, (int(valid.shape[0]), int(valid.shape[1])))
            rec["region"] = "all" if region is None else "held out"
            if region is not None:
                keep &= region
        scores.append(score[keep])
        labels.append(truth.damage[keep])
        rec |= {"pixels": int(keep.sum()), "changed": int(truth.damage[keep].sum())}
        rec["auc"] = _auc(score[keep], truth.damage[keep])
        if s.baselines:
            for acc, m in zip(bases, _baseline_maps(pair.pre.image, pair.post.image, valid), strict=True):
                acc.append(m[keep])
        if net.class_head is not None:
            probs = class_map(
                net,
                optical,
                sar,
                window=window,
                stride=class_stride,
                weighting=s.weighting,
                batch_size=s.batch_size,
                tta=s.tta,
            )
            classes = damage_classes(probs, valid)
            path = maps_dir / f"{sample.id}_damage.tif"
            rec["class_map"] = str(write_class_map(path, classes, crs=crs, transform=transform, tags=tags))
            if truth.classes is not None:
                preds.append(np.where(valid, classes, 0).astype(np.uint8))
                targets.append(truth.classes)
        records.append(rec)
        if on_sample is not None:
            on_sample(n, len(samples), sample.id)
    all_scores, all_labels = np.concatenate(scores), np.concatenate(labels)
    sweep = threshold_sweep(all_scores, all_labels)
    write_json(sweep_json(sweep, extra={"pixels": int(all_labels.size)}), root / "sweep.json")
    write_sweep_figure(root / "sweep.png", sweep, title="all pixels")
    baselines = []
    if s.baselines:
        for name, acc in zip(BASELINES, bases, strict=True):
            baselines.append({"name": name, "auc": _auc(np.concatenate(acc), all_labels)})
    miou = miou_4class(preds, targets) if preds else None
    if miou is not None:  # JSON has no NaN: a class absent from prediction and truth has IoU null
        miou["iou"] = [None if math.isnan(v) else v for v in miou["iou"]]
    result: dict[str, Any] = {
        "model": str(model_path),
        "settings": {
            "window": window,
            "stride": stride,
            "paint": s.paint,
            "tta": s.tta,
            "class_stride": class_stride,
            "weighting": s.weighting,
            "batch_size": s.batch_size,
            "holdout": holdout is not None,
        },
        "class_head": net.class_head is not None,
        "auc": sweep.auc,
        "best": sweep.best,
        "pixels": int(all_labels.size),
        "changed": int(all_labels.sum()),
        "miou": miou,
        "baselines": baselines,
        "samples": records,
        "seconds": time.perf_counter() - began,
    }
    write_json(result, root / EVALUATION_FILE)
    return result


def read_evaluation(out: PathLike) -> dict[str, Any]:
    """Read ``OUT/evaluation.json``.

    Raises:
        ParameterError: The folder holds no evaluation.
    """
    import json

    path = Path(out) / EVALUATION_FILE
    if not path.is_file():
        raise ParameterError(f"{str(path)!r} does not exist; run `changescope multimodal evaluate --out {out}` first")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
