"""Binary detection metrics: ROC/PR curves, AUC, average precision, the best-F1 threshold, pixel F1.

The curves come from scikit-learn (``roc_curve``, ``precision_recall_curve``); the scalar summaries are
``roc_auc_score`` and ``average_precision_score``, so numbers match what anyone computes with scikit-learn.

Scores must be finite: callers replace the score of a patch that was never scored by :func:`fill_unscored`
(it then ranks below every scored patch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from changescope.errors import ParameterError

__all__ = [
    "MAX_CURVE_POINTS",
    "best_f1",
    "binary_metrics",
    "fill_unscored",
    "pixel_metrics",
    "subsample_curve",
]

MAX_CURVE_POINTS = 200
"""Curves stored in ``metrics.json`` keep at most this many points."""


def fill_unscored(scores: ArrayLike) -> NDArray[np.float64]:
    """Replace NaN/inf scores with a value below every finite score (``min - 1``; ``0`` when none is finite).

    A patch that was never scored (clouded at every date, or outside the reference) counts as "no change
    detected", so it stays in the evaluation instead of silently dropping out.
    """
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    low = float(s[finite].min()) - 1.0 if finite.any() else 0.0
    return np.where(finite, s, low)


def _check(y_true: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ParameterError(f"y_true has {y.size} values but scores has {s.size}; pass one score per sample")
    if not np.isfinite(s).all():
        raise ParameterError("scores hold NaN or inf; replace unscored samples with fill_unscored() first")
    return y, s


def subsample_curve(x: ArrayLike, y: ArrayLike, max_points: int = MAX_CURVE_POINTS) -> tuple[list[float], list[float]]:
    """Keep at most ``max_points`` points of a curve, always including its first and last points."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.size > max_points:
        idx = np.unique(np.linspace(0, xa.size - 1, max_points).round().astype(int))
        xa, ya = xa[idx], ya[idx]
    return [round(float(v), 6) for v in xa], [round(float(v), 6) for v in ya]


def best_f1(y_true: ArrayLike, scores: ArrayLike) -> dict[str, float]:
    """The threshold that maximises F1 when predicting ``score >= threshold`` as change.

    Every distinct score is a candidate threshold; ties in F1 go to the highest threshold.

    Returns:
        ``{"f1", "threshold", "precision", "recall"}`` (all 0 and threshold inf when there is no positive).

    Raises:
        ParameterError: Shapes differ or scores are not finite.
    """
    y, s = _check(y_true, scores)
    n_pos = int(y.sum())
    if n_pos == 0 or s.size == 0:
        return {"f1": 0.0, "threshold": float("inf"), "precision": 0.0, "recall": 0.0}
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s.size - 1]  # last index of each distinct score
    tp, fp, thr = tp[last], fp[last], s_sorted[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)
    i = int(np.argmax(f1))  # first max = highest threshold
    return {
        "f1": float(f1[i]),
        "threshold": float(thr[i]),
        "precision": float(precision[i]),
        "recall": float(recall[i]),
    }


def binary_metrics(y_true: ArrayLike, scores: ArrayLike, *, curves: bool = True) -> dict[str, Any]:
    """AUC, average precision and the best-F1 operating point of scores against binary truth.

    Args:
        y_true: True where the sample changed.
        scores: One finite score per sample (higher = more change).
        curves: Include the ROC curve ``roc: {fpr, tpr}`` and PR curve ``pr: {precision, recall}``, each
            subsampled to at most :data:`MAX_CURVE_POINTS` points.

    Returns:
        ``{auc, ap, best_f1, threshold, precision, recall, n_pos, n_neg[, roc, pr]}``; ``auc`` and ``ap`` are
        ``None`` when one class is absent (they are undefined).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    y, s = _check(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    both = n_pos > 0 and n_neg > 0
    op = best_f1(y, s)
    out: dict[str, Any] = {
        "auc": float(roc_auc_score(y, s)) if both else None,
        "ap": float(average_precision_score(y, s)) if both else None,
        "best_f1": op["f1"],
        "threshold": op["threshold"] if np.isfinite(op["threshold"]) else None,
        "precision": op["precision"],
        "recall": op["recall"],
        "n_pos": n_pos,
        "n_neg": n_neg,
    }
    if curves:
        if both:
            fpr, tpr, _ = roc_curve(y, s)
            prec, rec, _ = precision_recall_curve(y, s)
            out["roc"] = dict(zip(("fpr", "tpr"), subsample_curve(fpr, tpr), strict=True))
            out["pr"] = dict(zip(("precision", "recall"), subsample_curve(prec, rec), strict=True))
        else:
            out["roc"] = {"fpr": [], "tpr": []}
            out["pr"] = {"precision": [], "recall": []}
    return out


def pixel_metrics(predicted: ArrayLike, changed: ArrayLike, known: ArrayLike | None = None) -> dict[str, Any]:
    """Precision, recall and F1 of a binary change map against the pixel truth.

    Args:
        predicted: Predicted change per pixel.
        changed: True change per pixel (same shape).
        known: Pixels to count (default: all).

    Returns:
        ``{f1, precision, recall, n_pixels, n_changed}`` (precision/recall/F1 are 0 when undefined).
    """
    p = np.asarray(predicted).astype(bool)
    t = np.asarray(changed).astype(bool)
    k = np.ones_like(t) if known is None else np.asarray(known).astype(bool)
    if not (p.shape == t.shape == k.shape):
        raise ParameterError(
            f"predicted {p.shape!r}, changed {t.shape!r} and known {k.shape!r} must share one pixel grid"
        )
    tp = int((p & t & k).sum())
    fp = int((p & ~t & k).sum())
    fn = int((~p & t & k).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "n_pixels": int(k.sum()),
        "n_changed": int((t & k).sum()),
    }
