"""The Clay v1.5 encoder as plain ``nn.Module`` s, laid out so the official checkpoint loads strictly.

Clay (Clay Foundation, v1.5) is a masked-autoencoder ViT trained on many sensors. Its patch embedding is *dynamic*:
the convolution that turns an ``8 x 8`` patch of ``C`` bands into a ``D``-vector is generated on the fly from the
bands' centre wavelengths (the DOFA idea), so any optical band set works. The pieces, and the state-dict names they
must keep (below the checkpoint prefix ``model.encoder.``):

- ``patch_embedding.fclayer`` (``l1``, ``l2``): a residual two-layer GELU MLP on the sin/cos wavelength codes;
- ``patch_embedding.weight_generator``: one ``nn.TransformerEncoder`` layer (``encoder.layers.0.*``) over
  ``[latent weight tokens, band tokens, bias token]``, then ``fc_weight`` (band token -> ``p * p * D`` kernel
  weights) and ``fc_bias`` (bias token -> ``D``); ``weight_tokens`` and ``bias_token`` are parameters;
- ``cls_token`` ``(1, 1, D)``;
- ``transformer``: pre-norm blocks ``layers.<i>.0`` (attention: ``norm``, ``to_qkv`` and ``to_out`` without bias)
  and ``layers.<i>.1.net`` (``LayerNorm``, ``Linear``, ``GELU``, ``Linear``), then a final ``norm``.

Patch tokens get a fixed 2-D sin/cos position code scaled by the GSD in their first ``D - 8`` channels and the
time (week, hour) and location (lat, lon) sin/cos codes in their last 8. No masking is applied at inference.
This is an independent implementation written against the published architecture (Clay-foundation/model,
``claymodel/model.py``, ``embedding.py``, ``layers.py``, ``utils.py``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from changescope.encoders.weights import check_state_dict
from changescope.errors import CorruptFileError

__all__ = [
    "CHECKPOINT_PREFIX",
    "CLAY_CONFIGS",
    "ClayConfig",
    "ClayEncoderNet",
    "DynamicPatchEmbedding",
    "gsd_position_code",
    "load_clay_weights",
    "read_clay_state_dict",
    "wave_code",
]

CHECKPOINT_PREFIX = "model.encoder."
"""Prefix of the encoder's tensors in the official Lightning checkpoint."""

_KERNEL_SCALE = 0.02
"""Clay multiplies the generated kernel by this constant (part of the trained model, not a tunable)."""


@dataclass(frozen=True)
class ClayConfig:
    """Hyper-parameters of a Clay encoder.

    Attributes:
        dim: Token dimension ``D``.
        depth: Number of transformer blocks.
        heads: Attention heads.
        dim_head: Dimension per head.
        mlp_ratio: Hidden width of the feed-forward blocks, as a multiple of ``dim``.
        patch_size: Pixels per patch side.
        wave_dim: Width of the wavelength codes and of the weight-generator transformer.
        num_latent_tokens: Learned tokens prepended to the band tokens in the weight generator.
        wave_heads: Attention heads of the weight-generator transformer.
        wave_ff_dim: Feed-forward width of the weight-generator transformer (torch's default 2048 in Clay).
    """

    dim: int = 1024
    depth: int = 24
    heads: int = 16
    dim_head: int = 64
    mlp_ratio: float = 4.0
    patch_size: int = 8
    wave_dim: int = 128
    num_latent_tokens: int = 128
    wave_heads: int = 4
    wave_ff_dim: int = 2048


CLAY_CONFIGS: dict[str, ClayConfig] = {
    # Clay v1.5 "large" (claymodel.model.clay_mae_large): the only size with a published v1.5 checkpoint.
    "clay": ClayConfig(),
    # A tiny variant sharing every code path, for tests and CI.
    "clay_test": ClayConfig(
        dim=32, depth=2, heads=2, dim_head=16, mlp_ratio=2.0, wave_dim=16, num_latent_tokens=8, wave_ff_dim=32
    ),
}
"""Registered Clay encoder configurations by registry name."""


