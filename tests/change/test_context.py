import numpy as np
import pandas as pd
import pytest

from changescope.change import ChangeScorer
from changescope.change.context import peer_scores
from changescope.errors import ParameterError


def _landscape(seed=0, side=20, t=10, d=6):
    """Eight land-cover types with their own seasonal swings (some large), 4 patches that change."""
    rng = np.random.default_rng(seed)
    n = side * side
    kind = rng.integers(0, 8, size=n)
    base = rng.normal(size=(8, d))[kind]
    swing = rng.normal(size=(t, 8, d)).cumsum(axis=0) * np.linspace(0.2, 3.0, 8)[None, :, None]
    X = base[None] + swing[:, kind]
    X = X + 0.05 * rng.normal(size=X.shape)
    changed = np.array([3 * side + 3, 3 * side + 15, 15 * side + 4, 16 * side + 16])
    X[6:, changed] += 1.5  # a real change at t=6, smaller than the seasonal swings
    pos = np.stack(np.divmod(np.arange(n), side), axis=1)
    return X, np.ones((t, n), bool), pd.date_range("2020", periods=t, freq="MS"), pos, changed


@pytest.mark.parametrize("method", ["distance", "lof"])
def test_peers_find_changes_that_seasons_hide(method):
    X, valid, times, pos, changed = _landscape()
    peers = ChangeScorer(method, "first", k=3, context="peers", n_peers=40).fit(X, valid, times, pos).scores_
    assert set(np.argsort(-peers[6])[:4]) == set(changed)
    own = ChangeScorer("distance", "first", k=3, metric="euclidean").fit(X, valid, times).scores_
    assert set(np.argsort(-own[6])[:4]) != set(changed)  # the seasons swamp a patch's own history


def test_peer_distance_ignores_a_global_shift_per_date():
    X, valid, times, pos, _ = _landscape(seed=1)
    shifted = X + np.random.default_rng(2).normal(scale=5.0, size=(X.shape[0], 1, X.shape[2]))
    a = peer_scores(X, valid, times, pos, n_peers=40)
    b = peer_scores(shifted, valid, times, pos, n_peers=40)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, equal_nan=True)


def test_spatial_exclusion_keeps_a_large_event_from_being_its_own_peer():
    X, valid, times, pos, _ = _landscape(seed=3)
    block = np.nonzero((pos[:, 0] < 4) & (pos[:, 1] < 4))[0]  # one large event: 16 adjacent patches change alike
    noise = 0.05 * np.random.default_rng(4).normal(size=(X.shape[0], len(block), X.shape[2]))
    X[:, block] = X[:, block[:1]] + noise  # ... and were alike before (one field, one land cover)
    X[6:, block] += 1.5
    near = peer_scores(X, valid, times, pos, n_peers=20, exclusion=0)
    far = peer_scores(X, valid, times, pos, n_peers=20, exclusion=4)
    assert np.median(far[6, block]) > 2 * np.median(near[6, block])


def test_invalid_observations_and_bad_arguments():
    X, valid, times, pos, _ = _landscape()
    valid[6, 5] = False
    X[6, 5] = 1e6
    s = peer_scores(X, valid, times, pos, n_peers=40)
    assert np.isnan(s[6, 5]) and np.isfinite(s[6, 6])
    assert np.nanmax(s[6]) < 1e3  # the garbage never enters anyone's peers
    with pytest.raises(ParameterError, match="method="):
        peer_scores(X, valid, times, pos, method="x")
    with pytest.raises(ParameterError, match="context="):
        ChangeScorer(context="x").fit(X, valid, times)
