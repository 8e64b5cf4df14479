"""The supervised contrastive loss across modalities: InfoNCE with label-chosen negatives, softplus on damage.

For a batch of ``N`` pairs with L2-normalised optical projections ``o_i``, SAR projections ``s_i`` and labels
``y_i`` (1 = changed/damaged pair, 0 = unchanged, -1 = ignored), methods.md §3:

- every **unchanged** pair ``i`` is an InfoNCE anchor: its partner ``s_i`` is the positive and the SAR projections
  of the **changed** pairs of the batch are the negatives::

      l_i = -log( exp(o_i·s_i / t) / (exp(o_i·s_i / t) + sum_{j: y_j = 1} exp(o_i·s_j / t)) ),   t = 0.07

  (with no changed pair in the batch, ``l_i = 0``);
- every **changed** pair is pushed apart with ``d_i = softplus(o_i·s_i)`` (the cosine itself, unscaled);
- ``loss = mean_{y_i = 0} l_i + damage_weight * mean_{y_i = 1} d_i``; a group absent from the batch adds 0.

Choices not published, documented here: the two terms are group means added with ``damage_weight`` = 1; the
softplus takes the unscaled cosine; the anchors are the optical projections (``symmetric=True`` also anchors the
SAR projections on the optical ones and averages both directions). ``negatives="all"`` (ours) also counts the SAR
projections of the batch's other *unchanged* pairs as negatives, as CLIP-style cross-modal matching does: the
model then learns which SAR belongs to which optical window everywhere, not only how the labelled changes look,
so a kind of change absent from the training labels (a new river where only buildings were labelled) still
breaks the match. The tests compare this with a naive loop.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from changescope.errors import ParameterError

__all__ = ["NEGATIVES", "ContrastiveChangeLoss", "Negatives", "contrastive_change_loss"]

Negatives = Literal["changed", "all"]
NEGATIVES: tuple[str, ...] = get_args(Negatives)


def _check_params(temperature: float, damage_weight: float, negatives: str = "changed") -> None:
    if negatives not in NEGATIVES:
        raise ParameterError(f"negatives={negatives!r} is not one of {', '.join(NEGATIVES)}")
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ParameterError(f"temperature={temperature!r} must be a finite number > 0 (the method uses 0.07)")
    if not (isinstance(damage_weight, int | float) and math.isfinite(damage_weight) and damage_weight >= 0):
        raise ParameterError(f"damage_weight={damage_weight!r} must be a finite number >= 0")


def _check(z_opt: torch.Tensor, z_sar: torch.Tensor, labels: torch.Tensor) -> None:
    if z_opt.ndim != 2 or z_opt.shape[0] < 1 or z_opt.shape != z_sar.shape:
        raise ParameterError(
            f"z_opt {tuple(z_opt.shape)!r} and z_sar {tuple(z_sar.shape)!r} must both be the same non-empty (N, D)"
        )
    if labels.shape != (z_opt.shape[0],) or labels.dtype.is_floating_point:
        raise ParameterError(
            f"labels has dtype {labels.dtype} and shape {tuple(labels.shape)!r}; pass ({z_opt.shape[0]},) integers"
        )
    bad = ~((labels == 0) | (labels == 1) | (labels == -1))
    if bool(bad.any()):
        raise ParameterError(
            f"labels hold {sorted({int(v) for v in labels[bad]})!r}; use 1 (changed), 0 (unchanged) or -1 (ignore)"
        )


def _anchored(sim: torch.Tensor, anchors: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean InfoNCE of the anchor rows of ``sim`` (logits), the diagonal positive, the ``negative`` columns negative."""
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    allowed = eye | negative[None, :]
    logits = sim[anchors].masked_fill(~allowed[anchors], float("-inf"))
    per_anchor = torch.logsumexp(logits, dim=1) - sim.diagonal()[anchors]
    return per_anchor.mean()


def contrastive_change_loss(
    z_opt: torch.Tensor,
    z_sar: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 0.07,
    damage_weight: float = 1.0,
    symmetric: bool = False,
    negatives: Negatives = "changed",
) -> torch.Tensor:
    """The loss of the module docstring.

    Args:
        z_opt: ``(N, D)`` optical projections (L2-normalised here).
        z_sar: ``(N, D)`` SAR projections (L2-normalised here).
        labels: ``(N,)`` integers: 1 = changed pair, 0 = unchanged, -1 = ignored.
        temperature: InfoNCE temperature, > 0.
        damage_weight: Weight of the softplus term, >= 0.
        symmetric: Average the optical-anchored and SAR-anchored InfoNCE.
        negatives: ``"changed"`` (published): the changed pairs' projections are the negatives; ``"all"`` (ours):
            every other labelled pair's too.

    Returns:
        Scalar loss tensor.

    Raises:
        ParameterError: Shapes or labels that do not fit, or a bad temperature or weight.
    """
    _check_params(temperature, damage_weight, negatives)
    _check(z_opt, z_sar, labels)
    o, s = F.normalize(z_opt, dim=1), F.normalize(z_sar, dim=1)
    labels = labels.to(o.device)
    unchanged, changed = labels == 0, labels == 1
    loss = o.new_zeros(())
    if bool(unchanged.any()):
        sim = (o @ s.T) / temperature
        negative = changed if negatives == "changed" else labels >= 0
        nce = _anchored(sim, unchanged, negative)
        if symmetric:
            nce = (nce + _anchored(sim.T, unchanged, negative)) / 2
        loss = loss + nce
    if bool(changed.any()):
        cos = (o[changed] * s[changed]).sum(dim=1)
        loss = loss + damage_weight * F.softplus(cos).mean()
    return loss


class ContrastiveChangeLoss(nn.Module):
    """:func:`contrastive_change_loss` as a module (shapes and defaults as there).

    Args:
        temperature: InfoNCE temperature (0.07).
        damage_weight: Weight of the softplus term on damaged pairs.
        symmetric: Average both anchoring directions.
        negatives: Which pairs' projections are negatives (``"changed"`` or ``"all"``).

    Raises:
        ParameterError: A bad temperature, weight or ``negatives``.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        damage_weight: float = 1.0,
        symmetric: bool = False,
        negatives: Negatives = "changed",
    ) -> None:
        super().__init__()
        _check_params(temperature, damage_weight, negatives)
        self.temperature, self.damage_weight, self.symmetric = float(temperature), float(damage_weight), symmetric
        self.negatives: Negatives = negatives

    def forward(self, z_opt: torch.Tensor, z_sar: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``(N, D)`` optical and SAR projections with ``(N,)`` labels; a scalar."""
        return contrastive_change_loss(
            z_opt,
            z_sar,
            labels,
            temperature=self.temperature,
            damage_weight=self.damage_weight,
            symmetric=self.symmetric,
            negatives=self.negatives,
        )
