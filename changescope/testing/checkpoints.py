"""Tiny randomly initialised checkpoints in each weights source's real on-disk format.

Tests (ours and users') load them through the real loading code without any network. Everything is deterministic
for a given seed. Functions are grouped by encoder family; families add their own section.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from changescope.types import PathLike

__all__ = [
    "install_hf_cache_repo",
    "random_timm_model",
    "write_changescope_checkpoint",
    "write_hf_timm_repo",
    "write_timm_state_dict",
    "write_torchgeo_weights",
]


# --- timm CNNs (family "timm_cnn"): timm state dicts, Hugging Face timm repos and caches, torchgeo weights ---------


def random_timm_model(
    architecture: str = "resnet18", *, in_chans: int = 3, seed: int = 0, features_only: bool = False
) -> nn.Module:
    """A seeded, randomly initialised timm model with non-trivial BatchNorm statistics (eval mode).

    The global torch RNG is left untouched.
    """
    import timm

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: nn.Module = timm.create_model(
            architecture, pretrained=False, in_chans=in_chans, features_only=features_only
        )
    with torch.no_grad():
        for module in model.modules():
            if (
                isinstance(module, nn.BatchNorm2d)
                and module.running_mean is not None
                and module.running_var is not None
            ):
                module.running_mean.normal_(0.0, 0.1, generator=gen)
                module.running_var.uniform_(0.5, 1.5, generator=gen)
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0.0, 0.1, generator=gen)
    return model.eval()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def write_timm_state_dict(path: PathLike, architecture: str = "resnet18", *, in_chans: int = 3, seed: int = 0) -> Path:
    """Write a timm model's full state dict (classifier included), as timm and torchvision publish them.

    ``.safetensors`` paths get safetensors; any other suffix gets ``torch.save`` (a pickle of tensors only).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = _state(random_timm_model(architecture, in_chans=in_chans, seed=seed))
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out))
    else:
        torch.save(state, out)
    return out


def write_hf_timm_repo(folder: PathLike, architecture: str = "resnet18", *, in_chans: int = 3, seed: int = 0) -> Path:
    """Write a folder laid out like a Hugging Face hub timm repo (``config.json`` + ``model.safetensors``).

    It is written by timm's own :func:`timm.models.save_for_hf`, so ``timm.create_model("local-dir:FOLDER",
    pretrained=True)`` loads it too.
    """
    from timm.models import save_for_hf

    out = Path(folder)
    save_for_hf(random_timm_model(architecture, in_chans=in_chans, seed=seed), str(out), safe_serialization=True)
    return out


def install_hf_cache_repo(
    cache_dir: PathLike, repo_id: str, folder: PathLike, *, revision: str = "0123456789abcdef0123456789abcdef01234567"
) -> Path:
    """Copy ``folder``'s files into a Hugging Face hub cache as ``repo_id`` at ``revision`` (``refs/main``).

    ``huggingface_hub.hf_hub_download(repo_id, name, local_files_only=True, cache_dir=cache_dir)`` then finds them,
    as it would after a real download.

    Returns:
        The snapshot folder.
    """
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for file in Path(folder).iterdir():
        if file.is_file():
            (snapshot / file.name).write_bytes(file.read_bytes())
    return snapshot


def write_torchgeo_weights(
    path: PathLike, architecture: str = "resnet18", *, in_chans: int = 13, seed: int = 0
) -> Path:
    """Write weights as torchgeo publishes its ResNet weights: ``torch.save`` of a timm state dict without ``fc``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = _state(random_timm_model(architecture, in_chans=in_chans, seed=seed))
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, out)
    return out


# --- changescope's own checkpoints (checkpoint:PATH) ------------------------------------------------------------------


def write_changescope_checkpoint(
    path: PathLike,
    architecture: str = "resnet18",
    *,
    bands: Sequence[str] = ("blue", "green", "red", "nir"),
    stage: int = 3,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a changescope encoder checkpoint of a random timm backbone, as training would.

    The bands get their known wavelengths; normalisation is a per-band mean/std in reflectance.
    """
    from changescope.encoders.base import BandSpec, EncoderMeta, Normalization
    from changescope.encoders.checkpoint import save_checkpoint_encoder
    from changescope.encoders.timm_cnn import build_backbone, feature_stages
    from changescope.series import BandInfo

    model = random_timm_model(architecture, in_chans=len(bands), seed=seed)
    stride, channels = feature_stages(build_backbone(architecture, len(bands), stage))[-1]
    specs = tuple(BandSpec(b.name, b.wavelength) for b in (BandInfo.from_name(n) for n in bands))
    meta = EncoderMeta(
        name=f"test-{architecture}",
        family="timm_cnn",
        bands=specs,
        gsd=10.0,
        input_size=stride * 8,
        patch_size=stride,
        embed_dim=channels,
        normalization=Normalization("meanstd", mean=(0.1,) * len(bands), std=(0.05,) * len(bands)),
        licence="Apache-2.0",
        description=f"random {architecture} for tests",
    )
    info = {"trained_by": "changescope.testing", "seed": seed, **(extra or {})}
    return save_checkpoint_encoder(model, meta, path, architecture=f"timm:{architecture}", stage=stage, extra=info)
