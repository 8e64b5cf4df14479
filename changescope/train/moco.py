"""MoCo v2 core: pooled backbone, projection head, momentum key encoder with its queue, and the InfoNCE loss.

Everything here is a plain :class:`torch.nn.Module` or function; the training loop owns the optimiser, the data and
the schedule (:mod:`changescope.train.ssl`). Defaults are MoCo v2's as CACo uses them: a 16384-key queue, key
momentum 0.999, temperature 0.07, and a 2-layer MLP head (512 -> 512 -> 128 on a ResNet-18).

One MoCo step, for a batch ``x_q`` and its positive views ``x_k``::

    q = model.query(x_q)                      # (N, proj_dim), with grad
    k = model.key(x_k, generator=gen)         # (N, proj_dim), no grad
    loss = model.loss(q, k)                   # InfoNCE against the queue
    loss.backward(); optimiser.step()
    model.momentum_update()
    model.enqueue(k)

CACo adds a per-sample long-term negative: ``model.loss(q, k, extra_neg=k_long, extra_mask=tracker.mask(locs))``
(see :mod:`changescope.train.gating`).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from changescope.encoders.timm_cnn import build_backbone, feature_stages
from changescope.errors import ParameterError

__all__ = ["MoCo", "PooledBackbone", "ProjectionHead", "info_nce"]


def _positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(f"{name}={value!r} must be an integer >= {minimum}")
    return value


class PooledBackbone(nn.Module):
    """A timm ``features_only`` backbone followed by global average pooling.

    Args:
        architecture: timm model name (``"resnet18"``, ``"resnet50"``).
        in_chans: Input bands.
        stage: Feature stage whose map is pooled (4 = last ResNet stage: stride 32, 512 channels on a ResNet-18,
            2048 on a ResNet-50).

    Attributes:
        features: The plain timm ``features_only`` model (what
            :func:`changescope.encoders.checkpoint.save_checkpoint_encoder` saves).
        out_dim: Channels of the pooled feature.
        stride: Stride of the pooled feature map.

    Raises:
        ParameterError: Unknown architecture, ``in_chans < 1`` or a stage out of range.
    """

    def __init__(self, architecture: str = "resnet18", in_chans: int = 4, stage: int = 4) -> None:
        super().__init__()
        self.features = build_backbone(architecture, _positive_int("in_chans", in_chans), stage)
        self.features.train()  # build_backbone hands it over in eval mode; a new module starts in train mode
        self.stride, self.out_dim = feature_stages(self.features)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: ``(N, C, H, W)`` -> ``(N, out_dim)``."""
        if x.ndim != 4:
            raise ParameterError(f"x has shape {tuple(x.shape)!r}; pass a (N, C, H, W) batch")
        fmap: torch.Tensor = self.features(x)[-1]
        return fmap.mean(dim=(2, 3))


class ProjectionHead(nn.Module):
    """MoCo v2 MLP head: ``Linear(in_dim, hidden_dim) -> ReLU -> Linear(hidden_dim, out_dim)``.

    Args:
        in_dim: Input features (the backbone's ``out_dim``).
        hidden_dim: Hidden width; ``None`` uses ``in_dim`` (512 -> 512 -> 128 on a ResNet-18).
        out_dim: Projection size.

    Raises:
        ParameterError: A dimension below 1.
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> None:
        super().__init__()
        in_dim = _positive_int("in_dim", in_dim)
        hidden = in_dim if hidden_dim is None else _positive_int("hidden_dim", hidden_dim)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, _positive_int("out_dim", out_dim))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``(N, in_dim)`` -> ``(N, out_dim)`` (not normalised)."""
        out: torch.Tensor = self.net(x)
        return out


def _check_2d(name: str, t: torch.Tensor, rows: int | None, dim: int) -> None:
    if t.ndim != 2 or t.shape[1] != dim or (rows is not None and t.shape[0] != rows):
        want = f"({rows if rows is not None else 'K'}, {dim})"
        raise ParameterError(f"{name} has shape {tuple(t.shape)!r}; it must be {want} like q")


