"""Tests of the classical unsupervised baselines (CVA, IR-MAD, PCA-kmeans)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from changescope.errors import GridMismatchError, ParameterError
from changescope.evaluate.baselines import BASELINES, baseline_change_map, baseline_patch_scores
from changescope.grid import PatchGrid
from changescope.testing import make_test_series

C, H, W = 4, 64, 64
GAIN = np.array([1.2, 0.9, 1.1, 1.3])[:, None, None]
OFFSET = np.array([0.02, -0.01, 0.03, 0.0])[:, None, None]


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Textured scene, noise, a global per-band gain/offset (illumination) and a planted changed square."""
    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.normal(size=(C, H, W)), sigma=(0, 2, 2))
    tex = 0.1 + 0.3 * (tex - tex.min()) / np.ptp(tex)
    before = tex + rng.normal(scale=0.01, size=tex.shape)
    after = GAIN * tex + OFFSET + rng.normal(scale=0.01, size=tex.shape)
    truth = np.zeros((H, W), dtype=bool)
    truth[20:36, 30:46] = True
    after[:, truth] = after[::-1][:, truth] + 0.1  # new material: band order reversed and brighter
    valid = np.ones((H, W), dtype=bool)
    valid[:6, :6] = False
    before[:, :6, :6] = np.nan
    return before, after, valid, truth


@pytest.mark.parametrize("name", BASELINES)
def test_planted_square_ranks_top(name: str) -> None:
    before, after, valid, truth = _pair()
    score = baseline_change_map(before, after, valid, name, seed=0)
    assert score.shape == (H, W)
    assert np.isnan(score[~valid]).all()
    assert np.isfinite(score[valid]).all()
    assert roc_auc_score(truth[valid], score[valid]) > 0.95
    assert np.mean(score[truth]) > np.nanmean(score[~truth]) + np.nanstd(score[~truth])


@pytest.mark.parametrize("name", BASELINES)
def test_deterministic_with_seed(name: str) -> None:
    before, after, valid, _ = _pair(seed=1)
    a = baseline_change_map(before, after, valid, name, seed=3)
    b = baseline_change_map(before, after, valid, name, seed=3)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["irmad", "cva"])
def test_invariant_to_per_band_linear_radiometry(name: str) -> None:
    before, after, valid, _ = _pair()
    gain = np.array([3.0, 0.5, 10.0, 1.7])[:, None, None]
    offset = np.array([5.0, -1.0, 0.3, 100.0])[:, None, None]
    base = baseline_change_map(before, after, valid, name)
    moved = baseline_change_map(before, gain * after + offset, valid, name)
    np.testing.assert_allclose(moved[valid], base[valid], rtol=1e-5, atol=1e-6)


def test_irmad_single_pass_chi2_has_mean_c() -> None:
    # without reweighting, each standardised MAD variate has unit variance in-sample, so mean(Z) equals C
    before, after, valid, _ = _pair()
    z = baseline_change_map(before, after, valid, "irmad", max_iter=1)
    assert np.nanmean(z) == pytest.approx(C, rel=1e-4)


def test_irmad_subsampled_fit_scores_every_pixel() -> None:
    before, after, valid, truth = _pair()
    z = baseline_change_map(before, after, valid, "irmad", max_fit_pixels=500, seed=2)
    assert np.isfinite(z[valid]).all()
    assert roc_auc_score(truth[valid], z[valid]) > 0.95


def test_cva_matches_direct_formula() -> None:
    rng = np.random.default_rng(0)
    before, after = rng.normal(size=(2, 3, 5, 7))
    valid = np.ones((5, 7), dtype=bool)

    def norm(img: np.ndarray) -> np.ndarray:
        out = np.empty_like(img)
        for band in range(img.shape[0]):  # naive per-band loop
            v = img[band]
            med = np.median(v)
            out[band] = (v - med) / (1.4826 * np.median(np.abs(v - med)))
        return out

    expected = np.sqrt(((norm(after) - norm(before)) ** 2).sum(axis=0))
    np.testing.assert_allclose(baseline_change_map(before, after, valid, "cva"), expected, rtol=1e-10)


def test_pcakmeans_binary_map_recovers_square() -> None:
    before, after, valid, truth = _pair()
    score = baseline_change_map(before, after, valid, "pcakmeans", seed=0)
    changed = (score > 0) & valid
    iou = (changed & truth).sum() / (changed | truth).sum()
    assert iou > 0.75


def test_nan_band_is_dropped() -> None:
    before, after, valid, _ = _pair()
    after[2, 40, 10] = np.nan
    score = baseline_change_map(before, after, valid, "cva")
    assert np.isnan(score[40, 10])
    assert np.isfinite(score[40, 11])


