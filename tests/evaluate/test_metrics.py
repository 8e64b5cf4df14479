import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from changescope.errors import ParameterError
from changescope.evaluate.metrics import (
    MAX_CURVE_POINTS,
    best_f1,
    binary_metrics,
    fill_unscored,
    pixel_metrics,
    subsample_curve,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.3
    s = rng.normal(size=500) + 1.2 * y
    s[:50] = np.round(s[:50], 1)  # ties
    m = binary_metrics(y, s)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["n_pos"] == y.sum() and m["n_neg"] == (~y).sum()
    # the best-F1 operating point is the best over every candidate threshold
    best = max(f1_score(y, s >= t) for t in np.unique(s))
    assert m["best_f1"] == pytest.approx(best)
    assert f1_score(y, s >= m["threshold"]) == pytest.approx(m["best_f1"])
    assert len(m["roc"]["fpr"]) <= MAX_CURVE_POINTS and len(m["pr"]["recall"]) <= MAX_CURVE_POINTS
    assert m["roc"]["fpr"][0] == 0.0 and m["roc"]["tpr"][-1] == 1.0


def test_best_f1_hand_example():
    # sorted by score: 0.9(+) 0.8(-) 0.7(+) 0.6(+) 0.2(-) 0.1(+)
    y = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    # threshold 0.6: tp 3, fp 1, fn 1 -> P 0.75, R 0.75, F1 0.75; threshold 0.1: P 4/6, R 1, F1 0.8
    res = best_f1(y, s)
    assert res["threshold"] == pytest.approx(0.1)
    assert res["f1"] == pytest.approx(0.8)
    assert res["precision"] == pytest.approx(4 / 6) and res["recall"] == pytest.approx(1.0)
    # make the last positive negative: best becomes 0.6 (P 0.75, R 1, F1 6/7)
    y2 = y.copy()
    y2[-1] = False
    res2 = best_f1(y2, s)
    assert res2["threshold"] == pytest.approx(0.6) and res2["f1"] == pytest.approx(6 / 7)


def test_best_f1_ties_share_a_threshold():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.5, 0.5, 0.5, 0.1])
    res = best_f1(y, s)
    assert res["threshold"] == 0.5 and res["precision"] == pytest.approx(2 / 3) and res["recall"] == 1.0


def test_one_class_and_bad_inputs():
    m = binary_metrics(np.zeros(4, bool), np.arange(4.0))
    assert m["auc"] is None and m["ap"] is None and m["best_f1"] == 0.0 and m["roc"] == {"fpr": [], "tpr": []}
    with pytest.raises(ParameterError, match="fill_unscored"):
        binary_metrics([True, False], [np.nan, 1.0])
    with pytest.raises(ParameterError, match="one score per sample"):
        binary_metrics([True, False], [1.0])


def test_fill_unscored_ranks_last():
    out = fill_unscored([np.nan, 2.0, -1.0, np.inf])
    np.testing.assert_array_equal(out, [-2.0, 2.0, -1.0, -2.0])
    assert (fill_unscored([np.nan]) == 0).all()


def test_subsample_keeps_ends():
    x, y = subsample_curve(np.linspace(0, 1, 1001), np.linspace(0, 1, 1001) ** 2, max_points=50)
    assert len(x) <= 50 and x[0] == 0.0 and x[-1] == 1.0 and y[-1] == 1.0


def test_pixel_metrics_constructed_case():
    truth = np.zeros((10, 10), bool)
    truth[:4, :5] = True  # 20 changed pixels
    pred = np.zeros((10, 10), bool)
    pred[:4, :] = True  # 40 predicted: 20 right, 20 wrong
    known = np.ones((10, 10), bool)
    known[:, 9] = False  # drop a column: 4 false positives fewer
    m = pixel_metrics(pred, truth, known)
    assert m["precision"] == pytest.approx(20 / 36) and m["recall"] == 1.0
    assert m["f1"] == pytest.approx(2 * (20 / 36) / (20 / 36 + 1))
    assert m["n_pixels"] == 90 and m["n_changed"] == 20
    assert pixel_metrics(np.zeros(3, bool), np.zeros(3, bool))["f1"] == 0.0
    with pytest.raises(ParameterError, match="pixel grid"):
        pixel_metrics(pred, truth[:5])
