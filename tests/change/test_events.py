import numpy as np
import pandas as pd
import pytest

from changescope.change import ChangeScorer, extract_events, pick_threshold
from changescope.errors import ParameterError


def _series(seed=0):
    rng = np.random.default_rng(seed)
    t, n, d = 10, 300, 5
    X = rng.normal(size=(1, n, d)) + 0.05 * rng.normal(size=(t, n, d))
    X[4:, 0:5] += 2.0  # permanent change at t=4
    X[6, 5:10] += 2.0  # one-date glitch at t=6
    X[9:, 10:13] += 2.0  # change at the last date: cannot be confirmed yet
    return X, np.ones((t, n), bool), pd.date_range("2020", periods=t, freq="MS")


@pytest.mark.parametrize("reference", ["first", "rolling", "previous"])
def test_persistence_keeps_real_changes_and_rejects_glitches(reference):
    X, valid, times = _series()
    s = (
        ChangeScorer("distance", reference, k=3, metric="euclidean", context="none", standardize=False)
        .fit(X, valid, times)
        .scores_
    )
    ev = extract_events(X, valid, times, s, reference=reference, k=3, threshold=10.0, persistence=2)
    f = ev.frame
    confirmed = f[f.confirmed]
    assert set(confirmed.patch) == set(range(5))
    assert (confirmed.t == 4).all()
    assert not set(f.patch) & set(range(5, 10))  # glitches rejected
    late = f[f.patch.isin(range(10, 13))]
    assert set(late.patch) == {10, 11, 12} and not late.confirmed.any() and (late.t == 9).all()
    # change vectors point from the before to the after state
    np.testing.assert_allclose(ev.vectors[confirmed.index].mean(axis=1), 2.0, atol=0.15)
    assert ev.frame.magnitude.iloc[0] == pytest.approx(np.linalg.norm(ev.vectors[0]))
    no_late = extract_events(
        X, valid, times, s, reference=reference, threshold=10.0, persistence=2, keep_unconfirmed=False
    )
    assert no_late.frame.confirmed.all()


def test_one_event_per_run_with_first_reference():
    X, valid, times = _series()
    s = (
        ChangeScorer("distance", "first", k=3, metric="euclidean", context="none", standardize=False)
        .fit(X, valid, times)
        .scores_
    )
    ev = extract_events(X, valid, times, s, threshold=10.0, persistence=0)
    assert ev.frame[ev.frame.patch < 5].shape[0] == 5


def test_thresholds():
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.normal(0, 1, 5000), rng.normal(10, 1, 200), [np.nan] * 10])
    for m in ("otsu", "gmm"):
        thr = pick_threshold(s, m)
        assert 2 < thr < 9, (m, thr)
    assert pick_threshold(s, "quantile", q=0.5) == pytest.approx(np.nanmedian(s))
    assert pick_threshold(s, 3.5) == 3.5
    with pytest.raises(ParameterError, match="threshold='nope'"):
        pick_threshold(s, "nope")
    with pytest.raises(ParameterError, match="no scores"):
        pick_threshold(np.full(5, np.nan))


def test_invalid_observations_do_not_confirm_or_create():
    X, valid, times = _series()
    valid[5, 0] = False
    X[5, 0] = -50  # garbage under a cloud right after the change
    s = (
        ChangeScorer("distance", "first", k=3, metric="euclidean", context="none", standardize=False)
        .fit(X, valid, times)
        .scores_
    )
    ev = extract_events(X, valid, times, s, threshold=10.0, persistence=2)
    row = ev.frame[ev.frame.patch == 0].iloc[0]
    assert row.confirmed and row.t == 4 and row.n_after == 3
