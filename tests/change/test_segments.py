"""Segmented references (a confirmed change restarts the reference), rescoring passes and from-to descriptors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from changescope.change.events import extract_events
from changescope.change.multiscale import subpatch_breaks
from changescope.change.reference import reference_mask
from changescope.change.score import ChangeScorer
from changescope.change.store import score_events
from changescope.errors import ParameterError
from changescope.run import RunConfig

TIMES = pd.date_range("2020-01-01", periods=12, freq="MS")


def _naive_first(valid: np.ndarray, breaks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per patch, per date: the first-k reference of the latest segment whose reference was complete before it."""
    n_t, n = valid.shape
    ref = np.zeros((n_t, n_t, n), dtype=bool)
    scored = np.zeros((n_t, n), dtype=bool)
    for p in range(n):
        starts = [0] + [t for t in range(1, n_t) if breaks[t, p]]
        segments = []
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else n_t
            obs = [t for t in range(s, end) if valid[t, p]]
            kk = min(k, max(len(obs) - 1, 1)) if i == 0 else min(k, len(obs))
            segments.append(obs[:kk])
        for t in range(n_t):
            done = [i for i, r in enumerate(segments) if r and r[-1] < t]
            active = done[-1] if done else None
            use = segments[active if active is not None else 0]
            ref[t, use, p] = True
            scored[t, p] = bool(valid[t, p] and active is not None and use)
    return ref, scored


@pytest.mark.parametrize("seed", range(6))
def test_segmented_first_reference_matches_a_naive_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    valid = rng.random((12, 7)) < 0.75
    breaks = rng.random((12, 7)) < 0.15
    k = int(rng.integers(1, 4))
    ref, scored = reference_mask(valid, TIMES, "first", k, breaks=breaks)
    want_ref, want_scored = _naive_first(valid, breaks, k)
    np.testing.assert_array_equal(scored, want_scored)
    np.testing.assert_array_equal(ref[:, :, want_scored.any(axis=0)], want_ref[:, :, want_scored.any(axis=0)])


def test_no_breaks_gives_the_plain_first_reference() -> None:
    valid = np.random.default_rng(3).random((12, 9)) < 0.8
    plain = reference_mask(valid, TIMES, "first", 3)
    empty = reference_mask(valid, TIMES, "first", 3, breaks=np.zeros_like(valid))
    for a, b in zip(plain, empty, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ParameterError, match="breaks"):
        reference_mask(valid, TIMES, "first", 3, breaks=np.zeros((2, 2), dtype=bool))


def test_the_break_date_still_scores_against_the_old_state() -> None:
    valid = np.ones((12, 1), dtype=bool)
    breaks = np.zeros_like(valid)
    breaks[5] = True
    ref, scored = reference_mask(valid, TIMES, "first", 3, breaks=breaks)
    for t in (5, 6, 7):  # the change and the dates building the new reference
        assert list(np.nonzero(ref[t, :, 0])[0]) == [0, 1, 2]
    for t in (8, 11):
        assert list(np.nonzero(ref[t, :, 0])[0]) == [5, 6, 7]
    assert scored[3:, 0].all() and not scored[:3, 0].any()


def _two_step_series(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patches in state A; patch 0 turns B at date 4 and C at date 9."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 0.05, size=(12, n, 4))
    X[:, :, 0] += 1.0
    X[4:9, 0] += np.array([-1.0, 1.0, 0.0, 0.0])
    X[9:, 0] += np.array([-1.0, 0.0, 1.0, 0.0])
    return X, np.ones((12, n), dtype=bool)


@pytest.mark.parametrize("context", ["none", "peers"])
def test_scores_after_a_break_compare_with_the_new_state(context: str) -> None:
    X, valid = _two_step_series()
    breaks = np.zeros_like(valid)
    breaks[4, 0] = True
    plain = ChangeScorer(
        "distance", "first", 3, context=context, normalize=False, metric="euclidean", standardize=False
    ).fit(X, valid, TIMES)
    seg = ChangeScorer("distance", "first", 3, context=context, normalize=False, metric="euclidean", standardize=False)
    seg.fit(X, valid, TIMES, breaks=breaks)
    others = np.nanmax(plain.raw_scores_[3:, 1:])
    assert plain.raw_scores_[7:9, 0].min() > 5 * others  # without the break: still "changed" long after
    assert seg.raw_scores_[7:9, 0].max() < 3 * others  # with it: B is the normal state
    assert seg.raw_scores_[9, 0] > 5 * others  # and B -> C is a change again
    np.testing.assert_allclose(seg.raw_scores_[4:7, 0], plain.raw_scores_[4:7, 0], rtol=1e-9)


def test_extract_events_takes_the_before_state_from_the_segment() -> None:
    X, valid = _two_step_series()
    breaks = np.zeros_like(valid)
    breaks[4, 0] = True
    scores = np.zeros((12, 40))
    scores[:3] = np.nan
    scores[[4, 9], 0] = 10.0
    ev = extract_events(X, valid, TIMES, scores, threshold=5.0, persistence=1, breaks=breaks)
    second = ev.frame.index[ev.frame["t"] == 9][0]
    np.testing.assert_allclose(ev.before[second], X[4:7, 0].mean(axis=0), atol=1e-6)
    first = ev.frame.index[ev.frame["t"] == 4][0]
    np.testing.assert_allclose(ev.before[first], X[0:3, 0].mean(axis=0), atol=1e-6)
    mask = ev.breaks(12, 40)
    assert mask.sum() == 2 and mask[4, 0] and mask[9, 0]


@pytest.mark.parametrize(("k", "step"), [(2, 2), (2, 1)])
def test_subpatch_breaks_match_a_naive_loop(k: int, step: int) -> None:
    rng = np.random.default_rng(k + step)
    b = rng.random((3, 4, 5)) < 0.3
    shape = ((4 - 1) * step + k, (5 - 1) * step + k)
    got = subpatch_breaks(b, shape, k, step)
    want = np.zeros((3, *shape), dtype=bool)
    for r in range(4):
        for c in range(5):
            want[:, r * step : r * step + k, c * step : c * step + k] |= b[:, r, c][:, None, None]
    np.testing.assert_array_equal(got, want)


def _store(X: np.ndarray, side: int) -> xr.Dataset:
    n_t, _, dim = X.shape
    emb = X.reshape(n_t, side, side, dim).astype(np.float32)
    return xr.Dataset(
        {
            "embedding": (("time", "row", "col", "dim"), emb),
            "valid_fraction": (("time", "row", "col"), np.ones((n_t, side, side), dtype=np.float32)),
        },
        coords={"time": TIMES},
        attrs={"patch_size": 32, "stride": 32},
    )


def test_rebase_reports_a_second_change_of_the_same_patch() -> None:
    X, _ = _two_step_series(n=49, seed=1)
    emb = _store(X, 7)
    cfg = RunConfig(method="distance", context="none", standardize=False, confirm=0, threshold=20.0)
    plain = score_events(emb, None, cfg, 1, rebase=False)
    again = score_events(emb, None, cfg, 1, rebase=True)
    assert plain.passes == 1 and again.passes >= 2
    assert list(plain.events.frame.loc[plain.events.frame.patch == 0, "t"]) == [4]  # one long run
    assert list(again.events.frame.loc[again.events.frame.patch == 0, "t"]) == [4, 9]
    assert set(again.events.frame["patch"]) == {0}
    assert again.breaks[[4, 9], 0].all() and again.breaks.sum() == 2  # the segments the final pass used
    with pytest.raises(ParameterError, match="max_passes"):
        score_events(emb, None, cfg, 1, max_passes=0)
