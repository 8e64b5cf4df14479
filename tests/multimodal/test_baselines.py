"""Training-free heterogeneous baselines: AUC on synthetic pairs, shapes, determinism, cross-modal invariance."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from changescope.errors import GridMismatchError, ParameterError
from changescope.multimodal import baselines as bl
from changescope.multimodal.synthetic import make_pair


@pytest.fixture(scope="module")
def pairs():
    return {
        "earthquake": make_pair(0, size=256, event="turkey-earthquake"),
        "flood": make_pair(1, size=256, event="libya-flood"),
        "volcano": make_pair(2, size=256, event="la_palma-volcano"),
    }


def _auc(pair, score):
    return roc_auc_score(pair.change.ravel(), score.ravel())


# Measured on these seeded 256 px pairs: log-ratio 0.704 / 0.567 / 0.663, rank CVA 0.302 / 0.591 / 0.519,
# structure consistency 0.579 / 0.715 / 0.815 (earthquake / flood / volcano). Bounds sit below the measured values.
@pytest.mark.parametrize(("event", "bound"), [("earthquake", 0.65), ("volcano", 0.6)])
def test_log_ratio_beats_chance(pairs, event, bound):
    p = pairs[event]
    score = bl.log_ratio_cva(p.optical, p.sar)
    assert score.shape == p.change.shape and score.dtype == np.float32
    assert _auc(p, score) > bound


@pytest.mark.parametrize(("event", "bound"), [("flood", 0.65), ("volcano", 0.75)])
def test_structure_consistency_beats_chance(pairs, event, bound):
    p = pairs[event]
    score = bl.structure_consistency(p.optical, p.sar)
    assert score.shape == p.change.shape and score.dtype == np.float32
    assert np.isfinite(score).all()
    assert _auc(p, score) > bound


def test_rank_cva_shape_and_mode_error(pairs):
    p = pairs["flood"]
    score = bl.log_ratio_cva(p.optical, p.sar, mode="rank", smooth=0)
    assert score.shape == p.change.shape and score.dtype == np.float32
    assert score.min() >= 0.0 and score.max() <= 1.0
    assert _auc(p, bl.log_ratio_cva(p.optical, p.sar, mode="rank")) > 0.55
    with pytest.raises(ParameterError, match="mode"):
        bl.log_ratio_cva(p.optical, p.sar, mode="nope")  # type: ignore[arg-type]


def test_baselines_are_deterministic(pairs):
    p = pairs["volcano"]
    np.testing.assert_array_equal(bl.log_ratio_cva(p.optical, p.sar), bl.log_ratio_cva(p.optical, p.sar))
    a = bl.structure_consistency(p.optical, p.sar)
    np.testing.assert_array_equal(a, bl.structure_consistency(p.optical, p.sar))


def test_structure_consistency_is_invariant_to_monotone_transforms(pairs):
    p = pairs["flood"]
    ref = bl.structure_consistency(p.optical, p.sar)
    sar_gamma = (p.sar.astype(np.float64) / 255.0) ** 0.4
    opt_log = np.log1p(p.optical.astype(np.float64)) * 7.0 + 3.0
    np.testing.assert_allclose(bl.structure_consistency(p.optical, sar_gamma), ref, atol=1e-5)
    np.testing.assert_allclose(bl.structure_consistency(opt_log, p.sar), ref, atol=1e-5)
    # the log-ratio baseline is not (its post side is histogram-matched, its pre side is not)
    assert not np.allclose(bl.log_ratio_cva(opt_log, p.sar), bl.log_ratio_cva(p.optical, p.sar))


def test_structure_consistency_symmetric_and_unchanged_pair_scores_low(pairs):
    p = pairs["volcano"]
    np.testing.assert_allclose(
        bl.structure_consistency(p.optical, p.sar), bl.structure_consistency(p.sar, p.optical), atol=1e-6
    )
    same = bl.structure_consistency(p.optical, p.optical)
    assert np.abs(same).max() < 1e-6


def test_structure_consistency_valid_mask_and_errors(pairs):
    p = pairs["earthquake"]
    valid = np.ones(p.change.shape, dtype=bool)
    valid[:, :20] = False
    score = bl.structure_consistency(p.optical, p.sar, valid=valid, grid=4)
    assert (score[:, :20] == 0).all()
    with pytest.raises(GridMismatchError):
        bl.structure_consistency(p.optical, p.sar[:, :100])
    with pytest.raises(ParameterError, match="k="):
        bl.structure_consistency(p.optical, p.sar, search=3, search_step=1, k=9)
    with pytest.raises(ParameterError, match="odd"):
        bl.structure_consistency(p.optical, p.sar, patch=4)


def test_untrained_siamese_shape_range_determinism(pairs):
    p = pairs["earthquake"]
    kw = {"architecture": "test_resnet", "window": 64, "stride": 32}
    a = bl.untrained_siamese(p.optical, p.sar, seed=0, **kw)
    assert a.shape == p.change.shape and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 2.0
    np.testing.assert_array_equal(a, bl.untrained_siamese(p.optical, p.sar, seed=0, **kw))
    assert not np.array_equal(a, bl.untrained_siamese(p.optical, p.sar, seed=1, **kw))
    # SAR before, optical after: the same network inputs, so the same map
    np.testing.assert_array_equal(
        a, bl.untrained_siamese(p.sar, p.optical, pre_modality="sar", post_modality="optical", seed=0, **kw)
    )
    # A random network is no detector: measured AUC 0.848 (seed 0) but 0.174 (seed 1) on this pair, and 0.3-0.74
    # on the others. Only check that the AUC is defined; the benchmark reports it beside the other baselines.
    assert 0.0 < _auc(p, a) < 1.0
