"""Tests of the MoCo v2 core: InfoNCE against a naive loop, queue, momentum encoder, shuffled keys, backbones."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from changescope.errors import ParameterError
from changescope.train.moco import MoCo, PooledBackbone, ProjectionHead, info_nce

TINY = {"queue_size": 8, "proj_dim": 16, "hidden_dim": 32}


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _images(n: int = 4, chans: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, chans, 32, 32, generator=torch.Generator().manual_seed(seed))


def _moco(seed: int = 0, **kw: object) -> MoCo:
    torch.manual_seed(seed)
    return MoCo("resnet18", 4, **{**TINY, **kw})


@pytest.fixture(scope="module")
def base() -> MoCo:
    """One seeded tiny MoCo per module (building ResNet-18 twice costs about half a second)."""
    return _moco(seed=0)


@pytest.fixture
def model(base: MoCo) -> MoCo:
    """A private copy of ``base`` that a test may modify."""
    return copy.deepcopy(base)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(x * y for x, y in zip(a.tolist(), b.tolist(), strict=True))


def naive_info_nce(q, k, queue, t, extra=None, mask=None) -> float:
    """Per-sample loop: -log(exp(s_pos / t) / sum(exp(s / t))) over an explicit list of similarities."""
    total = 0.0
    n = q.shape[0]
    for i in range(n):
        sims = [_dot(q[i], k[i])] + [_dot(q[i], queue[j]) for j in range(queue.shape[0])]
        if extra is not None and (mask is None or bool(mask[i])):
            sims.append(_dot(q[i], extra[i]))
        denom = sum(math.exp(s / t) for s in sims)
        total += -math.log(math.exp(sims[0] / t) / denom)
    return total / n


@pytest.mark.parametrize("n,k,d", [(1, 0, 4), (3, 5, 8), (5, 12, 3)])
@pytest.mark.parametrize("t", [0.07, 0.5, 1.0])
def test_info_nce_matches_naive_loop(n: int, k: int, d: int, t: float) -> None:
    q, kp, queue, extra = _unit(n, d, seed=1), _unit(n, d, seed=2), _unit(k, d, seed=3), _unit(n, d, seed=4)
    mask = torch.arange(n) % 2 == 0
    assert info_nce(q, kp, queue, t).item() == pytest.approx(naive_info_nce(q, kp, queue, t), rel=1e-9)
    full = info_nce(q, kp, queue, t, extra_neg=extra)
    assert full.item() == pytest.approx(naive_info_nce(q, kp, queue, t, extra), rel=1e-9)
    masked = info_nce(q, kp, queue, t, extra_neg=extra, extra_mask=mask)
    assert masked.item() == pytest.approx(naive_info_nce(q, kp, queue, t, extra, mask), rel=1e-9)


def test_masked_sample_equals_loss_without_extra_negative() -> None:
    q, kp, queue, extra = _unit(4, 8, seed=5), _unit(4, 8, seed=6), _unit(6, 8, seed=7), _unit(4, 8, seed=8)
    for i in range(4):
        sl = slice(i, i + 1)
        off = info_nce(q[sl], kp[sl], queue, 0.2, extra_neg=extra[sl], extra_mask=torch.tensor([False]))
        on = info_nce(q[sl], kp[sl], queue, 0.2, extra_neg=extra[sl], extra_mask=torch.tensor([True]))
        plain = info_nce(q[sl], kp[sl], queue, 0.2)
        torch.testing.assert_close(off, plain, rtol=0, atol=1e-12)
        assert on.item() > plain.item()  # one more negative always raises the loss


def test_gradient_reaches_q_only_and_stays_finite_when_masked() -> None:
    q, kp, extra = (_unit(3, 8, seed=s).requires_grad_(True) for s in (9, 10, 12))
    queue = _unit(5, 8, seed=13).requires_grad_(True)
    loss = info_nce(q, kp, queue, 0.07, extra_neg=extra, extra_mask=torch.tensor([True, False, False]))
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert kp.grad is None and queue.grad is None and extra.grad is None


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"k_pos": _unit(2, 8, seed=0)}, "k_pos"),
        ({"queue": _unit(4, 7, seed=0)}, "queue"),
        ({"extra_neg": _unit(3, 8, seed=0)[:2]}, "extra_neg"),
        ({"extra_neg": _unit(3, 8, seed=0), "extra_mask": torch.ones(3)}, "extra_mask"),
        ({"extra_mask": torch.ones(3, dtype=torch.bool)}, "extra_mask"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_info_nce_rejects_bad_arguments(kwargs: dict[str, object], name: str) -> None:
    args: dict[str, object] = {"k_pos": _unit(3, 8, seed=1), "queue": _unit(4, 8, seed=2), **kwargs}
    with pytest.raises(ParameterError, match=name):
        info_nce(_unit(3, 8, seed=3), **args)


@pytest.mark.parametrize("chans", [4, 13])
def test_pooled_backbone_shapes(chans: int) -> None:
    torch.manual_seed(0)
    bb = PooledBackbone("resnet18", chans, 4)
    assert (bb.out_dim, bb.stride) == (512, 32)
    assert hasattr(bb.features, "feature_info")  # the plain timm features_only model
    x = _images(2, chans)
    out = bb(x)
    assert out.shape == (2, 512)
    torch.testing.assert_close(out, bb.features(x)[-1].mean(dim=(2, 3)))
    with pytest.raises(ParameterError, match="x has shape"):
        bb(x[0])


def test_projection_head_structure() -> None:
    head = ProjectionHead(512)
    dims = [(m.in_features, m.out_features) for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert dims == [(512, 512), (512, 128)]
    assert ProjectionHead(8, 4, 2)(torch.randn(3, 8)).shape == (3, 2)


def test_key_encoder_starts_as_exact_copy_without_grad(base: MoCo) -> None:
    model = base
    for q_mod, k_mod in ((model.backbone_q, model.backbone_k), (model.head_q, model.head_k)):
        q_sd, k_sd = q_mod.state_dict(), k_mod.state_dict()
        assert q_sd.keys() == k_sd.keys()
        assert all(torch.equal(q_sd[n], k_sd[n]) for n in q_sd)
        assert all(not p.requires_grad for p in k_mod.parameters())
    assert model.queue.shape == (8, 16) and int(model.queue_ptr) == 0
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(8))
    again = _moco(seed=0)  # the global seed fixes the weights and the queue
    assert torch.equal(model.queue, again.queue) and not torch.equal(model.queue, _moco(seed=1).queue)
    assert torch.equal(model.backbone_q.features.conv1.weight, again.backbone_q.features.conv1.weight)


def test_training_step_grads_and_loss_uses_queue_snapshot(model: MoCo) -> None:
    x = _images()
    q, k = model.query(x), model.key(x)
    assert q.shape == (4, 16) and q.requires_grad and not k.requires_grad
    torch.testing.assert_close(q.norm(dim=1), torch.ones(4))
    loss = model.loss(q, k)
    torch.testing.assert_close(loss, info_nce(q, k, model.queue, 0.07))
    model.enqueue(k)  # before backward: the loss holds a clone of the queue
    loss.backward()
    assert all(p.grad is not None for p in model.backbone_q.parameters())
    assert all(p.grad is None for p in (*model.backbone_k.parameters(), *model.head_k.parameters()))
    emb = model.backbone_embedding(x, key=False)
    assert emb.shape == (4, 512) and not emb.requires_grad


def test_enqueue_is_fifo_and_wraps(model: MoCo) -> None:
    initial = model.queue.clone()
    a, b, c = (_unit(4, 16, seed=s).float() for s in (1, 2, 3))
    model.enqueue(a)
    assert int(model.queue_ptr) == 4
    assert torch.equal(model.queue[:4], a) and torch.equal(model.queue[4:], initial[4:])
    model.enqueue(b)
    assert int(model.queue_ptr) == 0 and torch.equal(model.queue, torch.cat([a, b]))
    model.enqueue(c)
    assert int(model.queue_ptr) == 4 and torch.equal(model.queue, torch.cat([c, b]))
    with pytest.raises(ParameterError, match="queue_size=8 must be divisible by the batch size 3"):
        model.enqueue(_unit(3, 16, seed=4).float())
    with pytest.raises(ParameterError, match="keys"):
        model.enqueue(_unit(4, 15, seed=4).float())


def test_momentum_update_formula_and_buffer_copy(model: MoCo) -> None:
    model.momentum = 0.9
    with torch.no_grad():
        for p in (*model.backbone_q.parameters(), *model.head_q.parameters()):
            p.add_(torch.randn_like(p))
        for name, buf in model.backbone_q.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf))
    pairs = [(model.backbone_q, model.backbone_k), (model.head_q, model.head_k)]
    before = [
        (p_q.clone(), p_k.clone())
        for q_m, k_m in pairs
        for p_q, p_k in zip(q_m.parameters(), k_m.parameters(), strict=True)
    ]
    model.momentum_update()
    after = [p_k for _, k_m in pairs for p_k in k_m.parameters()]
    for (q0, k0), k1 in zip(before, after, strict=True):
        torch.testing.assert_close(k1, 0.9 * k0 + 0.1 * q0, rtol=1e-6, atol=1e-7)
        assert not torch.equal(k1, k0) and not k1.requires_grad
    for (_, b_q), (_, b_k) in zip(model.backbone_q.named_buffers(), model.backbone_k.named_buffers(), strict=True):
        assert torch.equal(b_q, b_k)
    model.momentum = 0.0
    with torch.no_grad():
        next(model.head_q.parameters()).add_(1.0)
    model.momentum_update()
    assert all(torch.equal(a, b) for a, b in zip(model.head_q.parameters(), model.head_k.parameters(), strict=True))


def test_key_unshuffles_and_shuffle_changes_split_bn_stats(model: MoCo) -> None:
    model.bn_splits = 2
    x = _images()
    model.eval()
    direct = F.normalize(model.head_k(model.backbone_k(x)), dim=1)
    torch.testing.assert_close(model.key(x, generator=torch.Generator().manual_seed(3)), direct)
    model.train()
    keys = [model.key(x, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1, 2, 3)]
    assert torch.equal(keys[0], keys[1])  # same generator seed, same permutation
    assert any(not torch.allclose(keys[0], other, atol=1e-4) for other in keys[2:])
    model.bn_splits = 1  # whole-batch BatchNorm is order-invariant
    a, b = (model.key(x, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"temperature": 0.0}, "temperature"),
        ({"queue_size": -1}, "queue_size"),
        ({"proj_dim": 0}, "proj_dim"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"bn_splits": 0}, "bn_splits"),
        ({"architecture": "no_such_net"}, "architecture"),
        ({"in_chans": 0}, "in_chans"),
    ],
)
def test_moco_rejects_bad_parameters(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ParameterError, match=name):
        MoCo(**{**TINY, **kwargs})