def info_nce(
    q: torch.Tensor,
    k_pos: torch.Tensor,
    queue: torch.Tensor,
    temperature: float = 0.07,
    *,
    extra_neg: torch.Tensor | None = None,
    extra_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE with one positive per sample, shared queue negatives and an optional per-sample extra negative.

    ``logits = cat([q·k_pos, q @ queue.T, q·extra_neg]) / temperature`` and the loss is the cross-entropy with
    target index 0, averaged over the batch. The extra negative (CACo's long-term key) enters only where
    ``extra_mask`` is True; masked entries get a ``-inf`` logit so they contribute exactly nothing.
    ``k_pos``, ``queue`` and ``extra_neg`` are constants (detached): gradients reach ``q`` only.

    Args:
        q: ``(N, D)`` L2-normalised queries.
        k_pos: ``(N, D)`` L2-normalised positive keys.
        queue: ``(K, D)`` L2-normalised negatives; ``K`` may be 0.
        temperature: Softmax temperature, > 0.
        extra_neg: ``(N, D)`` L2-normalised per-sample negatives, or ``None``.
        extra_mask: ``(N,)`` bool, where ``extra_neg`` is used; ``None`` uses it everywhere.

    Returns:
        Scalar loss tensor.

    Raises:
        ParameterError: Shapes that do not match, a non-bool mask, a mask without ``extra_neg``, or a bad
            temperature.
    """
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ParameterError(f"temperature={temperature!r} must be a finite number > 0 (MoCo v2 uses 0.07)")
    if q.ndim != 2 or q.shape[0] < 1:
        raise ParameterError(f"q has shape {tuple(q.shape)!r}; pass a non-empty (N, D) batch")
    n, d = q.shape
    _check_2d("k_pos", k_pos, n, d)
    _check_2d("queue", queue, None, d)
    pos = (q * k_pos.detach()).sum(dim=1, keepdim=True)
    parts = [pos, q @ queue.detach().T]
    if extra_neg is not None:
        _check_2d("extra_neg", extra_neg, n, d)
        extra = (q * extra_neg.detach()).sum(dim=1, keepdim=True)
        if extra_mask is not None:
            if extra_mask.dtype != torch.bool or tuple(extra_mask.shape) != (n,):
                raise ParameterError(
                    f"extra_mask has dtype {extra_mask.dtype} and shape {tuple(extra_mask.shape)!r}; "
                    f"pass a ({n},) bool tensor"
                )
            extra = extra.masked_fill(~extra_mask.to(extra.device)[:, None], float("-inf"))
        parts.append(extra)
    elif extra_mask is not None:
        raise ParameterError("extra_mask was given without extra_neg; pass both or neither")
    logits = torch.cat(parts, dim=1) / temperature
    target = torch.zeros(n, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


class MoCo(nn.Module):
    """MoCo v2: a query encoder, a momentum key encoder and a FIFO queue of negative keys.

    The key backbone and head start as exact copies of the query ones and never receive gradients; they follow
    the query encoder through :meth:`momentum_update`.

    Multi-GPU MoCo shuffles the key batch across GPUs so that BatchNorm statistics cannot leak which query goes
    with which key ("shuffle BN"). Single-process training cannot do that. Here :meth:`key` shuffles the key batch
    order before the key forward and restores it afterwards; with ``bn_splits > 1`` the query and key batches
    are also forwarded in that many chunks, each normalised with its own BatchNorm statistics, so the shuffled
    key chunks see other batch statistics than their queries (the single-GPU emulation of shuffle BN). With the
    default ``bn_splits=1`` a whole-batch BatchNorm is order-invariant and the shuffle changes nothing.

    Args:
        architecture: timm model name (``"resnet18"``, ``"resnet50"``).
        in_chans: Input bands.
        stage: Backbone feature stage that is pooled.
        hidden_dim: Head hidden width; ``None`` = the backbone's ``out_dim``.
        proj_dim: Projection (embedding) size.
        queue_size: Number of negative keys; 0 disables the queue. Must be a multiple of the batch size.
        momentum: Key encoder momentum ``m`` in ``[0, 1)``.
        temperature: InfoNCE temperature, > 0.
        bn_splits: Chunks each batch is forwarded in (see above); 1 = whole-batch BatchNorm.

    Attributes:
        queue: ``(queue_size, proj_dim)`` buffer of L2-normalised keys, initialised from torch's global RNG.
        queue_ptr: Long scalar buffer, the next row :meth:`enqueue` writes.

    Raises:
        ParameterError: Any argument out of range.
    """

    queue: torch.Tensor
    queue_ptr: torch.Tensor

    def __init__(
        self,
        architecture: str = "resnet18",
        in_chans: int = 4,
        *,
        stage: int = 4,
        hidden_dim: int | None = None,
        proj_dim: int = 128,
        queue_size: int = 16384,
        momentum: float = 0.999,
        temperature: float = 0.07,
        bn_splits: int = 1,
    ) -> None:
        super().__init__()
        if not (isinstance(momentum, int | float) and 0.0 <= momentum < 1.0):
            raise ParameterError(f"momentum={momentum!r} must be in [0, 1) (MoCo uses 0.999)")
        if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
            raise ParameterError(f"temperature={temperature!r} must be a finite number > 0 (MoCo v2 uses 0.07)")
        self.queue_size = _positive_int("queue_size", queue_size, minimum=0)
        self.proj_dim = _positive_int("proj_dim", proj_dim)
        self.bn_splits = _positive_int("bn_splits", bn_splits)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.backbone_q = PooledBackbone(architecture, in_chans, stage)
        self.head_q = ProjectionHead(self.backbone_q.out_dim, hidden_dim, proj_dim)
        self.backbone_k = copy.deepcopy(self.backbone_q)
        self.head_k = copy.deepcopy(self.head_q)
        for p in (*self.backbone_k.parameters(), *self.head_k.parameters()):
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _project(self, x: torch.Tensor, *, key: bool) -> torch.Tensor:
        backbone, head = (self.backbone_k, self.head_k) if key else (self.backbone_q, self.head_q)
        if x.ndim != 4 or x.shape[0] < 1:
            raise ParameterError(f"x has shape {tuple(x.shape)!r}; pass a non-empty (N, C, H, W) batch")
        chunks = torch.tensor_split(x, min(self.bn_splits, x.shape[0]))
        return F.normalize(torch.cat([head(backbone(c)) for c in chunks]), dim=1)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised query projections ``(N, C, H, W)`` -> ``(N, proj_dim)``, with gradients."""
        return self._project(x, key=False)

    def key(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """L2-normalised key projections ``(N, C, H, W)`` -> ``(N, proj_dim)`` from the key encoder, no gradients.

        The batch is permuted before the forward and un-permuted after, so row ``i`` of the output is the key
        of ``x[i]`` (see the class docstring on shuffle BN).

        Args:
            x: Input batch.
            generator: Draws the permutation; ``None`` uses torch's global RNG.
        """
        with torch.no_grad():
            perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
            out = self._project(x[perm], key=True)
            return out[torch.argsort(perm)]

    def backbone_embedding(self, x: torch.Tensor, *, key: bool = True) -> torch.Tensor:
        """Pooled backbone features ``(N, C, H, W)`` -> ``(N, out_dim)`` without gradients.

        Used to measure long- and short-term distances for CACo's change estimate. The encoder runs in its
        current mode: in train mode BatchNorm uses (and updates) batch statistics.

        Args:
            x: Input batch.
            key: Use the key encoder (default) or the query encoder.
        """
        with torch.no_grad():
            out: torch.Tensor = (self.backbone_k if key else self.backbone_q)(x)
            return out

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``θ_k <- m·θ_k + (1 - m)·θ_q`` for every parameter; buffers (BatchNorm statistics) are copied."""
        m = self.momentum
        for q_mod, k_mod in ((self.backbone_q, self.backbone_k), (self.head_q, self.head_k)):
            for p_q, p_k in zip(q_mod.parameters(), k_mod.parameters(), strict=True):
                p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)
            for b_q, b_k in zip(q_mod.buffers(), k_mod.buffers(), strict=True):
                b_k.copy_(b_q)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest ``keys.shape[0]`` rows of the queue (FIFO) and advance :attr:`queue_ptr`.

        Args:
            keys: ``(B, proj_dim)`` L2-normalised keys, usually the output of :meth:`key`.

        Raises:
            ParameterError: Wrong shape, or ``queue_size`` not a multiple of ``B``.
        """
        _check_2d("keys", keys, None, self.proj_dim)
        b = int(keys.shape[0])
        if b < 1 or self.queue_size % b:
            raise ParameterError(
                f"queue_size={self.queue_size!r} must be divisible by the batch size {b}; choose a queue size that "
                "is a multiple of the batch size (and drop the last incomplete batch)"
            )
        if self.queue_size == 0:
            return
        ptr = int(self.queue_ptr)
        self.queue[ptr : ptr + b] = keys.detach().to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + b) % self.queue_size)

    def loss(
        self,
        q: torch.Tensor,
        k_pos: torch.Tensor,
        *,
        extra_neg: torch.Tensor | None = None,
        extra_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:func:`info_nce` of ``q`` against ``k_pos`` and a snapshot of the current queue (shapes as there).

        The queue is cloned, so :meth:`enqueue` may run before ``backward()``.
        """
        return info_nce(q, k_pos, self.queue.clone(), self.temperature, extra_neg=extra_neg, extra_mask=extra_mask)
