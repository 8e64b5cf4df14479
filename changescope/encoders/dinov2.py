"""DINOv2 architectures and loading for both backends (timm and Hugging Face transformers).

:data:`DINOV2_ARCHS` describes each registered variant; :func:`build_timm_dinov2` / :func:`build_hf_dinov2` build it
randomly initialised; :func:`locate_dinov2` reads ``weights=`` (through
:func:`~changescope.encoders.weights.parse_weights`) into a backend and a local file or folder, and
:func:`load_timm_dinov2` / :func:`load_transformers_dinov2` load it strictly. The encoder class is in
:mod:`changescope.encoders.vit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from changescope.encoders.meta import EncoderMeta, WeightsSource
from changescope.encoders.pretrained import hf_model_dir, load_pretrained_folder, read_hf_config
from changescope.encoders.weights import (
    WEIGHT_FILE_SUFFIXES,
    check_state_dict,
    load_state_dict,
    parse_weights,
    resolve_weights,
)
from changescope.errors import ParameterError, WeightsNotFoundError

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DINOV2_ARCHS",
    "Backend",
    "DinoV2Arch",
    "build_hf_dinov2",
    "build_timm_dinov2",
    "load_timm_dinov2",
    "load_transformers_dinov2",
    "locate_dinov2",
]

Backend = Literal["timm", "transformers"]
BACKENDS: tuple[Backend, ...] = ("timm", "transformers")
DEFAULT_BACKEND: Backend = "timm"
"""Backend used when neither ``backend=`` nor a ``weights=`` path decides it."""

_HF_DINOV2_TYPES = ("dinov2", "dinov2_with_registers")


@dataclass(frozen=True)
class DinoV2Arch:
    """Architecture of a registered DINOv2 variant, shared by both backends.

    Attributes:
        timm_model: timm model name (its defaults are overridden by the fields below).
        embed_dim: Token dimension ``D``.
        depth: Number of transformer blocks.
        num_heads: Attention heads.
        img_size: Side of the position-embedding grid in pixels (518 for the released checkpoints).
        timm_repo: Hugging Face repo of the default timm weights (``None``: random weights only).
        hf_repo: Hugging Face repo of the default transformers weights (``None``: random weights only).
    """

    timm_model: str
    embed_dim: int
    depth: int
    num_heads: int
    img_size: int
    timm_repo: str | None = None
    hf_repo: str | None = None


DINOV2_ARCHS: dict[str, DinoV2Arch] = {
    "dinov2_s": DinoV2Arch(
        "vit_small_patch14_dinov2", 384, 12, 6, 518, "timm/vit_small_patch14_dinov2.lvd142m", "facebook/dinov2-small"
    ),
    "dinov2_b": DinoV2Arch(
        "vit_base_patch14_dinov2", 768, 12, 12, 518, "timm/vit_base_patch14_dinov2.lvd142m", "facebook/dinov2-base"
    ),
    "dinov2_test": DinoV2Arch("vit_small_patch14_dinov2", 32, 2, 2, 56),
}
"""Architectures of the registered DINOv2 encoders, by registry name."""


def build_timm_dinov2(arch: DinoV2Arch) -> nn.Module:
    """A randomly initialised timm DINOv2 ViT with dynamic image size and no classifier head.

    Args:
        arch: The architecture.

    Returns:
        A timm ``VisionTransformer``; ``forward_features`` maps ``(N, 3, H, W)`` to ``(N, 1 + HW / 196, D)``.
    """
    import timm

    model: nn.Module = timm.create_model(
        arch.timm_model,
        pretrained=False,
        num_classes=0,
        dynamic_img_size=True,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        img_size=arch.img_size,
    )
    return model


def build_hf_dinov2(arch: DinoV2Arch) -> nn.Module:
    """A randomly initialised transformers ``Dinov2Model`` of the same architecture.

    Args:
        arch: The architecture.

    Returns:
        A ``Dinov2Model``; ``last_hidden_state`` is ``(N, 1 + HW / 196, D)``.
    """
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=arch.embed_dim,
        num_hidden_layers=arch.depth,
        num_attention_heads=arch.num_heads,
        image_size=arch.img_size,
        patch_size=14,
        layerscale_value=1e-5,
    )
    return Dinov2Model(config)


def _detect(path: Path) -> tuple[Backend, Path]:
    """Which backend reads ``path``, and the file or folder it loads."""
    if path.is_dir():
        cfg = read_hf_config(path)
        if cfg.get("model_type") in _HF_DINOV2_TYPES:
            return "transformers", path
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if (path / fname).is_file() and "model_type" not in cfg:
                return "timm", path / fname
        raise ParameterError(
            f"weights={str(path)!r} is not a DINOv2 checkpoint folder: expected a config.json with model_type "
            f"in {_HF_DINOV2_TYPES!r} (transformers save_pretrained) or a timm hub folder with model.safetensors; "
            f"found model_type={cfg.get('model_type')!r}"
        )
    if path.suffix in WEIGHT_FILE_SUFFIXES:
        return "timm", path
    raise ParameterError(
        f"weights={str(path)!r} is not a DINOv2 checkpoint: pass a save_pretrained folder or a state dict file "
        f"ending in one of {WEIGHT_FILE_SUFFIXES!r}"
    )


def locate_dinov2(
    meta: EncoderMeta, arch: DinoV2Arch, weights: str | None, backend: Backend | None
) -> tuple[Backend, Path, str | None]:
    """Resolve ``weights`` to a backend, a local file or folder, and the repo id it came from.

    Args:
        meta: Registry metadata of the variant.
        arch: Its architecture.
        weights: ``None`` (the default of ``backend``), a weights tag, a path, or a Hugging Face repo id.
        backend: The backend asked for (``None``: decided by ``weights``).

    Raises:
        WeightsNotFoundError: No default weights, a missing path, or weights not local and offline.
        ParameterError: An unknown tag, or a backend that cannot read the checkpoint.
    """
    spec = parse_weights(weights, meta.name)
    repo: str | None = None
    if spec.kind == "default":
        chosen = backend or DEFAULT_BACKEND
        repo = arch.timm_repo if chosen == "timm" else arch.hf_repo
        if not repo:
            raise WeightsNotFoundError(f"encoder {meta.name!r} has no default weights; pass weights=PATH or 'random'")
    elif spec.kind == "tag" and spec.tag is not None:
        repo = spec.tag.source.ref
        chosen = backend or ("timm" if spec.tag.source.kind == "timm" else "transformers")
    elif spec.kind == "repo":
        repo = spec.ref
        chosen = backend or ("timm" if repo.startswith("timm/") else "transformers")
    if repo is not None:
        if chosen == "timm":
            return "timm", resolve_weights(WeightsSource("hf", repo, "model.safetensors"), meta.name), repo
        return "transformers", hf_model_dir(repo, meta.name), repo
    if spec.kind != "path" or spec.path is None:
        raise WeightsNotFoundError(
            f"weights={weights!r} for encoder {meta.name!r} does not exist; pass an existing state dict file "
            "(.safetensors/.pth), a save_pretrained folder, a Hugging Face repo id, a weights tag or 'random'"
        )
    detected, target = _detect(spec.path)
    if backend is not None and backend != detected:
        raise ParameterError(
            f"backend={backend!r} cannot load weights={weights!r}, which is a {detected} checkpoint; "
            f"pass backend={detected!r} or leave backend unset"
        )
    return detected, target, None


def load_timm_dinov2(meta: EncoderMeta, arch: DinoV2Arch, file: Path) -> nn.Module:
    """A timm DINOv2 ViT of ``arch`` with the weights of ``file`` (timm or original key names), loaded strictly.

    Raises:
        ParameterError: The tensors do not fit the architecture.
        CorruptFileError: The file cannot be read.
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    model = build_timm_dinov2(arch)
    state = checkpoint_filter_fn(load_state_dict(file), model)  # type: ignore[arg-type]
    check_state_dict(
        model.state_dict(),
        state,
        what=repr(str(file)),
        target=f"encoder {meta.name!r} ({arch.embed_dim}-d, {arch.depth} blocks)",
        fix="choose the encoder matching the checkpoint (dinov2_s: ViT-S/14, dinov2_b: ViT-B/14)",
    )
    model.load_state_dict(state, strict=True)
    return model


def load_transformers_dinov2(meta: EncoderMeta, folder: Path) -> tuple[nn.Module, int]:
    """A transformers ``Dinov2Model`` from a ``save_pretrained`` folder, and its number of prefix tokens.

    Raises:
        ParameterError: Not a DINOv2 model, or one of another size than ``meta``.
    """
    model = load_pretrained_folder(folder, meta.name)
    config: Any = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in _HF_DINOV2_TYPES:
        raise ParameterError(f"weights={str(folder)!r} is not a DINOv2 model; found {type(model).__name__}")
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    if config.hidden_size != meta.embed_dim or patch != meta.patch_size:
        raise ParameterError(
            f"weights={str(folder)!r} hold a {config.hidden_size}-d ViT with {patch} px patches but encoder "
            f"{meta.name!r} is {meta.embed_dim}-d with {meta.patch_size} px patches; choose the encoder matching "
            "the checkpoint (dinov2_s: 384-d, dinov2_b: 768-d)"
        )
    return model, 1 + int(getattr(config, "num_register_tokens", 0))
