"""Evaluation of change scores: the threshold sweep of methods.md §3 and the DFC25 4-class mIoU.

:func:`threshold_sweep` decides "changed" where ``score >= threshold`` for every distinct score (scikit-learn's
``roc_curve`` with ``drop_intermediate=False``; its leading ``inf`` threshold, nothing changed, is replaced by the
next float above the highest score so the result stays JSON-safe) and gives, per threshold, accuracy, balanced
accuracy, precision, recall (= TPR), F1 and FPR, plus the ROC AUC (``roc_auc_score``) and, per metric, the best
threshold (the first maximum; for FPR none is meaningful, Youden's ``J = TPR - FPR`` is given instead). Precision
is 0 where nothing is called changed, as scikit-learn's ``zero_division=0``.

:func:`miou_4class` is the BRIGHT / DFC25 track 2 score as its evaluator computes it: one 4 x 4 confusion matrix
(0 background, 1 intact, 2 damaged, 3 destroyed) accumulated over **all pixels of all images**, the per-class
``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` from it, and their mean over the classes (``nanmean``: a class absent
from both prediction and truth is left out). Target pixels outside 0-3 (nodata) are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from changescope.errors import GridMismatchError, ParameterError

__all__ = ["SWEEP_METRICS", "ThresholdSweep", "miou_4class", "threshold_sweep"]

SWEEP_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "youden")
"""Metrics whose best threshold :func:`threshold_sweep` reports."""
N_CLASSES = 4


@dataclass(frozen=True)
class ThresholdSweep:
    """Metrics of a binary decision ``score >= threshold`` at every candidate threshold (descending).

    Attributes:
        thresholds: ``(T,)`` thresholds, descending.
        accuracy: ``(T,)`` accuracy.
        balanced_accuracy: ``(T,)`` mean of TPR and TNR.
        precision: ``(T,)`` precision (0 where nothing is predicted changed).
        recall: ``(T,)`` recall, equal to ``tpr``.
        f1: ``(T,)`` F1.
        fpr: ``(T,)`` false-positive rate.
        tpr: ``(T,)`` true-positive rate.
        auc: ROC AUC.
        best: Per metric of :data:`SWEEP_METRICS`, ``{"threshold": t, "value": v}`` at its first maximum.
        n_positive: Changed items (label 1).
        n_negative: Unchanged items (label 0).
    """

    thresholds: NDArray[np.float64]
    accuracy: NDArray[np.float64]
    balanced_accuracy: NDArray[np.float64]
    precision: NDArray[np.float64]
    recall: NDArray[np.float64]
    f1: NDArray[np.float64]
    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    auc: float
    best: dict[str, dict[str, float]] = field(default_factory=dict)
    n_positive: int = 0
    n_negative: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data (lists and floats)."""
        curves = ("thresholds", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "fpr", "tpr")
        out: dict[str, Any] = {k: [float(v) for v in getattr(self, k)] for k in curves}
        out |= {"auc": self.auc, "best": self.best, "n_positive": self.n_positive, "n_negative": self.n_negative}
        return out


