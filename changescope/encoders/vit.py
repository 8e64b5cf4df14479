"""General-purpose ViT encoders: DINOv2 ViT-S/14 and ViT-B/14, through timm or Hugging Face transformers.

Registered names:
    ``dinov2_s``: DINOv2 ViT-S/14 (LVD-142M), 384-d. ``dinov2_b``: DINOv2 ViT-B/14 (LVD-142M), 768-d.
    ``dinov2_test``: a tiny random ViT (2 blocks, 32-d) with the same architecture and code path, for tests.

Backends (``backend=`` keyword of :func:`~changescope.encoders.create_encoder`):
    ``"timm"`` (the default): ``vit_small_patch14_dinov2`` / ``vit_base_patch14_dinov2`` with
    ``dynamic_img_size=True``; default weights ``model.safetensors`` of ``timm/vit_*_patch14_dinov2.lvd142m``
    from the Hugging Face hub cache. One file, no config. ``"transformers"``: ``Dinov2Model.from_pretrained``
    on ``facebook/dinov2-small`` / ``facebook/dinov2-base`` (``config.json`` + ``model.safetensors``).
    ``weights=PATH`` picks the backend itself: a folder whose ``config.json`` has ``model_type`` ``dinov2`` (or
    ``dinov2_with_registers``) is a transformers checkpoint; a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin``
    state dict (timm or original facebookresearch key names), or a timm hub folder, is loaded with timm. A
    Hugging Face repo id is loaded with timm when it starts with ``timm/``, else with transformers.
    ``weights="random"`` gives a seeded random initialisation (``seed=``); a weights tag (``dinov2_s.lvd142m``,
    see :func:`~changescope.encoders.list_weights`) names the default file.

Input:
    RGB (red, green, blue) tiles ``(N, 3, H, W)`` with ``H`` and ``W`` multiples of 14 (the embed pipeline pads
    or crops tiles to such sizes; the encoder refuses others with a :class:`~changescope.errors.ParameterError`).
    Position embeddings are interpolated to any grid, so tiles need not be square or 224 px; 224 px (a 16 x 16
    token grid, DINOv2's main training resolution, about 6 GMACs for ViT-S) is the preferred size.

Normalisation:
    DINOv2 expects photographs scaled to 0-1 and standardised with the ImageNet mean/std. Surface reflectance of
    the visible bands is dark (mostly 0.02-0.25) and its range depends on sensor, season and atmosphere, so the
    metadata asks for a per-tile, per-band 2-98 % percentile stretch to 0-1 (``Normalization("stretch")``)
    followed by the ImageNet mean/std. This makes the embedding insensitive to global gain and offset changes
    (illumination, calibration), which the change finder should not report; the price is that a uniform
    brightening of a whole tile is invisible too. ``normalization="fixed"`` (:data:`RGB_FIXED_GAIN`: reflectance
    0-0.3 mapped linearly to 0-1, the usual true-colour range, then ImageNet mean/std) keeps absolute brightness;
    ``normalization=`` also takes any :class:`~changescope.encoders.base.Normalization`. The choice is recorded in
    the encoder's ``meta`` (and so in the embeddings store).

Output:
    :meth:`DinoV2Encoder.feature_map` returns the final-norm patch tokens (class and register tokens dropped) as
    ``(N, D, H / 14, W / 14)``; :meth:`~changescope.encoders.base.Encoder.encode` is the mean of the patch tokens
    (not the class token), so the pooled vector summarises exactly the pixels of the tile.

This module holds the encoder class and its factory; the architectures and loading are in
:mod:`changescope.encoders.dinov2`, the helpers shared with SAM 2 in :mod:`changescope.encoders.pretrained` (all
re-exported here), and the metadata in :mod:`changescope.encoders.catalog`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from changescope.encoders.base import Encoder
from changescope.encoders.catalog import DINOV2_B, DINOV2_S, DINOV2_TEST
from changescope.encoders.dinov2 import (
    BACKENDS,
    DEFAULT_BACKEND,
    DINOV2_ARCHS,
    Backend,
    DinoV2Arch,
    build_hf_dinov2,
    build_timm_dinov2,
    load_timm_dinov2,
    load_transformers_dinov2,
    locate_dinov2,
)
from changescope.encoders.meta import IMAGENET_MEAN, IMAGENET_STD, RGB_BANDS, RGB_STRETCH, EncoderMeta, Normalization
from changescope.encoders.pretrained import (
    NORMALIZATIONS,
    RGB_FIXED_GAIN,
    hf_model_dir,
    hub_revision,
    load_pretrained_folder,
    read_hf_config,
    resolve_normalization,
    seeded,
)
from changescope.encoders.weights import looks_like_repo_id as looks_like_repo
from changescope.errors import ParameterError

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DINOV2_ARCHS",
    "DINOV2_B",
    "DINOV2_S",
    "DINOV2_TEST",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "RGB_BANDS",
    "RGB_FIXED_GAIN",
    "RGB_STRETCH",
    "Backend",
    "DinoV2Arch",
    "DinoV2Encoder",
    "build_hf_dinov2",
    "build_timm_dinov2",
    "create_dinov2",
    "hf_model_dir",
    "hub_revision",
    "load_pretrained_folder",
    "looks_like_repo",
    "read_hf_config",
    "resolve_normalization",
    "seeded",
]


class DinoV2Encoder(Encoder):
    """A DINOv2 ViT behind the :class:`~changescope.encoders.base.Encoder` interface.

    :meth:`feature_map` maps ``(N, 3, H, W)`` (``H``, ``W`` multiples of 14) to the final-norm patch tokens
    ``(N, D, H / 14, W / 14)``; :meth:`encode` returns their mean ``(N, D)``.

    Attributes:
        meta: Registry metadata.
        model: The wrapped ``torch.nn.Module`` (timm ``VisionTransformer`` or transformers ``Dinov2Model``).
        backend: ``"timm"`` or ``"transformers"``.
        num_prefix_tokens: Class and register tokens in front of the patch tokens.
        weights_id: The loaded weights (path, ``repo@revision`` or ``"random"``).
    """

    def __init__(
        self,
        meta: EncoderMeta,
        model: nn.Module,
        backend: Backend,
        *,
        num_prefix_tokens: int,
        weights_id: str,
        device: str | torch.device = "cpu",
    ) -> None:
        self.meta = meta
        self.model = model.eval().requires_grad_(False)
        self.backend = backend
        self.num_prefix_tokens = num_prefix_tokens
        self.weights_id = weights_id
        self.to(device)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> DinoV2Encoder:
        """Move the model to ``device`` and return ``self``."""
        self.model.to(device)
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        model: Any = self.model
        with torch.inference_mode():
            if self.backend == "timm":
                out: torch.Tensor = model.forward_features(x)
            else:
                out = model(pixel_values=x).last_hidden_state
        return out

    def tokens(self, tiles: torch.Tensor) -> torch.Tensor:
        """All output tokens after the final norm.

        Args:
            tiles: ``(N, 3, H, W)`` normalised input, ``H`` and ``W`` multiples of 14.

        Returns:
            ``(N, P + H * W / 196, D)``: ``P`` = :attr:`num_prefix_tokens` class/register tokens, then the patch
            tokens in row-major order.

        Raises:
            ParameterError: Wrong shape or a side that is not a multiple of 14.
        """
        return self._forward(self.check_tiles(tiles))

    def feature_map(self, tiles: torch.Tensor) -> torch.Tensor:
        """Patch tokens as a dense map.

        Args:
            tiles: ``(N, 3, H, W)`` normalised input, ``H`` and ``W`` multiples of 14.

        Returns:
            ``(N, D, H / 14, W / 14)`` on the encoder's device.

        Raises:
            ParameterError: Wrong shape or a side that is not a multiple of 14.
        """
        x = self.check_tiles(tiles)
        n, _, h, w = x.shape
        p = self.patch_size
        patches = self._forward(x)[:, self.num_prefix_tokens :, :]
        return patches.transpose(1, 2).reshape(n, patches.shape[-1], h // p, w // p)


def create_dinov2(
    meta: EncoderMeta,
    weights: str | None = None,
    *,
    backend: Backend | None = None,
    normalization: Normalization | str | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> DinoV2Encoder:
    """Factory registered for ``dinov2_s``, ``dinov2_b`` and ``dinov2_test``.

    Args:
        meta: Registry metadata of the variant.
        weights: ``None`` (the default weights of the backend; random for ``dinov2_test``), ``"random"``, a state
            dict file or ``save_pretrained`` folder (the backend is detected), a Hugging Face repo id, or a weights tag.
        backend: ``"timm"`` or ``"transformers"``; ``None`` = detected from ``weights``, else ``"timm"``.
        normalization: Input normalisation replacing the metadata's (``"stretch"``, ``"fixed"`` or a
            :class:`~changescope.encoders.base.Normalization`); ``None`` keeps :data:`RGB_STRETCH`.
        device: Where the model runs.
        seed: Seed of the random initialisation (``weights="random"`` or ``dinov2_test`` without weights).

    Returns:
        The encoder, in eval mode.

    Raises:
        ParameterError: Unknown backend or normalisation, a backend that cannot read ``weights``, or weights of
            another size.
        WeightsNotFoundError: The weights are not local and cannot be downloaded (offline mode).
    """
    if backend is not None and backend not in BACKENDS:
        raise ParameterError(f"backend={backend!r} is unknown; choose one of {BACKENDS!r}")
    arch = DINOV2_ARCHS[meta.name]
    meta = resolve_normalization(meta, normalization)
    if weights == "random" or (weights is None and meta.weights.kind == "none"):
        chosen = backend or DEFAULT_BACKEND
        with seeded(seed):
            model = build_timm_dinov2(arch) if chosen == "timm" else build_hf_dinov2(arch)
        return DinoV2Encoder(meta, model, chosen, num_prefix_tokens=1, weights_id="random", device=device)
    chosen, path, ref = locate_dinov2(meta, arch, weights, backend)
    if chosen == "timm":
        model = load_timm_dinov2(meta, arch, path)
        n_prefix = int(getattr(model, "num_prefix_tokens", 1))
    else:
        model, n_prefix = load_transformers_dinov2(meta, path)
    weights_id = f"{ref}{hub_revision(path)}" if ref else str(path)
    return DinoV2Encoder(meta, model, chosen, num_prefix_tokens=n_prefix, weights_id=weights_id, device=device)