# ----------------------------------------------------------------------------------------------- patch scores
def _series_with_change(n_time: int = 6, cloud_fraction: float = 0.0):
    ds = make_test_series(seed=0, n_time=n_time, cloud_fraction=cloud_fraction)
    img = ds["image"].values.copy()
    img[4:, :, 16:32, 32:48] = img[4:, ::-1, 16:32, 32:48] + 1500  # a changed 2x2-patch block from date 4 on
    ds["image"] = (ds["image"].dims, img)
    changed = np.zeros((8, 8), dtype=bool)
    changed[2:4, 4:6] = True
    return ds, changed


@pytest.mark.parametrize("name", BASELINES)
def test_patch_scores_first_reference(name: str) -> None:
    ds, changed = _series_with_change()
    grid = PatchGrid.for_series(ds, size=8)
    scores = baseline_patch_scores(ds, grid, name, reference="first", k=3)
    assert scores.shape == (6, 8, 8)
    assert np.isnan(scores[:3]).all()
    assert np.isfinite(scores[3:]).all()
    for t in (4, 5):
        top = np.argsort(scores[t].ravel())[::-1][: changed.sum()]
        assert changed.ravel()[top].all()


@pytest.mark.parametrize("name", BASELINES)
def test_patch_scores_previous_reference(name: str) -> None:
    ds, changed = _series_with_change()
    grid = PatchGrid.for_series(ds, size=8)
    scores = baseline_patch_scores(ds, grid, name, reference="previous")
    assert np.isnan(scores[0]).all()
    assert np.isfinite(scores[1:]).all()
    top = np.argsort(scores[4].ravel())[::-1][: changed.sum()]
    assert changed.ravel()[top].all()
    # date 5 compares with date 4, after the change: the block no longer stands out as much
    assert np.mean(scores[5][changed]) < np.mean(scores[4][changed])


def test_patch_scores_mask_cloudy_patches() -> None:
    ds, _ = _series_with_change(cloud_fraction=0.4)
    grid = PatchGrid.for_series(ds, size=8)
    scores = baseline_patch_scores(ds, grid, "cva", reference="previous")
    valid_frac = grid.aggregate(ds["valid"].values, "fraction")
    # a patch whose date is mostly cloudy gets no score
    assert np.isnan(scores[1:][valid_frac[1:] < 0.5]).all()
    assert np.isfinite(scores).any()


# ----------------------------------------------------------------------------------------------- errors
def test_unknown_name_lists_choices() -> None:
    before, after, valid, _ = _pair()
    with pytest.raises(ParameterError, match=r"name='mad'.*'cva', 'irmad', 'pcakmeans'"):
        baseline_change_map(before, after, valid, "mad")
    ds, _ = _series_with_change()
    with pytest.raises(ParameterError, match="name='mad'"):
        baseline_patch_scores(ds, PatchGrid.for_series(ds, size=8), "mad")


def test_shape_errors() -> None:
    before, after, valid, _ = _pair()
    with pytest.raises(ParameterError, match="after"):
        baseline_change_map(before, after[:3], valid, "cva")
    with pytest.raises(ParameterError, match="valid"):
        baseline_change_map(before, after, valid[:10], "cva")
    with pytest.raises(ParameterError, match="before"):
        baseline_change_map(before[0], after[0], valid, "cva")


def test_option_and_pixel_errors() -> None:
    before, after, valid, _ = _pair()
    with pytest.raises(ParameterError, match="bogus"):
        baseline_change_map(before, after, valid, "irmad", bogus=1)
    with pytest.raises(ParameterError, match="block"):
        baseline_change_map(before, after, valid, "pcakmeans", block=0)
    with pytest.raises(ParameterError, match="max_iter"):
        baseline_change_map(before, after, valid, "irmad", max_iter=0)
    few = np.zeros_like(valid)
    few[30, 30:33] = True
    with pytest.raises(ParameterError, match="needs at least"):
        baseline_change_map(before, after, few, "irmad")


def test_series_errors() -> None:
    ds, _ = _series_with_change()
    grid = PatchGrid.for_series(ds, size=8)
    with pytest.raises(ParameterError, match="at least 2"):
        baseline_patch_scores(ds.isel(time=[0]), grid, "cva")
    with pytest.raises(ParameterError, match="reference='season'"):
        baseline_patch_scores(ds, grid, "cva", reference="season")
    with pytest.raises(ParameterError, match="k=0"):
        baseline_patch_scores(ds, grid, "cva", k=0)
    with pytest.raises(GridMismatchError):
        baseline_patch_scores(ds, PatchGrid(size=8, height=32, width=32), "cva")
