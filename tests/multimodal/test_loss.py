"""The contrastive change loss against a naive loop, and its edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from changescope.errors import ParameterError
from changescope.multimodal.loss import ContrastiveChangeLoss, contrastive_change_loss


def naive_loss(o, s, labels, temperature, damage_weight, symmetric, negatives="changed"):
    """Straight from the method's wording, one pair at a time, in plain Python floats."""

    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    o = [unit(row) for row in o.tolist()]
    s = [unit(row) for row in s.tolist()]
    y = labels.tolist()
    changed = [j for j, v in enumerate(y) if v == 1]
    unchanged = [i for i, v in enumerate(y) if v == 0]
    labelled = [j for j, v in enumerate(y) if v >= 0]

    def nce(anchor, other):
        terms = []
        for i in unchanged:
            pos = math.exp(dot(anchor[i], other[i]) / temperature)
            pool = changed if negatives == "changed" else [j for j in labelled if j != i]
            neg = sum(math.exp(dot(anchor[i], other[j]) / temperature) for j in pool)
            terms.append(-math.log(pos / (pos + neg)))
        return sum(terms) / len(terms)

    total = 0.0
    if unchanged:
        total += (nce(o, s) + nce(s, o)) / 2 if symmetric else nce(o, s)
    if changed:
        total += damage_weight * sum(math.log1p(math.exp(dot(o[i], s[i]))) for i in changed) / len(changed)
    return total


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("dim", [3, 32])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("negatives", ["changed", "all"])
def test_matches_naive_loop(n, dim, temperature, symmetric, negatives):
    gen = torch.Generator().manual_seed(n * 1000 + dim + int(temperature * 100))
    o = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    s = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    labels = torch.randint(-1, 2, (n,), generator=gen)
    weight = 0.3 + float(torch.rand((), generator=gen, dtype=torch.float64))
    got = contrastive_change_loss(
        o, s, labels, temperature=temperature, damage_weight=weight, symmetric=symmetric, negatives=negatives
    )
    want = naive_loss(o, s, labels, temperature, weight, symmetric, negatives)
    assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_module_equals_function_and_has_gradients():
    gen = torch.Generator().manual_seed(0)
    o = torch.randn(6, 8, generator=gen, requires_grad=True)
    s = torch.randn(6, 8, generator=gen, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    loss = ContrastiveChangeLoss(0.07)(o, s, labels)
    assert torch.equal(loss, contrastive_change_loss(o, s, labels))
    loss.backward()
    assert o.grad is not None and s.grad is not None
    assert float(o.grad.abs().sum()) > 0 and float(s.grad.abs().sum()) > 0


def test_no_changed_pair_gives_zero_and_all_changed_gives_softplus():
    gen = torch.Generator().manual_seed(1)
    o, s = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    assert float(contrastive_change_loss(o, s, torch.zeros(5, dtype=torch.long))) == pytest.approx(0.0, abs=1e-6)
    cos = torch.nn.functional.cosine_similarity(o, s, dim=1)
    got = contrastive_change_loss(o, s, torch.ones(5, dtype=torch.long), damage_weight=2.0)
    assert float(got) == pytest.approx(float(2.0 * torch.nn.functional.softplus(cos).mean()), rel=1e-6)


def test_invariant_to_the_projection_norm_and_ignores_unlabelled():
    gen = torch.Generator().manual_seed(2)
    o, s = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    labels = torch.tensor([0, 1, -1, 0, 1, -1, 0])
    base = contrastive_change_loss(o, s, labels)
    assert float(contrastive_change_loss(3 * o, 0.5 * s, labels)) == pytest.approx(float(base), rel=1e-5)
    keep = labels >= 0
    assert float(contrastive_change_loss(o[keep], s[keep], labels[keep])) == pytest.approx(float(base), rel=1e-6)


def test_all_negatives_also_separates_unchanged_pairs():
    # Without a changed pair the published loss has nothing to contrast; with negatives="all" a batch of unchanged
    # pairs still learns which SAR belongs to which optical window (and a shuffled match costs more).
    gen = torch.Generator().manual_seed(4)
    o = torch.randn(6, 8, generator=gen)
    labels = torch.zeros(6, dtype=torch.long)
    assert float(contrastive_change_loss(o, o.clone(), labels)) == 0.0
    aligned = contrastive_change_loss(o, o.clone(), labels, negatives="all")
    shuffled = contrastive_change_loss(o, o.roll(1, 0), labels, negatives="all")
    assert 0.0 < float(aligned) < float(shuffled)
    module = ContrastiveChangeLoss(negatives="all")
    assert torch.equal(module(o, o.roll(1, 0), labels), shuffled)


def test_aligned_unchanged_pairs_lose_less():
    gen = torch.Generator().manual_seed(3)
    o = torch.randn(8, 16, generator=gen)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    aligned = contrastive_change_loss(o, o.clone(), labels)
    shuffled = contrastive_change_loss(o, o[torch.randperm(8, generator=gen)], labels)
    assert float(aligned) < float(shuffled)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": torch.tensor([0, 2, 1])}, "labels hold"),
        ({"labels": torch.tensor([0.0, 1.0, 1.0])}, "labels has dtype"),
        ({"labels": torch.tensor([0, 1])}, "labels has dtype"),
        ({"z_sar": torch.zeros(3, 5)}, "same non-empty"),
        ({"temperature": 0.0}, "temperature"),
        ({"damage_weight": -1.0}, "damage_weight"),
        ({"negatives": "some"}, "negatives='some'"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, match):
    args = {"z_opt": torch.ones(3, 4), "z_sar": torch.ones(3, 4), "labels": torch.tensor([0, 1, 1])} | kwargs
    with pytest.raises(ParameterError, match=match):
        contrastive_change_loss(**args)
