"""Calibrated decisions: null models, confirmed p-values, NFA / FDR, and false alarms on pure noise."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from changescope.change.calibrate import NullModel, PatchNoise, bh_threshold, decide
from changescope.change.store import score_events
from changescope.errors import ParameterError
from changescope.run import RunConfig


@pytest.mark.parametrize(
    ("draw", "tight"),
    [
        (lambda rng, n: rng.normal(size=n), False),  # light tail: the exponential floor of the tail is conservative
        (lambda rng, n: rng.standard_t(4, size=n), True),  # heavy tail
        (lambda rng, n: rng.standard_t(2, size=n), True),  # very heavy tail
        (lambda rng, n: rng.gamma(2.0, size=n), True),  # skewed, like distances
    ],
    ids=["normal", "student4", "student2", "gamma"],
)
def test_null_model_p_values_hold_their_level_far_into_the_tail(draw, tight):
    rng = np.random.default_rng(0)
    null = NullModel.fit(draw(rng, 6000))
    fresh = null.sf(draw(rng, 400_000))
    for alpha in (0.1, 0.01, 0.001, 0.0002):  # 0.0002 is beyond the 1 / 6000 an empirical null alone resolves
        ratio = float(np.mean(fresh <= alpha)) / alpha
        assert ratio <= 1.6, (alpha, ratio)  # valid: false alarms at most at the nominal rate (binomial slack)
        if tight or alpha >= 0.01:
            assert ratio >= 0.3, (alpha, ratio)  # and not uselessly conservative


def test_null_model_gaussian_fallback_and_inverse():
    assert NullModel.fit(np.arange(50.0)).kind == "gaussian"
    g = NullModel.gaussian()
    np.testing.assert_allclose(g.sf(np.array([0.0, 3.0])), stats.norm.sf([0.0, 3.0]))
    fitted = NullModel.fit(np.random.default_rng(1).normal(size=5000))
    for p in (0.3, 0.05, 1e-4):
        assert fitted.sf(np.array([fitted.isf(p)]))[0] == pytest.approx(p, rel=0.05)
    assert np.isnan(fitted.sf(np.array([np.nan]))[0])


def test_bh_threshold_matches_the_step_up_rule():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=900), rng.uniform(0, 1e-4, size=100)])
    thr = bh_threshold(p, 0.05)
    ranked = np.sort(p)
    passing = [i for i in range(p.size) if ranked[i] <= 0.05 * (i + 1) / p.size]
    assert thr == ranked[passing[-1]]
    assert bh_threshold(rng.uniform(0.5, 1, size=100), 0.05) == 0.0


def test_decide_nfa_threshold_and_bad_levels():
    p = np.full((10, 500), 0.5)
    d = decide(p, 500, rule="nfa", false_alarms=2.0)
    assert d.p_threshold == pytest.approx(2.0 * 500 / 1000 / 5000)
    assert d.nfa(np.array([d.p_threshold]))[0] == pytest.approx(1.0)  # epsilon = 1 false alarm for the run
    for kw in ({"rule": "otsu"}, {"false_alarms": 0.0}, {"fdr": 1.5, "rule": "fdr"}):
        with pytest.raises(ParameterError):
            decide(p, 500, **kw)


def _store(X: np.ndarray, valid_fraction: np.ndarray, side: int) -> xr.Dataset:
    """An in-memory embeddings store ``(time, row, col, dim)``."""
    n_t, _, dim = X.shape
    times = pd.date_range("2020-01-01", periods=n_t, freq="MS")
    return xr.Dataset(
        {
            "embedding": (("time", "row", "col", "dim"), X.reshape(n_t, side, side, dim).astype(np.float32)),
            "valid_fraction": (("time", "row", "col"), valid_fraction.reshape(n_t, side, side)),
        },
        coords={"time": times},
        attrs={"patch_size": 16, "stride": 16},
    )


def _noise(seed: int, side: int = 24, n_t: int = 12, dim: int = 8, cloudy: float = 0.15):
    rng = np.random.default_rng(seed)
    n = side * side
    land = rng.normal(size=(6, dim))[rng.integers(0, 6, size=n)]  # six land covers, each its own level
    season = rng.normal(scale=0.5, size=(n_t, 6, dim)).cumsum(axis=0)[:, rng.integers(0, 6, size=n)]
    X = land[None] + 0.3 * season + rng.normal(scale=0.2, size=(n_t, n, dim))
    vf = np.where(rng.uniform(size=(n_t, n)) < cloudy, 0.0, 1.0)
    return X, vf


CFG = RunConfig(patch_size=16, subdivide=1, false_alarms=5.0)


def test_false_alarms_on_pure_noise_stay_within_their_bound():
    n_false = n_patches = 0
    for seed in range(8):
        X, vf = _noise(seed)
        found = score_events(_store(X, vf, 24), None, CFG, 1)
        frame = found.events.frame
        n_false += int(frame["confirmed"].sum())
        n_patches += 24 * 24
        assert found.events.decision is not None and found.events.decision.null["kind"] == "reference"
    bound = CFG.false_alarms * n_patches / 1000  # expected false changes at most
    # a Poisson count of mean `bound` exceeds this with probability < 1e-4
    assert n_false <= stats.poisson.ppf(1 - 1e-4, bound), (n_false, bound)


def test_otsu_finds_changes_in_pure_noise_where_the_test_finds_none():
    X, vf = _noise(11)
    otsu = score_events(_store(X, vf, 24), None, RunConfig(patch_size=16, subdivide=1, threshold="otsu"), 1)
    nfa = score_events(_store(X, vf, 24), None, CFG, 1)
    assert otsu.events.frame["confirmed"].sum() > 10 * max(1, nfa.events.frame["confirmed"].sum())


def test_real_changes_are_found_dated_and_the_rest_stays_quiet():
    X, vf = _noise(21, cloudy=0.0)
    side = 24
    clear_change = [5 * side + 5, 12 * side + 17, 20 * side + 3]
    hidden = 8 * side + 9  # the change happens under clouds at dates 6 and 7
    late = 16 * side + 12  # a change at the last date: nothing can confirm it
    X[6:, clear_change] += 3.0
    X[6:, hidden] += 3.0
    vf[6:8, hidden] = 0.0
    X[11, late] += 3.0
    found = score_events(_store(X, vf, side), None, CFG, 1)
    f = found.events.frame
    times = pd.date_range("2020-01-01", periods=12, freq="MS")
    done = f[f["status"] == "confirmed"]
    for n in clear_change:
        ev = done[done["patch"] == n]
        assert len(ev) == 1, n
        assert ev["time"].iloc[0] == times[6] and ev["date_earliest"].iloc[0] == times[5]
        assert ev["p_value"].iloc[0] < 1e-4 and ev["nfa"].iloc[0] <= CFG.false_alarms * side * side / 1000
    ev = done[done["patch"] == hidden]
    assert len(ev) == 1
    assert ev["date_earliest"].iloc[0] == times[5] and ev["date_latest"].iloc[0] == times[8]
    assert ev["time"].iloc[0] == times[8]
    at_end = f[f["patch"] == late]
    assert len(at_end) == 1 and at_end["status"].iloc[0] == "pending" and not at_end["confirmed"].iloc[0]
    others = set(done["patch"]) - {*clear_change, hidden}
    assert len(others) <= 3


# ---------------------------------------------------------------------------------------------------------------------
# Each patch's own noise (null_scale="patch")
# ---------------------------------------------------------------------------------------------------------------------


def test_patch_noise_levels_and_leave_out_samples_match_a_naive_loop():
    rng = np.random.default_rng(3)
    n_t, n = 4, 50
    null_z = np.full((6, n), np.nan)
    null_z[:n_t] = np.abs(rng.normal(size=(n_t, n))) * rng.choice([1.0, 6.0], size=n)  # quiet and noisy patches
    null_z[1, :5] = np.nan  # a few patches miss a reference observation
    noise = PatchNoise.fit(null_z)
    positive = np.median(np.maximum(null_z[np.isfinite(null_z)], 0))
    assert noise.floor == pytest.approx(max(1.0, 2.0 * positive))
    confirmed, single = noise.null_samples(null_z, confirm=1)
    want_conf, want_single = [], []
    for j in range(n):
        v = null_z[np.isfinite(null_z[:, j]), j]
        assert noise.level[j] == pytest.approx(np.median(np.maximum(v, 0)))
        for width, out in ((2, want_conf), (1, want_single)):
            for a in range(v.size - width + 1):
                rest = np.delete(v, np.arange(a, a + width))
                out.append(v[a : a + width].min() / (noise.floor + np.median(np.maximum(rest, 0))))
    assert np.sort(confirmed) == pytest.approx(np.sort(want_conf))
    assert np.sort(single) == pytest.approx(np.sort(want_single))
    s = noise.studentize(null_z)
    assert s[0] == pytest.approx(null_z[0] / (noise.floor + noise.level))
    with pytest.raises(ParameterError):
        noise.null_samples(null_z, confirm=-1)


def _uneven_noise(seed: int, side: int = 24, n_t: int = 12, dim: int = 8):
    """Like :func:`_noise`, but a fifth of the patches are five times noisier at every date (edges, bright roofs)."""
    X, vf = _noise(seed, side, n_t, dim)
    rng = np.random.default_rng(1000 + seed)
    noisy = rng.uniform(size=side * side) < 0.2
    X[:, noisy] += rng.normal(scale=0.8, size=(n_t, int(noisy.sum()), dim))
    return X, vf, noisy


@pytest.mark.parametrize("scale", ["patch", "aoi"])
def test_false_alarms_stay_within_their_bound_when_patches_differ_in_noise(scale):
    cfg = RunConfig(patch_size=16, subdivide=1, false_alarms=5.0, null_scale=scale)
    n_false = n_patches = 0
    for seed in range(6):
        X, vf, _ = _uneven_noise(seed)
        found = score_events(_store(X, vf, 24), None, cfg, 1)
        n_false += int(found.events.frame["confirmed"].sum())
        n_patches += 24 * 24
        assert found.events.decision is not None
        assert found.events.decision.null["scale"] == scale
    bound = cfg.false_alarms * n_patches / 1000
    assert n_false <= stats.poisson.ppf(1 - 1e-4, bound), (n_false, bound)


def test_the_patch_null_finds_changes_on_quiet_patches_that_noisy_patches_hide_from_the_aoi_null():
    side = 24
    found = {"patch": 0, "aoi": 0}
    for seed in range(3):
        X, vf, noisy = _uneven_noise(40 + seed)
        quiet = np.flatnonzero(~noisy)
        changed = np.random.default_rng(seed).choice(quiet, size=20, replace=False)
        X[6:, changed] += 4.0 / np.sqrt(X.shape[2])  # a step the noisy patches hide from one AOI-wide null
        for scale in found:
            cfg = RunConfig(patch_size=16, subdivide=1, false_alarms=1.0, null_scale=scale)
            f = score_events(_store(X, vf, side), None, cfg, 1).events.frame
            done = f[f["confirmed"]]
            found[scale] += int(np.isin(changed, done["patch"].to_numpy()).sum())
    assert found["patch"] >= 8 and found["aoi"] <= found["patch"] // 4, found


def test_each_event_carries_the_score_its_own_patch_needed():
    X, vf, noisy = _uneven_noise(7)
    changed = np.flatnonzero(~noisy)[:10].tolist() + np.flatnonzero(noisy)[:10].tolist()
    X[6:, changed] += 12.0 / np.sqrt(X.shape[2])
    found = score_events(_store(X, vf, 24), None, RunConfig(patch_size=16, subdivide=1), 1)
    f = found.events.frame
    done = f[f["confirmed"]]
    assert found.detail is not None and found.detail.nulls is not None and found.detail.nulls.noise is not None
    scale = found.detail.nulls.noise.scale
    # in score units: the studentised threshold times the patch's own scale, met by the patch's best confirmed score
    need = done["score_threshold"].to_numpy()
    assert need == pytest.approx(scale[done["patch"]] * need[0] / scale[done["patch"].iloc[0]])
    best = np.nanmax(found.detail.scores.reshape(12, -1)[:, done["patch"]], axis=0)
    assert np.all(best >= need * (1 - 1e-9))
    on_noisy = noisy[done["patch"]]
    assert on_noisy.any() and (~on_noisy).any()
    assert need[on_noisy].mean() > need[~on_noisy].mean()
    assert found.events.threshold == pytest.approx(np.median(scale) * need[0] / scale[done["patch"].iloc[0]])
