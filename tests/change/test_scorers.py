import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import LocalOutlierFactor

from changescope.change import ChangeScorer, PatchDistance, PatchLOF, reference_mask, robust_zscore
from changescope.errors import ParameterError

pytestmark = pytest.mark.filterwarnings("ignore:n_neighbors .* is greater than:UserWarning")


def _naive_lof(R, mask, Q, k):
    out = np.full(Q.shape[:2], np.nan)
    for n in range(R.shape[0]):
        ref = R[n][mask[n]]
        if len(ref) < 2:
            continue
        lof = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(ref)
        out[n] = -lof.score_samples(Q[n])
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5, 20])
@pytest.mark.parametrize("dim", [2, 16])
def test_patch_lof_matches_sklearn(k, dim):
    rng = np.random.default_rng(k * 100 + dim)
    n, kk, m = 40, 7, 4
    R = rng.normal(size=(n, kk, dim))
    mask = rng.random((n, kk)) < 0.8
    mask[0] = False
    mask[0, :1] = True  # one reference: not scorable
    Q = rng.normal(size=(n, m, dim)) * rng.uniform(0.5, 3, size=(n, m, 1))
    got = PatchLOF(n_neighbors=k).fit(R, mask).score(Q)
    want = _naive_lof(R, mask, Q, k)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, equal_nan=True)
    assert np.isnan(got[0]).all()


def test_patch_distance():
    R = np.array([[[1.0, 0.0], [3.0, 0.0]], [[0.0, 2.0], [np.nan, np.nan]]])
    mask = np.array([[True, True], [True, True]])
    Q = np.array([[[2.0, 2.0]], [[0.0, 5.0]]])
    d = PatchDistance("euclidean").fit(R, mask)
    np.testing.assert_allclose(d.centroid_, [[2.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(d.score(Q), [[2.0], [3.0]])
    c = PatchDistance("cosine").fit(R, mask).score(Q * 10)
    np.testing.assert_allclose(c, [[1 - np.cos(np.pi / 4)], [0.0]], atol=1e-12)


def test_reference_strategies():
    valid = np.array([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1]], dtype=bool)
    times = pd.date_range("2020-01-01", periods=5, freq="MS")
    ref, scored = reference_mask(valid, times, "first", k=2)
    assert ref[4, :, 0].tolist() == [True, True, False, False, False]
    assert ref[4, :, 1].tolist() == [True, False, True, False, False]  # date 1 invalid for patch 1
    assert scored[:, 0].tolist() == [False, False, False, True, True]
    ref, scored = reference_mask(valid, times, "previous")
    assert ref[3, :, 0].tolist() == [False, True, False, False, False]
    assert ref[3, :, 1].tolist() == [False, False, True, False, False]
    assert not scored[0].any()
    ref, _ = reference_mask(valid, times, "rolling", k=2)
    assert ref[4, :, 1].tolist() == [False, False, True, True, False]
    yearly = pd.DatetimeIndex(["2020-01-01", "2020-07-01", "2021-01-10", "2021-07-01"])
    ref, scored = reference_mask(np.ones((4, 1), bool), yearly, "season", season_window=30)
    assert ref[2, :, 0].tolist() == [True, False, False, False]
    assert ref[3, :, 0].tolist() == [False, True, False, False]
    assert scored[:, 0].tolist() == [False, False, True, True]
    with pytest.raises(ParameterError, match="reference='bogus'"):
        reference_mask(valid, times, "bogus")


def _series(seed=0, t=8, n=200, d=6):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(1, n, d))
    X = base + 0.05 * rng.normal(size=(t, n, d))
    X[5:, :10] += 3.0  # 10 patches change at t=5
    return X, np.ones((t, n), bool), pd.date_range("2020", periods=t, freq="MS")


@pytest.mark.parametrize("method", ["distance", "lof"])
@pytest.mark.parametrize("reference", ["first", "previous", "rolling"])
def test_change_scorer_finds_changes(method, reference):
    X, valid, times = _series()
    if method == "lof" and reference == "previous":
        with pytest.raises(ParameterError, match="at least 2 reference"):
            ChangeScorer(method, reference, context="none", standardize=False).fit(X, valid, times)
        return
    s = (
        ChangeScorer(method, reference, k=3, metric="euclidean", context="none", standardize=False)
        .fit(X, valid, times)
        .scores_
    )
    top = np.argsort(-s[5])[:10]
    assert set(top) == set(range(10))


def test_series_lof_equals_naive_loop_per_patch():
    X, valid, times = _series(seed=2, t=7, n=30, d=4)
    rng = np.random.default_rng(9)
    valid &= rng.random(valid.shape) < 0.8
    sc = ChangeScorer(
        "lof", "rolling", k=4, n_neighbors=3, normalize=False, chunk=7, context="none", standardize=False
    ).fit(X, valid, times)
    ref, scored = reference_mask(valid, times, "rolling", k=4)
    for t in range(7):
        for n in range(30):
            refs = X[ref[t, :, n], n]
            if not scored[t, n] or len(refs) < 2:
                assert np.isnan(sc.raw_scores_[t, n])
                continue
            want = -LocalOutlierFactor(n_neighbors=3, novelty=True).fit(refs).score_samples(X[t, n][None])[0]
            assert sc.raw_scores_[t, n] == pytest.approx(want, rel=1e-6)


def test_invalid_observations_never_score_nor_reference():
    X, valid, times = _series()
    valid[6, 3] = False
    X[6, 3] = 1e6  # garbage under a cloud
    sc = ChangeScorer("distance", "rolling", k=2, context="none", standardize=False).fit(X, valid, times)
    assert np.isnan(sc.scores_[6, 3])
    clean = ChangeScorer("distance", "rolling", k=2, context="none", standardize=False).fit(
        np.where(valid[..., None], X, 0), valid, times
    )
    np.testing.assert_allclose(sc.raw_scores_[7], clean.raw_scores_[7])


def test_robust_zscore_cancels_a_global_shift():
    rng = np.random.default_rng(0)
    s = rng.gamma(2.0, size=(3, 500))
    shifted = s.copy()
    shifted[1] = shifted[1] * 3 + 5  # haze/illumination: every patch's score of date 1 inflates
    z, zs = robust_zscore(s), robust_zscore(shifted)
    np.testing.assert_allclose(z[1], zs[1], atol=1e-9)
    assert np.nanmedian(zs, axis=1) == pytest.approx(np.zeros(3), abs=1e-9)


def test_bad_arguments():
    X, valid, times = _series()
    with pytest.raises(ParameterError, match="method='x'"):
        ChangeScorer("x", context="none", standardize=False).fit(X, valid, times)
    with pytest.raises(ParameterError, match="valid has shape"):
        ChangeScorer(context="none", standardize=False).fit(X, valid[:, :5], times)
    with pytest.raises(ParameterError, match="times"):
        ChangeScorer(context="none", standardize=False).fit(X, valid, times[:3])
    with pytest.raises(ParameterError, match="n_neighbors"):
        PatchLOF(0).fit(X[:2].transpose(1, 0, 2), valid[:2].T)


def test_robust_zscore_in_place_equals_a_new_array():
    rng = np.random.default_rng(8)
    s = rng.gamma(2.0, size=(6, 300))
    s[rng.random(s.shape) < 0.2] = np.nan
    s[4, 3:] = np.nan  # a date with too few scored patches
    expected = robust_zscore(s)
    work = s.copy()
    got = robust_zscore(work, out=work)
    assert got is work
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[4]).all()
    with pytest.raises(ParameterError, match="out has shape"):
        robust_zscore(s, out=np.zeros((6, 299)))