def _safe_div(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def threshold_sweep(scores: ArrayLike, labels: ArrayLike) -> ThresholdSweep:
    """Sweep the decision threshold over the scores (module docstring).

    Args:
        scores: ``(n,)`` change scores, higher = more likely changed.
        labels: ``(n,)`` truth, 1 = changed, 0 = unchanged (booleans accepted).

    Returns:
        The metrics per threshold, the AUC and the best thresholds.

    Raises:
        ParameterError: Shapes differ, non-finite scores, labels other than 0/1, or only one class present.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape or s.size == 0:
        raise ParameterError(f"scores ({s.size}) and labels ({y.size}) must be non-empty and of the same length")
    if not np.isfinite(s).all():
        raise ParameterError(f"scores hold {int((~np.isfinite(s)).sum())} non-finite values; drop or fill them")
    if not np.isin(y, (0, 1)).all():
        raise ParameterError(f"labels hold {sorted(set(np.unique(y).tolist()) - {0, 1})!r}; use 0 and 1 only")
    y = y.astype(np.int64)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ParameterError(f"labels hold {n_pos} changed and {n_neg} unchanged items; a sweep needs both classes")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    thr = np.where(np.isinf(thr), np.nextafter(s.max(), np.inf), thr)
    tp, fp = tpr * n_pos, fpr * n_neg
    tn, fn = n_neg - fp, n_pos - tp
    metrics = {
        "accuracy": (tp + tn) / y.size,
        "balanced_accuracy": (tpr + (1.0 - fpr)) / 2.0,
        "precision": _safe_div(tp, tp + fp),
        "recall": tpr,
        "f1": _safe_div(2.0 * tp, 2.0 * tp + fp + fn),
        "youden": tpr - fpr,
    }
    best = {}
    for name in SWEEP_METRICS:
        i = int(np.argmax(metrics[name]))
        best[name] = {"threshold": float(thr[i]), "value": float(metrics[name][i])}
    return ThresholdSweep(
        thresholds=thr.astype(np.float64),
        accuracy=metrics["accuracy"],
        balanced_accuracy=metrics["balanced_accuracy"],
        precision=metrics["precision"],
        recall=metrics["recall"],
        f1=metrics["f1"],
        fpr=fpr.astype(np.float64),
        tpr=tpr.astype(np.float64),
        auc=float(roc_auc_score(y, s)),
        best=best,
        n_positive=n_pos,
        n_negative=n_neg,
    )


def confusion_4class(
    pred: ArrayLike | Sequence[ArrayLike], target: ArrayLike | Sequence[ArrayLike]
) -> NDArray[np.int64]:
    """``(4, 4)`` confusion matrix (rows = truth, columns = prediction) over all pixels of all images.

    Args:
        pred: A predicted class raster, or a sequence of them (one per image).
        target: The truth raster(s), same shapes; values outside 0-3 are ignored.

    Raises:
        GridMismatchError: A prediction and its truth differ in shape, or the counts differ.
        ParameterError: A prediction outside 0-3 on a scored pixel.
    """
    preds = list(pred) if isinstance(pred, list | tuple) else [pred]
    targets = list(target) if isinstance(target, list | tuple) else [target]
    if len(preds) != len(targets):
        raise GridMismatchError(f"{len(preds)} predictions but {len(targets)} truth rasters; pair them one to one")
    cm = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    for i, (p_raw, t_raw) in enumerate(zip(preds, targets, strict=True)):
        p, t = np.asarray(p_raw), np.asarray(t_raw)
        if p.shape != t.shape:
            raise GridMismatchError(f"prediction {i} has shape {p.shape!r} but its truth {t.shape!r}")
        keep = (t >= 0) & (t < N_CLASSES)
        pk, tk = p[keep].astype(np.int64), t[keep].astype(np.int64)
        if pk.size and (pk.min() < 0 or pk.max() >= N_CLASSES):
            raise ParameterError(f"prediction {i} holds classes outside 0-3; predict 0 background .. 3 destroyed")
        cm += np.bincount(tk * N_CLASSES + pk, minlength=N_CLASSES * N_CLASSES).reshape(N_CLASSES, N_CLASSES)
    return cm


def miou_4class(pred: ArrayLike | Sequence[ArrayLike], target: ArrayLike | Sequence[ArrayLike]) -> dict[str, Any]:
    """The DFC25 track 2 mIoU over background, intact, damaged and destroyed (module docstring).

    Args:
        pred: Predicted class raster(s), values 0-3.
        target: Truth raster(s), values 0-3 (others ignored).

    Returns:
        ``{"miou": float, "iou": [4 floats, NaN where the class is absent], "confusion": 4 x 4 list}``.

    Raises:
        GridMismatchError: Shapes differ.
        ParameterError: Predictions outside 0-3, or no scored pixel at all.
    """
    cm = confusion_4class(pred, target)
    if cm.sum() == 0:
        raise ParameterError("no pixel with a truth class 0-3 was scored; check the truth rasters")
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
    return {"miou": float(np.nanmean(iou)), "iou": [float(v) for v in iou], "confusion": cm.tolist()}
