"""The threshold sweep against scikit-learn at each threshold, and the DFC25 4-class mIoU against a loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from changescope.errors import GridMismatchError, ParameterError
from changescope.multimodal.metrics import SWEEP_METRICS, miou_4class, threshold_sweep


def _scores(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = rng.normal(y * 1.2, 1.0).round(1)  # rounding makes ties, which the sweep must handle
    return s, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_at_every_threshold(seed):
    s, y = _scores(seed)
    sweep = threshold_sweep(s, y)
    assert np.all(np.diff(sweep.thresholds) < 0)
    assert sweep.auc == pytest.approx(skm.roc_auc_score(y, s))
    assert (sweep.n_positive, sweep.n_negative) == (int(y.sum()), int((1 - y).sum()))
    for i, t in enumerate(sweep.thresholds):
        pred = (s >= t).astype(int)
        assert sweep.accuracy[i] == pytest.approx(skm.accuracy_score(y, pred))
        assert sweep.balanced_accuracy[i] == pytest.approx(skm.balanced_accuracy_score(y, pred))
        assert sweep.precision[i] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
        assert sweep.recall[i] == pytest.approx(skm.recall_score(y, pred))
        assert sweep.f1[i] == pytest.approx(skm.f1_score(y, pred, zero_division=0))
        tn, fp, _, _ = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
        assert sweep.fpr[i] == pytest.approx(fp / (fp + tn))


def test_best_thresholds_are_the_brute_force_maxima():
    s, y = _scores(3)
    sweep = threshold_sweep(s, y)
    candidates = np.unique(s)
    for name, fn in (("f1", skm.f1_score), ("balanced_accuracy", skm.balanced_accuracy_score)):
        values = [fn(y, (s >= t).astype(int)) for t in candidates]
        assert sweep.best[name]["value"] == pytest.approx(max(values))
        assert fn(y, (s >= sweep.best[name]["threshold"]).astype(int)) == pytest.approx(max(values))
    assert set(sweep.best) == set(SWEEP_METRICS)
    json.dumps(sweep.to_dict(), allow_nan=False)  # JSON-safe: the leading infinite threshold is replaced
    assert sweep.thresholds[0] > s.max() and sweep.tpr[0] == 0


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, 0.2], [0, 1, 1], "same length"),
        ([0.1, np.nan], [0, 1], "non-finite"),
        ([0.1, 0.2], [0, 2], "labels hold"),
        ([0.1, 0.2], [1, 1], "needs both classes"),
    ],
)
def test_sweep_errors(scores, labels, match):
    with pytest.raises(ParameterError, match=match):
        threshold_sweep(scores, labels)


def naive_miou(preds, targets):
    ious = []
    for c in range(4):
        tp = fp = fn = 0
        for p, t in zip(preds, targets, strict=True):
            for pv, tv in zip(p.ravel().tolist(), t.ravel().tolist(), strict=True):
                if tv not in (0, 1, 2, 3):
                    continue
                tp += pv == c and tv == c
                fp += pv == c and tv != c
                fn += pv != c and tv == c
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
    return sum(ious) / len(ious)


def test_miou_matches_a_loop_over_all_pixels_of_all_images():
    rng = np.random.default_rng(0)
    targets = [rng.integers(0, 4, (12, 9)) for _ in range(3)]
    targets[1][0, :] = 255  # nodata, ignored
    preds = [np.where(rng.random(t.shape) < 0.6, t, rng.integers(0, 4, t.shape)) % 4 for t in targets]
    got = miou_4class(preds, targets)
    assert got["miou"] == pytest.approx(naive_miou(preds, targets))
    per_image = np.mean([miou_4class(p, t)["miou"] for p, t in zip(preds, targets, strict=True)])
    assert got["miou"] != pytest.approx(per_image)  # accumulated over the data set, not averaged per image
    assert np.sum(got["confusion"]) == sum(int(((t >= 0) & (t < 4)).sum()) for t in targets)


def test_miou_leaves_out_absent_classes_and_checks_inputs():
    t = np.array([[0, 0, 1, 1]])
    got = miou_4class(np.array([[0, 1, 1, 1]]), t)
    assert got["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert np.isnan(got["iou"][2]) and np.isnan(got["iou"][3])
    with pytest.raises(GridMismatchError, match="shape"):
        miou_4class(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="outside 0-3"):
        miou_4class(np.full((2, 2), 5), np.zeros((2, 2)))
    with pytest.raises(ParameterError, match="no pixel"):
        miou_4class(np.zeros((2, 2)), np.full((2, 2), 255))
