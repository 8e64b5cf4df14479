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
    peers = (
        ChangeScorer(method, "first", k=3, context="peers", n_peers=40, standardize=False)
        .fit(X, valid, times, pos)
        .scores_
    )
    assert set(np.argsort(-peers[6])[:4]) == set(changed)
    own = (
        ChangeScorer("distance", "first", k=3, metric="euclidean", context="none", standardize=False)
        .fit(X, valid, times)
        .scores_
    )
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
        ChangeScorer(context="x", standardize=False).fit(X, valid, times)


def _naive_peer_distance(X, valid, times, pos, n_peers, exclusion=2, k_nearest=3, reference="first", breaks=None):
    """Per date and patch, plainly: the nearest far-away scorable patches by reference state, then the mean
    distance of the patch's change to the ``k_nearest`` closest of their changes."""
    from changescope.change.reference import reference_mask

    ref, scored = reference_mask(valid, times, reference, 3, breaks=breaks)
    Xf = np.where(valid[..., None], X, 0.0)
    n_t, n, _ = X.shape
    out = np.full((n_t, n), np.nan)
    extra = (2 * exclusion + 1) ** 2
    for t in range(n_t):
        count = ref[t].sum(axis=0)
        idx = [i for i in range(n) if scored[t, i] and count[i] > 0]
        n_eff = min(n_peers, len(idx) - 1)
        if n_eff < max(k_nearest + 1, 5):
            continue
        state = np.zeros((n, X.shape[2]))
        for i in idx:
            state[i] = (ref[t][:, i, None] * Xf[:, i]).sum(axis=0) / count[i]
        n_query = min(len(idx), n_eff + extra + 1)
        cand = np.asarray(idx)
        for i in idx:
            dist = np.linalg.norm(state[cand] - state[i], axis=1)
            near = cand[np.lexsort((cand, dist))][:n_query]
            far = [j for j in near if max(abs(pos[j] - pos[i])) > exclusion][:n_eff]
            if len(far) < k_nearest:
                continue
            delta = Xf[t, i] - state[i]
            d = sorted(np.linalg.norm((Xf[t, j] - state[j]) - delta) for j in far)
            out[t, i] = np.mean(d[:k_nearest])
    return out


@pytest.mark.parametrize("cloudy", [0.2, 0.9])
def test_peer_distance_matches_a_naive_loop(cloudy):
    # cloudy=0.9 on one date leaves most fetched candidates unusable: the per-date fallback search
    X, valid, times, pos, _ = _landscape(seed=4, t=7)
    rng = np.random.default_rng(1)
    valid = rng.random(valid.shape) > 0.2
    valid[5] = rng.random(valid.shape[1]) > cloudy
    got = peer_scores(X, valid, times, pos, n_peers=30)
    want = _naive_peer_distance(X, valid, times, pos, n_peers=30)
    np.testing.assert_allclose(got, want, rtol=1e-9, equal_nan=True)
    assert np.isfinite(got[5]).sum() > 0


def test_peer_distance_with_breaks_matches_a_naive_loop():
    X, valid, times, pos, changed = _landscape(seed=2, t=9)
    breaks = np.zeros_like(valid)
    breaks[4, changed[:2]] = True  # two patches restart their reference: the per-date tables differ
    got = peer_scores(X, valid, times, pos, n_peers=30, breaks=breaks)
    want = _naive_peer_distance(X, valid, times, pos, n_peers=30, breaks=breaks)
    np.testing.assert_allclose(got, want, rtol=1e-9, equal_nan=True)


def test_patches_outside_the_swath_take_no_table_rows_and_keep_the_scores():
    # a corner never observed (nodata outside the orbit's swath) has no reference state: the shared neighbour
    # table holds rows only for the patches that have one, and the scores equal the plain loop's
    X, valid, times, pos, _ = _landscape(seed=5, t=7)
    rng = np.random.default_rng(3)
    valid = rng.random(valid.shape) > 0.1
    outside = (pos[:, 0] < 6) & (pos[:, 1] < 9)
    valid[:, outside] = False
    valid[4] &= rng.random(valid.shape[1]) > 0.8  # a cloudy date: its patches are searched again
    got = peer_scores(X, valid, times, pos, n_peers=30)
    want = _naive_peer_distance(X, valid, times, pos, n_peers=30)
    np.testing.assert_allclose(got, want, rtol=1e-9, equal_nan=True)
    assert np.isnan(got[:, outside]).all() and np.isfinite(got[:, ~outside]).any(axis=0).mean() > 0.9
