"""Sliding-window change maps: against a naive per-window average, weighting, padding, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from changescope.errors import GridMismatchError, ParameterError
from changescope.multimodal.config import ModelConfig
from changescope.multimodal.model import PseudoSiamese
from changescope.multimodal.predict import change_map, class_map, window_starts, window_weights


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(architecture="test_resnet", hidden_dim=16, proj_dim=8, context=32, roi=8, n_classes=4)
    return PseudoSiamese(cfg).eval()


def _images(h=50, w=70, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, h, w)).astype(np.float32), rng.standard_normal((1, h, w)).astype(np.float32)


def naive_map(model, optical, sar, window, stride, weights):
    h, w = optical.shape[1:]
    acc, norm = np.zeros((h, w)), np.zeros((h, w))
    for y in window_starts(h, window, stride):
        for x in window_starts(w, window, stride):
            o = torch.from_numpy(optical[None, :, y : y + window, x : x + window].copy())
            s = torch.from_numpy(sar[None, :, y : y + window, x : x + window].copy())
            score = float(model.change_score(o, s)[0])
            acc[y : y + window, x : x + window] += score * weights
            norm[y : y + window, x : x + window] += weights
    return acc / norm


def test_window_starts_cover_the_image():
    assert window_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert window_starts(64, 32, 32) == [0, 32]
    assert window_starts(20, 32, 8) == [0]


@pytest.mark.parametrize("weighting", ["uniform", "dome"])
def test_matches_a_naive_window_average(model, weighting):
    optical, sar = _images()
    weights = window_weights(32, weighting)
    got = change_map(model, optical, sar, window=32, stride=12, weighting=weighting, batch_size=5)
    assert got.dtype == np.float32 and got.shape == (50, 70)
    np.testing.assert_allclose(got, naive_map(model, optical, sar, 32, 12, weights), rtol=1e-5, atol=1e-5)
    assert ((got >= 0) & (got <= 2)).all()


def test_dome_weights_peak_at_the_centre_and_stay_positive():
    w = window_weights(16, "dome", power=2.0)
    assert w.min() > 0 and w.max() < 1
    assert w[7, 7] == w.max() and w[0, 0] == w.min()
    assert not np.allclose(window_weights(16, "dome", power=4.0), w)


def test_overlap_weighting_changes_the_map(model):
    optical, sar = _images(seed=1)
    uniform = change_map(model, optical, sar, window=32, stride=8)
    dome = change_map(model, optical, sar, window=32, stride=8, weighting="dome")
    assert not np.allclose(uniform, dome)


def test_image_smaller_than_the_window_is_padded(model):
    optical, sar = _images(h=20, w=24)
    got = change_map(model, optical, sar, window=32, stride=8)
    padded_o, padded_s = np.zeros((3, 32, 32), np.float32), np.zeros((1, 32, 32), np.float32)
    padded_o[:, :20, :24], padded_s[:, :20, :24] = optical, sar
    want = float(model.change_score(torch.from_numpy(padded_o[None]), torch.from_numpy(padded_s[None]))[0])
    np.testing.assert_allclose(got, np.full((20, 24), want, np.float32), rtol=1e-5)


def test_class_map_gives_probabilities(model):
    optical, sar = _images(h=40, w=40)
    probs = class_map(model, optical, sar, window=32, stride=8)
    assert probs.shape == (4, 40, 40)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)


def test_model_mode_is_restored(model):
    model.train()
    change_map(model, *_images(h=32, w=32), window=32, stride=32)
    assert model.training
    model.eval()


@pytest.mark.parametrize(
    ("optical", "sar", "kwargs", "error", "match"),
    [
        (np.zeros((1, 40, 40)), np.zeros((1, 40, 40)), {}, ParameterError, "is it the SAR image"),
        (np.zeros((3, 40, 40)), np.zeros((3, 40, 40)), {}, ParameterError, "sar_img has shape"),
        (np.zeros((3, 40, 40)), np.zeros((1, 40, 41)), {}, GridMismatchError, "same grid"),
        (np.zeros((3, 40, 40)), np.zeros((1, 40, 40)), {"stride": 0}, ParameterError, "stride=0"),
        (np.zeros((3, 40, 40)), np.zeros((1, 40, 40)), {"weighting": "cone"}, ParameterError, "weighting='cone'"),
    ],
)
def test_bad_inputs(model, optical, sar, kwargs, error, match):
    args = {"window": 32, "stride": 8} | kwargs
    with pytest.raises(error, match=match):
        change_map(model, optical.astype(np.float32), sar.astype(np.float32), **args)


def test_class_map_needs_a_class_head():
    torch.manual_seed(0)
    plain = PseudoSiamese(ModelConfig(architecture="test_resnet", hidden_dim=8, proj_dim=4, context=32, roi=8))
    with pytest.raises(ParameterError, match="no damage class head"):
        class_map(plain, *_images(h=32, w=32), window=32, stride=32)


class _QuadrantModel(torch.nn.Module):
    """Scores a window by the mean of a region of its optical band 0: not rotation-invariant, on purpose."""

    def __init__(self, region: str) -> None:
        super().__init__()
        self.region = region
        self.class_head = None
        self.config = ModelConfig(architecture="test_resnet", hidden_dim=16, proj_dim=8, context=16, roi=8)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> object:
        half = optical.shape[-1] // 2
        part = {
            "top-left": optical[:, 0, :half, :half],
            "top": optical[:, 0, :half, :],
            "all": optical[:, 0],
        }[self.region]

        class _Out:
            score = part.mean(dim=(-2, -1)) + 0 * sar.mean()
            logits = None

        return _Out()


@pytest.mark.parametrize(("tta", "same_as"), [(8, "all"), (4, "all"), (2, "top")])
@pytest.mark.parametrize("paint", ["window", "roi"])
def test_tta_averages_the_rotated_and_flipped_views_of_each_window(tta, same_as, paint):
    # the top-left quadrant of the 8 views (4 quarter turns, each also flipped) visits every quadrant twice: their
    # mean is the window's mean; the first 2 views (0 and 1 quarter turn) see the top-left and top-right quadrants
    optical, sar = _images(40, 36, seed=4)
    got = change_map(_QuadrantModel("top-left"), optical, sar, window=16, stride=4, paint=paint, tta=tta)
    want = change_map(_QuadrantModel(same_as), optical, sar, window=16, stride=4, paint=paint)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    single = change_map(_QuadrantModel("top-left"), optical, sar, window=16, stride=4, paint=paint)
    assert not np.allclose(single, want, atol=1e-3)  # one view is not the mean


def test_tta_with_a_real_model_stays_a_score_and_rejects_other_view_counts(model):
    optical, sar = _images()
    got = change_map(model, optical, sar, window=32, stride=12, tta=8)
    assert got.shape == (50, 70) and ((got >= 0) & (got <= 2)).all()
    with pytest.raises(ParameterError, match="tta=3"):
        change_map(model, optical, sar, window=32, stride=12, tta=3)
