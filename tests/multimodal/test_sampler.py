"""The ratio batch sampler: the negative share, determinism, no unlabelled draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from changescope.errors import ParameterError
from changescope.multimodal.sampler import RatioBatchSampler


def _labels(seed=0, n=500, p_changed=0.1, p_unlabelled=0.05):
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    return np.where(u < p_unlabelled, -1, np.where(u < p_unlabelled + p_changed, 1, 0)).astype(np.int64)


@pytest.mark.parametrize(("batch", "share"), [(64, 0.8), (10, 0.5), (7, 0.3), (16, 1.0), (16, 0.0)])
def test_every_batch_holds_the_share(batch, share):
    y = _labels()
    sampler = RatioBatchSampler(y, batch, share, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == max(1, int((y >= 0).sum()) // batch)
    want = round(share * batch)
    for b in batches:
        assert len(b) == batch
        assert int((y[b] == 1).sum()) == want
        assert (y[b] >= 0).all()


def test_seeded_deterministic_and_new_draws_per_epoch():
    y = _labels(seed=1)
    a, b = RatioBatchSampler(y, 32, seed=5), RatioBatchSampler(y, 32, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(RatioBatchSampler(y, 32, seed=6)) != first


def test_each_class_is_drawn_without_replacement_until_exhausted():
    y = _labels(seed=2, n=2000)
    sampler = RatioBatchSampler(y, 50, 0.2, seed=0)
    drawn = np.concatenate([np.asarray(b) for b in sampler])
    unchanged = drawn[y[drawn] == 0]
    n_unchanged = int((y == 0).sum())
    assert len(unchanged) <= n_unchanged  # the common class is not exhausted in an epoch
    assert len(np.unique(unchanged)) == len(unchanged)
    changed = drawn[y[drawn] == 1]
    n_changed = int((y == 1).sum())
    assert len(changed) > n_changed  # the rare class cycles
    counts = np.bincount(changed, minlength=len(y))[y == 1]
    assert counts.min() >= 1 and counts.max() - counts.min() <= 1  # full passes before any repeat


def test_works_as_a_dataloader_batch_sampler():
    y = _labels(seed=4, n=100)
    dataset = TensorDataset(torch.arange(100), torch.from_numpy(y))
    loader = DataLoader(dataset, batch_sampler=RatioBatchSampler(y, 20, 0.8, seed=1, num_batches=3))
    batches = list(loader)
    assert len(batches) == 3
    assert all(int((b[1] == 1).sum()) == 16 for b in batches)


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (np.zeros(10, dtype=int), {"negative_share": 0.8}, "changed"),
        (np.ones(10, dtype=int), {"negative_share": 0.8}, "unchanged"),
        (np.array([0, 1, 3]), {}, "labels hold"),
        (np.array([0.0, 1.0]), {}, "integer"),
        (np.array([0, 1]), {"batch_size": 0}, "batch_size"),
        (np.array([0, 1]), {"negative_share": 1.5}, "negative_share"),
        (np.array([0, 1]), {"num_batches": 0}, "num_batches"),
    ],
)
def test_bad_arguments(labels, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        RatioBatchSampler(labels, **({"batch_size": 4} | kwargs))


def test_share_zero_needs_no_changed_pairs():
    sampler = RatioBatchSampler(np.zeros(12, dtype=int), 4, 0.0)
    assert [len(b) for b in sampler] == [4, 4, 4]