def wave_code(waves: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sin/cos code of band centre wavelengths.

    Args:
        waves: ``(C,)`` centre wavelengths in micrometres (Clay's unit).
        dim: Code width (even).
        temperature: Frequency base.

    Returns:
        ``(C, dim)``: ``[sin(w * f_k), cos(w * f_k)]`` with ``f_k = temperature ** (-k / (dim / 2 - 1))``.
    """
    half = dim // 2
    freq = temperature ** (-torch.arange(half, dtype=torch.float32, device=waves.device) / (half - 1))
    angles = waves.float()[:, None] * freq[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=1)


def gsd_position_code(h: int, w: int, dim: int, gsd: float, temperature: float = 10000.0) -> torch.Tensor:
    """Clay's 2-D sin/cos position code whose frequencies are scaled by the ground sample distance.

    Args:
        h: Token rows.
        w: Token columns.
        dim: Code width (multiple of 4).
        gsd: Metres per pixel.
        temperature: Frequency base.

    Returns:
        ``(h * w, dim)`` in row-major token order: ``[sin(x f), cos(x f), sin(y f), cos(y f)]`` with
        ``f_k = gsd * temperature ** (-2 k / ((dim / 4 - 1) * dim))``, as Clay v1.5 computes it.
    """
    quarter = dim // 4
    steps = torch.arange(quarter, dtype=torch.float32) / (quarter - 1)
    freq = gsd / temperature ** (2 * steps / dim)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    x = xs.reshape(-1, 1) * freq[None, :]
    y = ys.reshape(-1, 1) * freq[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)


class _ResidualMLP(nn.Module):
    """``x + gelu(l2(gelu(l1(x))))`` on ``(..., size)``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(size, size)
        self.l2 = nn.Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``(..., size)``."""
        return x + F.gelu(self.l2(F.gelu(self.l1(x))))


class _WeightGenerator(nn.Module):
    """Turns ``(C, wave_dim)`` band codes into kernel weights ``(C, p * p * D)`` and a bias ``(D,)``."""

    def __init__(self, cfg: ClayConfig) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.wave_dim,
            nhead=cfg.wave_heads,
            dim_feedforward=cfg.wave_ff_dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(cfg.wave_dim, cfg.patch_size * cfg.patch_size * cfg.dim)
        self.fc_bias = nn.Linear(cfg.wave_dim, cfg.dim)
        self.weight_tokens = nn.Parameter(torch.randn(cfg.num_latent_tokens, cfg.wave_dim) * 0.02)
        self.bias_token = nn.Parameter(torch.randn(1, cfg.wave_dim) * 0.02)

    def forward(self, bands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate the kernel from ``(C, wave_dim)`` band codes; returns ``((C, p*p*D), (D,))``."""
        n_latent = self.weight_tokens.shape[0]
        seq = torch.cat((self.weight_tokens, bands, self.bias_token), dim=0)
        out = self.encoder(seq.unsqueeze(0)).squeeze(0)
        weights = self.fc_weight(out[n_latent:-1] + seq[n_latent:-1])
        bias = self.fc_bias(out[-1])
        return weights, bias


class DynamicPatchEmbedding(nn.Module):
    """Wavelength-conditioned patch embedding.

    Args:
        cfg: Encoder configuration.
    """

    def __init__(self, cfg: ClayConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight_generator = _WeightGenerator(cfg)
        self.fclayer = _ResidualMLP(cfg.wave_dim)

    def forward(self, pixels: torch.Tensor, waves: torch.Tensor) -> torch.Tensor:
        """Embed patches.

        Args:
            pixels: ``(N, C, H, W)`` normalised input, ``H`` and ``W`` multiples of the patch size.
            waves: ``(C,)`` centre wavelengths in micrometres.

        Returns:
            ``(N, D, H / p, W / p)`` patch embeddings.
        """
        p, dim = self.cfg.patch_size, self.cfg.dim
        codes = self.fclayer(wave_code(waves.to(pixels.device), self.cfg.wave_dim))
        weights, bias = self.weight_generator(codes)
        # (C, D * p * p) -> (D, C, p, p): the generated row of each band holds its slice of every output filter.
        kernel = weights.reshape(weights.shape[0], dim, p, p).transpose(0, 1)
        return F.conv2d(pixels, kernel * _KERNEL_SCALE, bias=bias, stride=p)


class _Attention(nn.Module):
    """Pre-norm multi-head self-attention (no biases) on ``(N, L, D)``."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the ``L`` tokens of ``(N, L, D)``; returns the update ``(N, L, D)``."""
        n, length, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        merged: torch.Tensor = self.to_out(out.transpose(1, 2).reshape(n, length, -1))
        return merged


class _FeedForward(nn.Module):
    """Pre-norm MLP on ``(N, L, D)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the update ``(N, L, D)``."""
        out: torch.Tensor = self.net(x)
        return out


class _Transformer(nn.Module):
    """Residual attention + MLP blocks and a final LayerNorm."""

    def __init__(self, cfg: ClayConfig) -> None:
        super().__init__()
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.layers = nn.ModuleList(
            nn.ModuleList([_Attention(cfg.dim, cfg.heads, cfg.dim_head), _FeedForward(cfg.dim, hidden)])
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``(N, L, D)`` tokens."""
        for block in self.layers:
            attn, ff = cast(nn.ModuleList, block)
            x = x + attn(x)
            x = x + ff(x)
        out: torch.Tensor = self.norm(x)
        return out


class ClayEncoderNet(nn.Module):
    """The Clay encoder (no masking): pixels, wavelengths and metadata to ``[CLS] + patch`` tokens.

    Args:
        cfg: Encoder configuration (see :data:`CLAY_CONFIGS`).
    """

    def __init__(self, cfg: ClayConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim) * 0.02)
        self.patch_embedding = DynamicPatchEmbedding(cfg)
        self.transformer = _Transformer(cfg)

    def forward(
        self, pixels: torch.Tensor, waves: torch.Tensor, gsd: float, time: torch.Tensor, latlon: torch.Tensor
    ) -> torch.Tensor:
        """Encode a batch.

        Args:
            pixels: ``(N, C, H, W)`` input normalised with Clay's per-band statistics.
            waves: ``(C,)`` centre wavelengths in micrometres.
            gsd: Metres per pixel.
            time: ``(N, 4)`` ``[sin week, cos week, sin hour, cos hour]`` (zeros = unknown).
            latlon: ``(N, 4)`` ``[sin lat, cos lat, sin lon, cos lon]`` (zeros = unknown).

        Returns:
            ``(N, 1 + h * w, D)``: the CLS token, then the patch tokens in row-major order
            (``h = H / p``, ``w = W / p``).
        """
        emb = self.patch_embedding(pixels, waves)
        n, dim, h, w = emb.shape
        tokens = emb.flatten(2).transpose(1, 2)
        pos = gsd_position_code(h, w, dim - 8, gsd).to(tokens)
        meta = torch.cat((time, latlon), dim=1).to(tokens)
        code = torch.cat((pos.unsqueeze(0).expand(n, -1, -1), meta.unsqueeze(1).expand(-1, h * w, -1)), dim=2)
        tokens = torch.cat((self.cls_token.expand(n, -1, -1), tokens + code), dim=1)
        out: torch.Tensor = self.transformer(tokens)
        return out


def _stub_for(qualname: str) -> type:
    """An inert class standing in for a global that ``weights_only`` loading refuses; it runs no code."""

    def _init(self: object, *args: object, **kwargs: object) -> None:
        pass

    def _setstate(self: object, state: object) -> None:
        pass

    return type(f"Refused[{qualname}]", (), {"__init__": _init, "__setstate__": _setstate})


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # files in torch's legacy (non-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _container_for(err: Exception) -> type | None:
    """``dict``/``list`` when ``weights_only`` stopped because a stand-in cannot take items."""
    msg = str(err)
    return dict if "SETITEM" in msg else list if "append to lists" in msg else None


def _load_with_stand_ins(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with each refused global bound to an inert stand-in.

    Objects become stand-in instances, except dict/list subclasses, which ``weights_only`` fills only when they are
    plain ``dict``/``list``: when loading stops there, the refused globals are tried as ``dict``/``list`` one at a
    time (a try that fails otherwise is undone).
    """
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    subs: dict[str, Any] = {n: _stub_for(n) for n in names}

    def attempt() -> Any:
        with torch.serialization.safe_globals([(v, n) for n, v in subs.items()]):
            return _torch_load(path)

    try:
        return attempt()
    except pickle.UnpicklingError as err:
        first = err
    for name in names:
        container = _container_for(first)
        if container is None:
            break
        before = subs[name]
        subs[name] = container
        try:
            return attempt()
        except pickle.UnpicklingError as err:
            if _container_for(err) is None:
                subs[name] = before
        except Exception:  # the container cannot rebuild this global (e.g. called with arguments): undo
            subs[name] = before
    raise first


def read_clay_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Encoder tensors of a Clay checkpoint, keys without the ``model.encoder.`` prefix.

    Accepts the official Lightning checkpoint (``{"state_dict": {"model.encoder.…": tensor, …}, …}``), a plain
    state dict with or without the prefix, or a ``.safetensors`` file. Loading is
    ``torch.load(weights_only=True, mmap=True)``; globals it refuses (Lightning hyper-parameter objects) are bound to
    inert stand-ins and dropped, so nothing in the file is executed.

    Raises:
        CorruptFileError: The file cannot be read or holds no tensors.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path))
        else:
            try:
                raw = _torch_load(path)
            except pickle.UnpicklingError:  # refused globals: retried with inert stand-ins
                raw = _load_with_stand_ins(path)
    except Exception as err:  # safetensors, zipfile and pickle raise many types for damaged files
        raise CorruptFileError(f"{str(path)!r} is not a readable Clay checkpoint ({err}); re-download it") from err
    sd = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    if not isinstance(sd, dict):
        raise CorruptFileError(f"{str(path)!r} holds {type(sd).__name__}, not a Clay checkpoint")
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    prefixed = {k[len(CHECKPOINT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(CHECKPOINT_PREFIX)}
    if prefixed:
        return prefixed
    if any(k.startswith("model.") for k in tensors):
        raise CorruptFileError(
            f"{str(path)!r} has no 'model.encoder.*' tensors; it is not a Clay MAE checkpoint (expected the "
            "Lightning file v1.5/clay-v1.5.ckpt from made-with-clay/Clay)"
        )
    return {k.removeprefix("encoder."): v for k, v in tensors.items()}


def load_clay_weights(net: ClayEncoderNet, path: Path, name: str) -> ClayEncoderNet:
    """Load a Clay checkpoint into ``net`` strictly.

    Args:
        net: The encoder to fill.
        path: Checkpoint (see :func:`read_clay_state_dict`).
        name: Registry name, for messages.

    Returns:
        ``net`` with the checkpoint's weights.

    Raises:
        CorruptFileError: Unreadable file, or keys missing, unexpected or of the wrong shape.
    """
    sd = read_clay_state_dict(path)
    check_state_dict(
        net.state_dict(),
        sd,
        what=repr(str(path)),
        target=f"encoder {name!r}",
        fix=f"pass the Clay v1.5 checkpoint for 'clay', or a checkpoint written for {name!r} "
        "(see changescope.testing.checkpoints_insitu)",
        error=CorruptFileError,
    )
    net.load_state_dict(sd, strict=True)
    return net
