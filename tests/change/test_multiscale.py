"""Multi-scale scores (sub-patch maxima) and confirmation of scores by the following observations."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from changescope.change.multiscale import max_over_subpatches, subpatch_size
from changescope.change.score import confirm_scores, confirm_with_followers
from changescope.errors import ParameterError


def _naive_confirm(s: np.ndarray, following: int) -> np.ndarray:
    out = np.full_like(s, np.nan)
    for j in range(s.shape[1]):
        idx = [t for t in range(s.shape[0]) if np.isfinite(s[t, j])]
        for i, t in enumerate(idx):
            out[t, j] = min(s[u, j] for u in idx[i : i + following + 1])
    return out


@pytest.mark.parametrize("following", [0, 1, 2, 5])
def test_confirm_matches_a_naive_loop(following: int) -> None:
    rng = np.random.default_rng(4)
    s = rng.normal(size=(12, 40))
    s[rng.random(s.shape) < 0.3] = np.nan
    got = confirm_scores(s, following)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(s))
    np.testing.assert_allclose(got, _naive_confirm(s, following), equal_nan=True)


@pytest.mark.parametrize("following", [0, 1, 3])
def test_followers_mark_what_cannot_be_confirmed_yet(following: int) -> None:
    rng = np.random.default_rng(5)
    s = rng.normal(size=(10, 30))
    s[rng.random(s.shape) < 0.4] = np.nan
    got, short = confirm_with_followers(s, following)
    np.testing.assert_allclose(got, _naive_confirm(s, following), equal_nan=True)
    fin = np.isfinite(s)
    after = np.array([[fin[t + 1 :, j].sum() for j in range(s.shape[1])] for t in range(s.shape[0])])
    np.testing.assert_array_equal(short, fin & (after < following))


def test_confirm_needs_no_temporaries_the_size_of_its_input() -> None:
    s = np.random.default_rng(6).normal(size=(24, 100_000))
    tracemalloc.start()
    try:
        confirm_with_followers(s, 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the result (float64) and the pending mask (bool) and O(N) rows; the vectorised form needed ~10x the input
    assert peak < 1.3 * s.nbytes + s.size


def test_confirm_removes_a_glitch_and_keeps_a_lasting_change() -> None:
    glitch = np.array([0.1, 0.0, 9.0, 0.2, np.nan, 0.1])
    lasting = np.array([0.1, 0.0, 9.0, np.nan, 8.5, 8.0])
    got = confirm_scores(np.stack([glitch, lasting], axis=1), 1)
    assert got[2, 0] == pytest.approx(0.2)  # confirmed by nothing: the next clear date is normal again
    assert got[2, 1] == pytest.approx(8.5)  # the next clear date (a cloudy one skipped) still shows it
    assert got[5, 1] == pytest.approx(8.0)  # the last date keeps its own score


def test_confirm_rejects_negative() -> None:
    with pytest.raises(ParameterError, match="following"):
        confirm_scores(np.zeros((3, 2)), -1)


def test_subpatch_size_and_its_errors() -> None:
    assert subpatch_size(32, 32, 1) is None
    assert subpatch_size(32, 32, 2) == 16
    assert subpatch_size(32, 16, 2) == 16
    assert subpatch_size(32, 32, 4) == 8
    for args in [(32, 32, 0), (30, 30, 4), (32, 8, 2), (4, 4, 4)]:
        with pytest.raises(ParameterError, match="subdivide"):
            subpatch_size(*args)


def _naive_max(fine: np.ndarray, n_rows: int, n_cols: int, k: int, step: int) -> np.ndarray:
    out = np.full((fine.shape[0], n_rows, n_cols), np.nan)
    for t in range(fine.shape[0]):
        for r in range(n_rows):
            for c in range(n_cols):
                block = fine[t, r * step : r * step + k, c * step : c * step + k]
                if np.isfinite(block).any():
                    out[t, r, c] = np.nanmax(block)
    return out


@pytest.mark.parametrize(("k", "step", "n_rows", "n_cols"), [(2, 2, 4, 5), (2, 1, 7, 9), (4, 4, 2, 2)])
def test_max_over_subpatches_matches_a_naive_loop(k: int, step: int, n_rows: int, n_cols: int) -> None:
    rng = np.random.default_rng(k * 10 + step)
    fine = rng.normal(size=(3, 9, 11))
    fine[rng.random(fine.shape) < 0.4] = np.nan
    got = max_over_subpatches(fine, n_rows, n_cols, k, step)
    np.testing.assert_allclose(got, _naive_max(fine, n_rows, n_cols, k, step), equal_nan=True)


def test_max_over_subpatches_refuses_a_grid_it_does_not_cover() -> None:
    with pytest.raises(ParameterError, match="do not cover"):
        max_over_subpatches(np.zeros((2, 5, 5)), 3, 3, 2, 2)


def test_auto_subdivide_halves_only_when_it_can() -> None:
    from changescope.change.multiscale import auto_subdivide

    assert auto_subdivide(32, 32) == 2
    assert auto_subdivide(16, 16) == 2
    assert auto_subdivide(32, 16) == 2
    assert auto_subdivide(14, 14) == 1  # 7 px sub-patches are too small
    assert auto_subdivide(5, 5) == 1
    assert auto_subdivide(32, 24) == 1  # the stride does not step over whole sub-patches


def test_subpatch_embeddings_take_the_most_changed_scale() -> None:
    from changescope.change.multiscale import subpatch_embeddings

    rng = np.random.default_rng(7)
    n_t, d = 5, 3
    coarse = rng.normal(size=(n_t, 2, 3, d))
    fine = rng.normal(size=(n_t, 4, 6, d))
    coarse_scores = np.full((n_t, 2, 3), 1.0)
    fine_scores = np.zeros((n_t, 4, 6))
    fine_scores[2, 3, 4] = 5.0  # patch (1, 2), its sub-patch (1, 0), beats the patch's own 1.0
    fine_scores[1, 0, 1] = 0.5  # patch (0, 0): its sub-patches never beat the patch
    fine_scores[:, 1, 1] = np.nan
    got = subpatch_embeddings(coarse, fine, coarse_scores, fine_scores, 2, 2)
    expected = coarse.astype(np.float32).copy()
    expected[:, 1, 2] = fine[:, 3, 4]
    np.testing.assert_array_equal(got, expected)


def test_subpatch_embeddings_fall_back_where_the_subpatch_is_missing() -> None:
    from changescope.change.multiscale import subpatch_embeddings

    coarse = np.zeros((3, 1, 1, 2))
    fine = np.ones((3, 2, 2, 2))
    fine[1, 0, 0] = np.nan
    fine_scores = np.zeros((3, 2, 2))
    fine_scores[2, 0, 0] = 3.0
    got = subpatch_embeddings(coarse, fine, np.zeros((3, 1, 1)), fine_scores, 2, 2)
    np.testing.assert_array_equal(got[:, 0, 0, 0], [1.0, 0.0, 1.0])
