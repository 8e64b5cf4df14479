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
    ``weights="random"`` gives a seeded random initialisation (``seed=``).

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

This module also holds the helpers the SAM2 encoder shares (RGB metadata, :func:`seeded`, :func:`hf_model_dir`,
:func:`hub_revision`, :func:`read_hf_config`, :func:`load_pretrained_folder`, :func:`looks_like_repo`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from changescope.encoders.base import BandSpec, Encoder, EncoderMeta, Normalization, WeightsSource
from changescope.encoders.registry import register_encoder
from changescope.encoders.weights import load_state_dict, resolve_weights
from changescope.errors import CorruptFileError, ParameterError, WeightsNotFoundError

__all__ = [
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
    "resolve_normalization",
    "read_hf_config",
    "seeded",
]

Backend = Literal["timm", "transformers"]
BACKENDS: tuple[Backend, ...] = ("timm", "transformers")
DEFAULT_BACKEND: Backend = "timm"
"""Backend used when neither ``backend=`` nor a ``weights=`` path decides it."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RGB_BANDS = (BandSpec("red", 0.665), BandSpec("green", 0.560), BandSpec("blue", 0.490))
"""Red, green, blue with Sentinel-2 B04/B03/B02 centre wavelengths (micrometres), in model input order."""
RGB_STRETCH = Normalization(kind="stretch", mean=IMAGENET_MEAN, std=IMAGENET_STD, low=2.0, high=98.0)
"""Per-tile, per-band 2-98 % stretch to 0-1, then ImageNet mean/std (see the module docstring)."""
_GAIN_RANGE = 0.3
RGB_FIXED_GAIN = Normalization(
    kind="meanstd",
    mean=tuple(m * _GAIN_RANGE for m in IMAGENET_MEAN),
    std=tuple(sd * _GAIN_RANGE for sd in IMAGENET_STD),
)
"""Reflectance / 0.3 then ImageNet mean/std, folded into one mean/std in reflectance units (no per-tile stretch)."""
NORMALIZATIONS: dict[str, Normalization] = {"stretch": RGB_STRETCH, "fixed": RGB_FIXED_GAIN}
"""Named RGB normalisations accepted by ``normalization=``."""

_STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
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


# ----------------------------------------------------------------------------------------------- shared helpers


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block and restore the global state afterwards.

    Args:
        seed: Seed for random initialisation.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def hub_revision(path: Path) -> str:
    """``"@<commit>"`` when ``path`` (a file or folder) lies in a Hugging Face hub cache snapshot, else ``""``."""
    parent = path if path.is_dir() else path.parent
    return f"@{parent.name}" if parent.parent.name == "snapshots" else ""


def hf_model_dir(repo: str, name: str) -> Path:
    """Fetch (or find in the hub cache) a ``save_pretrained`` repo's ``config.json`` and ``model.safetensors``.

    Only these two files are downloaded (repos often hold duplicate ``.bin``/``.pt`` copies as well).

    Args:
        repo: Hugging Face repo id.
        name: Encoder name, for error messages.

    Returns:
        The snapshot folder holding both files.

    Raises:
        WeightsNotFoundError: Offline with an empty cache, or the repo lacks these files.
    """
    config = resolve_weights(WeightsSource("hf", repo, "config.json"), name)
    resolve_weights(WeightsSource("hf", repo, "model.safetensors"), name)
    return config.parent


def read_hf_config(folder: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a ``save_pretrained`` folder (``{}`` when there is none).

    Raises:
        CorruptFileError: ``config.json`` is not valid JSON.
    """
    cfg = folder / "config.json"
    if not cfg.is_file():
        return {}
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{str(cfg)!r} is not valid JSON ({err}); re-save or re-download it") from err
    return data if isinstance(data, dict) else {}


def load_pretrained_folder(folder: Path, name: str) -> nn.Module:
    """``AutoModel.from_pretrained`` on a local folder: safetensors only, no network, no remote code.

    Args:
        folder: A ``save_pretrained`` folder.
        name: Encoder name, for error messages.

    Raises:
        WeightsNotFoundError: The folder has no ``.safetensors`` weights.
        CorruptFileError: transformers cannot load the folder.
    """
    if not any(folder.glob("*.safetensors")):
        raise WeightsNotFoundError(
            f"weights={str(folder)!r} for encoder {name!r} has no .safetensors file; only safetensors weights are "
            "loaded from folders: re-save with model.save_pretrained(folder) (safetensors is the default)"
        )
    from transformers import AutoModel

    try:
        model: nn.Module = AutoModel.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, weights_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise CorruptFileError(f"weights={str(folder)!r} for encoder {name!r} cannot be loaded: {err}") from err
    return model


def resolve_normalization(meta: EncoderMeta, normalization: Normalization | str | None) -> EncoderMeta:
    """``meta`` with its normalisation replaced (``None`` keeps it).

    Args:
        meta: Registry metadata.
        normalization: A :class:`~changescope.encoders.base.Normalization`, a name in :data:`NORMALIZATIONS`, or
            ``None``.

    Raises:
        ParameterError: Unknown name, or per-band statistics that are not 3 long.
    """
    if normalization is None:
        return meta
    if isinstance(normalization, str):
        if normalization not in NORMALIZATIONS:
            raise ParameterError(
                f"normalization={normalization!r} is unknown for encoder {meta.name!r}; choose one of "
                f"{sorted(NORMALIZATIONS)!r} or pass a changescope.encoders.Normalization"
            )
        normalization = NORMALIZATIONS[normalization]
    if normalization.mean and (len(normalization.mean) != meta.in_chans or len(normalization.std) != meta.in_chans):
        raise ParameterError(
            f"normalization for encoder {meta.name!r} has {len(normalization.mean)} means and "
            f"{len(normalization.std)} stds; give one per band ({meta.in_chans}: red, green, blue)"
        )
    return dataclasses.replace(meta, normalization=normalization)


def looks_like_repo(ref: str) -> bool:
    """Whether ``ref`` reads as a Hugging Face repo id (``owner/name``) rather than a local path."""
    return ref.count("/") == 1 and not ref.startswith((".", "/", "~"))


# ------------------------------------------------------------------------------------------------- model builders


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


# -------------------------------------------------------------------------------------------------------- encoder


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


# ------------------------------------------------------------------------------------------------------- loading


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
    if path.suffix in _STATE_DICT_SUFFIXES:
        return "timm", path
    raise ParameterError(
        f"weights={str(path)!r} is not a DINOv2 checkpoint: pass a save_pretrained folder or a state dict file "
        f"ending in one of {_STATE_DICT_SUFFIXES!r}"
    )


def _locate(
    meta: EncoderMeta, arch: DinoV2Arch, weights: str | None, backend: Backend | None
) -> tuple[Backend, Path, str | None]:
    """Resolve ``weights`` (``None`` = the default of ``backend``) to a backend, a local path and a repo id."""
    if weights is None:
        chosen = backend or DEFAULT_BACKEND
        if chosen == "timm" and arch.timm_repo:
            src = WeightsSource("timm", arch.timm_repo, "model.safetensors")
            return "timm", resolve_weights(src, meta.name), arch.timm_repo
        if chosen == "transformers" and arch.hf_repo:
            return "transformers", hf_model_dir(arch.hf_repo, meta.name), arch.hf_repo
        raise WeightsNotFoundError(f"encoder {meta.name!r} has no default weights; pass weights=PATH or 'random'")
    path = Path(weights).expanduser()
    if not path.exists():
        if not looks_like_repo(weights):
            raise WeightsNotFoundError(
                f"weights={weights!r} for encoder {meta.name!r} does not exist; pass an existing state dict file "
                "(.safetensors/.pth), a save_pretrained folder, a Hugging Face repo id or 'random'"
            )
        chosen = backend or ("timm" if weights.startswith("timm/") else "transformers")
        if chosen == "timm":
            return "timm", resolve_weights(WeightsSource("hf", weights, "model.safetensors"), meta.name), weights
        return "transformers", hf_model_dir(weights, meta.name), weights
    detected, target = _detect(path)
    if backend is not None and backend != detected:
        raise ParameterError(
            f"backend={backend!r} cannot load weights={weights!r}, which is a {detected} checkpoint; "
            f"pass backend={detected!r} or leave backend unset"
        )
    return detected, target, None


def _load_timm(meta: EncoderMeta, arch: DinoV2Arch, file: Path) -> nn.Module:
    from timm.models.vision_transformer import checkpoint_filter_fn

    model = build_timm_dinov2(arch)
    state = checkpoint_filter_fn(load_state_dict(file), model)  # type: ignore[arg-type]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ParameterError(
            f"weights={str(file)!r} do not fit encoder {meta.name!r} ({arch.embed_dim}-d, {arch.depth} blocks): "
            f"{str(err).splitlines()[0]} ...; choose the encoder matching the checkpoint (dinov2_s: ViT-S/14, "
            "dinov2_b: ViT-B/14)"
        ) from err
    return model


