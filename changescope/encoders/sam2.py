"""SAM 2.1's image encoder (Hiera + FPN neck) through Hugging Face transformers.

Registered names:
    ``sam2``: the SAM 2.1 Hiera base-plus image encoder, default weights ``facebook/sam2.1-hiera-base-plus``
    (``config.json`` + ``model.safetensors`` in the transformers format, from the Hugging Face hub cache).
    ``sam2_test``: a tiny random Hiera (8-64-d stages, 5 blocks) with the same neck and code path, for tests.

Dense embedding:
    The "image embeddings" SAM 2's mask decoder reads: the FPN neck's stride-16 level, 256 channels
    (``Sam2VisionModel(...).fpn_hidden_states[-1]``), plus the learned ``no_memory_embedding`` that the image
    predictor adds when the checkpoint holds one (a full ``Sam2Model`` / ``Sam2VideoModel``; a bare
    ``Sam2VisionModel`` has none). :meth:`Sam2Encoder.feature_map` returns it as ``(N, 256, H / 16, W / 16)``;
    :meth:`~changescope.encoders.base.Encoder.encode` is its spatial mean.

``weights=``:
    ``None`` (the default repo), a Hugging Face repo id, a local ``save_pretrained`` folder whose ``config.json``
    has ``model_type`` ``sam2``, ``sam2_video`` or ``sam2_vision_model`` (safetensors weights only), or
    ``"random"`` (seeded, ``seed=``). Only ``config.json`` and ``model.safetensors`` are fetched from a repo. The
    official ``sam2`` package's ``.pt`` checkpoints are not read: use the transformers-format ``facebook/sam2.1-*``
    repos, which transformers' own documentation loads with ``Sam2Model.from_pretrained``.

Input size:
    SAM 2's processor resizes every image to 1024 x 1024 and standardises with the ImageNet mean/std. Here tiles
    keep their resolution (``input_size`` 1024 is the preferred size, not a requirement) and use the same stretch
    + ImageNet normalisation as DINOv2 (see :mod:`changescope.encoders.vit`; ``normalization="fixed"`` works here
    too). Hiera tiles its windowed position embedding over the stride-4 token grid (window 8 in the first stage)
    and pools three times by 2, so the backbone itself needs sides that are multiples of 32
    (:attr:`Sam2Encoder.size_multiple`, computed from the config). The encoder accepts any multiple of the token
    stride 16: a side that is not a multiple of 32 is zero-padded (zero is the mean after normalisation) at the
    bottom/right to the next multiple, and the extra row/column of tokens is cropped away. Other sizes raise a
    :class:`~changescope.errors.ParameterError`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changescope.encoders.base import Encoder
from changescope.encoders.catalog import SAM2, SAM2_REPO, SAM2_TEST
from changescope.encoders.meta import EncoderMeta, Normalization
from changescope.encoders.pretrained import (
    hf_model_dir,
    hub_revision,
    load_pretrained_folder,
    read_hf_config,
    resolve_normalization,
    seeded,
)
from changescope.encoders.weights import parse_weights
from changescope.errors import ParameterError, WeightsNotFoundError

__all__ = [
    "SAM2",
    "SAM2_REPO",
    "SAM2_TEST",
    "Sam2Encoder",
    "base_plus_sam2_config",
    "create_sam2",
    "dense_stride",
    "size_multiple",
    "tiny_sam2_config",
]

_SAM2_TYPES = ("sam2", "sam2_video", "sam2_vision_model")


def base_plus_sam2_config() -> Any:
    """The ``Sam2Config`` of SAM 2.1 Hiera base-plus (for ``weights="random"`` without network access).

    Returns:
        A ``transformers.Sam2Config``.
    """
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    backbone = Sam2HieraDetConfig(
        hidden_size=112,
        num_attention_heads=2,
        blocks_per_stage=[2, 3, 16, 3],
        embed_dim_per_stage=[112, 224, 448, 896],
        num_attention_heads_per_stage=[2, 4, 8, 16],
        window_size_per_stage=[8, 4, 14, 7],
        global_attention_blocks=[12, 16, 20],
        window_positional_embedding_background_size=[14, 14],
    )
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[896, 448, 224, 112], fpn_hidden_size=256)
    return Sam2Config(vision_config=vision)


def tiny_sam2_config() -> Any:
    """A tiny ``Sam2Config`` (Hiera stages 8/16/32/64-d, 5 blocks; 256-d neck; small mask decoder) for tests.

    It keeps base-plus's windows (8, 4, 14, 7), a global block in stage 3, and the stride-16 256-d output.

    Returns:
        A ``transformers.Sam2Config``.
    """
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2VisionConfig

    backbone = Sam2HieraDetConfig(
        hidden_size=8,
        num_attention_heads=1,
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[8, 4, 14, 7],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4],
    )
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=256)
    decoder = Sam2MaskDecoderConfig(mlp_dim=64, num_hidden_layers=1, iou_head_hidden_dim=16)
    return Sam2Config(vision_config=vision, mask_decoder_config=decoder)


def _pair(value: Any) -> int:
    return int(value if isinstance(value, int) else value[0])


def dense_stride(vision_config: Any) -> int:
    """Pixels per token of the returned FPN level (16 for every released SAM 2 checkpoint).

    Args:
        vision_config: A ``Sam2VisionConfig``.
    """
    bb = vision_config.backbone_config
    stage = vision_config.num_feature_levels - 1
    stride: int = _pair(bb.patch_stride) * _pair(bb.query_stride) ** min(stage, int(bb.num_query_pool_stages))
    return stride


def size_multiple(vision_config: Any) -> int:
    """The side multiple the Hiera backbone needs: lcm(first-stage window, total stride) in pixels (32).

    Args:
        vision_config: A ``Sam2VisionConfig``.
    """
    bb = vision_config.backbone_config
    patch = _pair(bb.patch_stride)
    total = patch * _pair(bb.query_stride) ** bb.num_query_pool_stages
    return math.lcm(patch * int(bb.window_size_per_stage[0]), total)


class Sam2Encoder(Encoder):
    """SAM 2's image encoder behind the :class:`~changescope.encoders.base.Encoder` interface.

    :meth:`feature_map` maps ``(N, 3, H, W)`` (``H``, ``W`` multiples of 16) to ``(N, 256, H / 16, W / 16)``.

    Attributes:
        meta: Registry metadata.
        vision: The ``Sam2VisionModel`` (Hiera backbone + FPN neck).
        no_memory_embedding: ``(256,)`` vector added to every token, or ``None``.
        size_multiple: Side multiple the backbone needs; other multiples of 16 are padded to it.
        weights_id: The loaded weights (path, ``repo@revision`` or ``"random"``).
    """

    def __init__(
        self,
        meta: EncoderMeta,
        vision: nn.Module,
        no_memory_embedding: torch.Tensor | None,
        *,
        weights_id: str,
        device: str | torch.device = "cpu",
    ) -> None:
        config: Any = getattr(vision, "config", None)
        if config is None or getattr(config, "model_type", None) != "sam2_vision_model":
            raise ParameterError(f"encoder {meta.name!r} needs a Sam2VisionModel; got {type(vision).__name__}")
        if config.fpn_hidden_size != meta.embed_dim or dense_stride(config) != meta.patch_size:
            raise ParameterError(
                f"weights {weights_id!r} give {config.fpn_hidden_size}-d tokens every {dense_stride(config)} px but "
                f"encoder {meta.name!r} is {meta.embed_dim}-d every {meta.patch_size} px; use a SAM 2 checkpoint "
                "with the standard 256-d neck"
            )
        self.meta = meta
        self.vision = vision.eval().requires_grad_(False)
        self.no_memory_embedding = None if no_memory_embedding is None else no_memory_embedding.detach().reshape(-1)
        self.size_multiple = size_multiple(config)
        self.weights_id = weights_id
        self.to(device)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.vision.parameters()).device

    def to(self, device: str | torch.device) -> Sam2Encoder:
        """Move the model to ``device`` and return ``self``."""
        self.vision.to(device)
        if self.no_memory_embedding is not None:
            self.no_memory_embedding = self.no_memory_embedding.to(device)
        return self

    def feature_map(self, tiles: torch.Tensor) -> torch.Tensor:
        """SAM 2 image embeddings.

        Args:
            tiles: ``(N, 3, H, W)`` normalised input, ``H`` and ``W`` multiples of 16.

        Returns:
            ``(N, 256, H / 16, W / 16)`` on the encoder's device.

        Raises:
            ParameterError: Wrong shape or a side that is not a multiple of 16.
        """
        x = self.check_tiles(tiles)
        _, _, h, w = x.shape
        m = self.size_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        with torch.inference_mode():
            feats: torch.Tensor = self.vision(pixel_values=x).fpn_hidden_states[-1]
            if self.no_memory_embedding is not None:
                feats = feats + self.no_memory_embedding.view(1, -1, 1, 1)
        p = self.patch_size
        return feats[:, :, : h // p, : w // p]


def _folder(meta: EncoderMeta, weights: str | None) -> tuple[Path, str | None]:
    """The local ``save_pretrained`` folder for ``weights`` and the repo id it came from (``None``: a path)."""
    spec = parse_weights(weights, meta.name)
    if spec.kind in ("default", "tag", "repo"):
        repo = spec.tag.source.ref if spec.tag is not None else spec.ref or meta.weights.ref
        return hf_model_dir(repo, meta.name), repo
    if spec.kind == "path" and spec.path is not None:
        if spec.path.is_dir():
            return spec.path, None
        raise ParameterError(
            f"weights={weights!r} for encoder {meta.name!r} is a file; SAM 2 loads a transformers save_pretrained "
            f"folder (config.json + model.safetensors) or a hub repo id such as {SAM2_REPO!r}; the official "
            "sam2 package's .pt checkpoints are not read"
        )
    raise WeightsNotFoundError(
        f"weights={weights!r} for encoder {meta.name!r} does not exist; pass a save_pretrained folder, a Hugging "
        "Face repo id, a weights tag or 'random'"
    )


def create_sam2(
    meta: EncoderMeta,
    weights: str | None = None,
    *,
    normalization: Normalization | str | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Sam2Encoder:
    """Factory registered for ``sam2`` and ``sam2_test``.

    Args:
        meta: Registry metadata of the variant.
        weights: ``None`` (the default repo; random for ``sam2_test``), ``"random"``, a ``save_pretrained``
            folder, a Hugging Face repo id, or a weights tag (``sam2.hiera_base_plus``).
        normalization: Input normalisation replacing the metadata's (``"stretch"``, ``"fixed"`` or a
            :class:`~changescope.encoders.base.Normalization`, see :mod:`changescope.encoders.vit`).
        device: Where the model runs.
        seed: Seed of the random initialisation.

    Returns:
        The encoder, in eval mode.

    Raises:
        ParameterError: The folder holds another model type or a non-standard neck; unknown normalisation.
        WeightsNotFoundError: The weights are not local and cannot be downloaded (offline mode).
    """
    meta = resolve_normalization(meta, normalization)
    if weights == "random" or (weights is None and meta.weights.kind == "none"):
        from transformers import Sam2VisionModel

        config = tiny_sam2_config() if meta.name == "sam2_test" else base_plus_sam2_config()
        with seeded(seed):
            random_vision = Sam2VisionModel(config.vision_config)
        return Sam2Encoder(meta, random_vision, None, weights_id="random", device=device)
    folder, ref = _folder(meta, weights)
    model_type = read_hf_config(folder).get("model_type")
    if model_type not in _SAM2_TYPES:
        raise ParameterError(
            f"weights={str(folder)!r} hold model_type={model_type!r}, not SAM 2 (expected one of {_SAM2_TYPES!r}); "
            f"pass a SAM 2 checkpoint such as {SAM2_REPO!r}"
        )
    model = load_pretrained_folder(folder, meta.name)
    vision: nn.Module = getattr(model, "vision_encoder", model)
    no_mem = getattr(model, "no_memory_embedding", None)
    weights_id = f"{ref}{hub_revision(folder)}" if ref else str(folder)
    return Sam2Encoder(meta, vision, no_mem, weights_id=weights_id, device=device)
