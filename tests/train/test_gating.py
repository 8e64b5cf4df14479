"""Tests of CACo's change tracker: running ratios, mixture gating, masking of long-term negatives, state, plots."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from changescope.errors import ParameterError
from changescope.train.gating import MIN_SEEN, SHORT_EPS, ChangeTracker
from changescope.train.moco import info_nce

N_CHANGED, N_UNCHANGED, N_UNSEEN = 100, 300, 20


def _bimodal(seed: int = 0) -> tuple[ChangeTracker, np.ndarray]:
    """A tracker with 300 unchanged (ratio ~1), 100 changed (ratio ~3) and 20 never-seen locations, shuffled."""
    rng = np.random.default_rng(seed)
    n_seen = N_CHANGED + N_UNCHANGED
    planted = np.zeros(n_seen + N_UNSEEN, dtype=bool)
    order = rng.permutation(n_seen)
    planted[order[:N_CHANGED]] = True
    ratios = np.where(planted[:n_seen], rng.normal(3.0, 0.3, n_seen), rng.normal(1.0, 0.1, n_seen))
    tracker = ChangeTracker(n_seen + N_UNSEEN, seed=seed)
    short = rng.uniform(0.5, 2.0, n_seen)
    tracker.update(np.arange(n_seen), np.abs(ratios) * short, short)
    return tracker, planted


def test_running_average_by_hand() -> None:
    t = ChangeTracker(4)
    t.update(np.array([0, 1]), np.array([2.0, 3.0]), np.array([1.0, 1.0]))
    np.testing.assert_array_equal(t.ratios[:2], [2.0, 3.0])  # first observation sets the ratio
    assert np.isnan(t.ratios[2:]).all()
    t.update(np.array([0]), np.array([14.0]), np.array([2.0]))  # ratio 7
    assert t.ratios[0] == pytest.approx((4 * 2.0 + 7.0) / 5)  # 3.0, the published form
    t.update(np.array([1, 1, 3, 3]), np.array([1.0, 6.0, 5.0, 10.0]), np.array([1.0, 2.0, 1.0, 1.0]))
    assert t.ratios[1] == pytest.approx(0.8 * (0.8 * 3.0 + 0.2 * 1.0) + 0.2 * 3.0)  # 2.68, applied in order
    assert t.ratios[3] == pytest.approx(0.8 * 5.0 + 0.2 * 10.0)  # 6.0: first sets, second averages
    t.update(np.array([2]), np.array([1e-3]), np.array([0.0]))
    assert t.ratios[2] == pytest.approx(1e-3 / SHORT_EPS)
    half = ChangeTracker(1, ema=0.5)
    half.update(np.array([0]), np.array([1.0]), np.array([1.0]))
    half.update(np.array([0]), np.array([3.0]), np.array([1.0]))
    assert half.ratios[0] == pytest.approx(2.0)


def test_fit_labels_the_high_mode_changed() -> None:
    tracker, planted = _bimodal()
    assert not tracker.changed.any()  # nothing changed before the first fit
    s = tracker.fit()
    assert s.n_seen == N_CHANGED + N_UNCHANGED
    assert s.changed_fraction == pytest.approx(N_CHANGED / s.n_seen, abs=0.02)
    assert (tracker.changed == planted).mean() >= 0.98
    assert not tracker.changed[-N_UNSEEN:].any()  # never-seen locations stay unchanged
    low, high = s.means
    assert low == pytest.approx(1.0, abs=0.05) and high == pytest.approx(3.0, abs=0.15)
    assert 1.2 < s.threshold < 2.8 and s.threshold == tracker.ratios[tracker.changed].min()
    again, _ = _bimodal()
    assert again.fit() == s and np.array_equal(again.changed, tracker.changed)  # deterministic


def test_one_extreme_ratio_does_not_take_a_component() -> None:
    # a location whose short-term dates embed almost identically gets a huge ratio; fitted on raw ratios the
    # mixture spent its high component on it and labelled nobody else changed (seen in a real training run)
    tracker, planted = _bimodal(seed=3)
    tracker.update(np.array([N_CHANGED + N_UNCHANGED]), np.array([0.3]), np.array([1e-3]))  # ratio 300
    s = tracker.fit()
    seen = planted[: N_CHANGED + N_UNCHANGED]
    assert s.n_changed >= N_CHANGED
    assert (tracker.changed[: N_CHANGED + N_UNCHANGED] == seen).mean() >= 0.98
    assert tracker.changed[N_CHANGED + N_UNCHANGED]  # the outlier itself is changed, with the high mode


@pytest.mark.parametrize("case", ["equal", "few", "unfitted"])
def test_degenerate_input_changes_nobody(case: str) -> None:
    t = ChangeTracker(50)
    if case == "equal":
        t.update(np.arange(40), np.full(40, 3.0), np.full(40, 2.0))
    elif case == "few":
        t.update(np.arange(MIN_SEEN - 1), np.array([1.0, 1.1, 0.9, 1.0, 5.0, 5.2, 4.9, 1.05, 5.1]), np.ones(9))
    if case != "unfitted":
        s = t.fit()
        assert s.n_changed == 0 and s.changed_fraction == 0.0 and math.isnan(s.threshold)
    assert not t.mask(np.arange(50)).any()


def test_refit_after_collapse_clears_labels() -> None:
    tracker, _ = _bimodal()
    tracker.fit()
    seen = np.flatnonzero(~np.isnan(tracker.ratios))
    tracker.ratios[seen] = 1.0  # every location now looks the same: the old labels must not survive
    assert tracker.fit().n_changed == 0 and not tracker.changed.any()


def test_unchanged_locations_contribute_no_long_term_negative() -> None:
    tracker, planted = _bimodal()
    tracker.fit()
    g = torch.Generator().manual_seed(0)
    q, k, k_long = (F.normalize(torch.randn(6, 16, generator=g, dtype=torch.float64), dim=1) for _ in range(3))
    queue = F.normalize(torch.randn(8, 16, generator=g, dtype=torch.float64), dim=1)
    unchanged = np.flatnonzero(~planted[: N_CHANGED + N_UNCHANGED] & ~tracker.changed[: N_CHANGED + N_UNCHANGED])
    changed = np.flatnonzero(tracker.changed)
    plain = info_nce(q, k, queue, 0.07)
    mask_off = torch.from_numpy(tracker.mask(unchanged[:6]))
    assert not mask_off.any()
    gated = info_nce(q, k, queue, 0.07, extra_neg=k_long, extra_mask=mask_off)
    torch.testing.assert_close(gated, plain, rtol=0, atol=1e-12)
    mask_on = torch.from_numpy(tracker.mask(changed[:6]))
    assert mask_on.all()
    assert info_nce(q, k, queue, 0.07, extra_neg=k_long, extra_mask=mask_on).item() > plain.item() + 1e-6


def test_state_round_trip_through_torch_save(tmp_path) -> None:
    tracker, _ = _bimodal()
    s = tracker.fit()
    path = tmp_path / "tracker.pt"
    torch.save(tracker.state_dict(), path)
    restored = ChangeTracker(tracker.n_locations, ema=0.5, seed=7)
    restored.load_state_dict(torch.load(path, weights_only=True))
    np.testing.assert_array_equal(restored.ratios, tracker.ratios)  # NaNs compare equal here
    assert restored.ratios.dtype == np.float64 and restored.changed.dtype == bool
    np.testing.assert_array_equal(restored.changed, tracker.changed)
    assert (restored.ema, restored.seed, restored.threshold, restored.means) == (0.2, 0, s.threshold, s.means)
    assert restored.fit() == s
    with pytest.raises(ParameterError, match="n_locations"):
        ChangeTracker(3).load_state_dict(tracker.state_dict())


@pytest.mark.parametrize("fitted", [True, False])
def test_histogram_is_a_png(tmp_path, fitted: bool) -> None:
    tracker, _ = _bimodal() if fitted else (ChangeTracker(5), None)
    if fitted:
        tracker.fit()
    figs_before = sys.modules["matplotlib.pyplot"].get_fignums() if "matplotlib.pyplot" in sys.modules else None
    out = tracker.plot_histogram(tmp_path / "plots" / "ratios.png", epoch=3)
    assert out == tmp_path / "plots" / "ratios.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (600, 400)
    assert [p.name for p in out.parent.iterdir()] == ["ratios.png"]  # no temporary file left behind
    if figs_before is not None:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figs_before


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: ChangeTracker(0), "n_locations"),
        (lambda: ChangeTracker(5, ema=0.0), "ema"),
        (lambda: ChangeTracker(5, ema=1.5), "ema"),
        (lambda: ChangeTracker(5).update(np.array([0, 5]), np.ones(2), np.ones(2)), "locs"),
        (lambda: ChangeTracker(5).update(np.array([0.5]), np.ones(1), np.ones(1)), "locs"),
        (lambda: ChangeTracker(5).update(np.array([0, 1]), np.array([1.0, -1.0]), np.ones(2)), "long_dist"),
        (lambda: ChangeTracker(5).update(np.array([0, 1]), np.ones(2), np.ones(3)), "short_dist"),
        (lambda: ChangeTracker(5).mask(np.array([7])), "locs"),
    ],
)
def test_bad_arguments_raise_parameter_error(call, name: str) -> None:
    with pytest.raises(ParameterError, match=name):
        call()