def _load_transformers(meta: EncoderMeta, folder: Path) -> tuple[nn.Module, int]:
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
            dict file or ``save_pretrained`` folder (the backend is detected), or a Hugging Face repo id.
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
    chosen, path, ref = _locate(meta, arch, weights, backend)
    if chosen == "timm":
        model = _load_timm(meta, arch, path)
        n_prefix = int(getattr(model, "num_prefix_tokens", 1))
    else:
        model, n_prefix = _load_transformers(meta, path)
    weights_id = f"{ref}{hub_revision(path)}" if ref else str(path)
    return DinoV2Encoder(meta, model, chosen, num_prefix_tokens=n_prefix, weights_id=weights_id, device=device)


def _meta(name: str, embed_dim: int, weights: WeightsSource, input_size: int, description: str) -> EncoderMeta:
    return EncoderMeta(
        name=name,
        family="vit",
        bands=RGB_BANDS,
        gsd=None,
        input_size=input_size,
        patch_size=14,
        embed_dim=embed_dim,
        normalization=RGB_STRETCH,
        weights=weights,
        licence="Apache-2.0",
        description=description,
    )


DINOV2_S = _meta(
    "dinov2_s",
    384,
    WeightsSource("timm", "timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors"),
    224,
    "DINOv2 ViT-S/14 (LVD-142M), RGB, 14 px tokens, 384-d; backend timm (default) or transformers",
)
DINOV2_B = _meta(
    "dinov2_b",
    768,
    WeightsSource("timm", "timm/vit_base_patch14_dinov2.lvd142m", "model.safetensors"),
    224,
    "DINOv2 ViT-B/14 (LVD-142M), RGB, 14 px tokens, 768-d; backend timm (default) or transformers",
)
DINOV2_TEST = _meta(
    "dinov2_test", 32, WeightsSource("none"), 56, "tiny random DINOv2-architecture ViT (2 blocks, 32-d) for tests"
)

for _m in (DINOV2_S, DINOV2_B, DINOV2_TEST):
    register_encoder(_m)(create_dinov2)
