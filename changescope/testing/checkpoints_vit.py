"""Tiny random checkpoints of the ViT-family encoders, in the formats real checkpoints come in.

- :func:`write_tiny_timm_dinov2`: a timm DINOv2-architecture state dict (``.safetensors`` or ``.pth``), as
  ``dinov2_test`` loads it with the timm backend.
- :func:`write_tiny_hf_dinov2`: a transformers ``Dinov2Model.save_pretrained`` folder (``config.json`` +
  ``model.safetensors``), loaded by ``dinov2_test`` with the transformers backend.
- :func:`write_tiny_hf_sam2`: a transformers ``Sam2Model`` (or ``Sam2VisionModel``) ``save_pretrained`` folder with a
  tiny Hiera backbone and the standard 256-d neck, loaded by ``sam2`` (or ``sam2_test``).
- :func:`install_in_hub_cache`: place such files in a Hugging Face hub cache as if downloaded, so the default
  weights paths (and offline mode) run for real without network.

Everything is seeded; the files are a few hundred kB (SAM 2: about 6 MB, most of it the mask decoder).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from changescope.encoders.sam2 import tiny_sam2_config
from changescope.encoders.vit import DINOV2_ARCHS, build_hf_dinov2, build_timm_dinov2, seeded
from changescope.errors import ParameterError

__all__ = ["install_in_hub_cache", "write_tiny_hf_dinov2", "write_tiny_hf_sam2", "write_tiny_timm_dinov2"]


def write_tiny_timm_dinov2(path: Path | str, seed: int = 1) -> Path:
    """Write the state dict of a tiny timm DINOv2 ViT (``dinov2_test`` architecture).

    Args:
        path: Target file; ``.safetensors`` is written with safetensors, ``.pth``/``.pt`` with ``torch.save``.
        seed: Seed of the random weights (``dinov2_test``'s own random initialisation uses seed 0).

    Returns:
        ``path``.

    Raises:
        ParameterError: Unsupported suffix.
    """
    path = Path(path)
    with seeded(seed):
        model = build_timm_dinov2(DINOV2_ARCHS["dinov2_test"])
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix in (".pth", ".pt"):
        torch.save(state, path)
    else:
        raise ParameterError(f"path={str(path)!r} must end in .safetensors, .pth or .pt")
    return path


def write_tiny_hf_dinov2(folder: Path | str, seed: int = 1) -> Path:
    """Write a tiny ``Dinov2Model`` with ``save_pretrained`` (``dinov2_test`` architecture, safetensors).

    Args:
        folder: Target folder (created).
        seed: Seed of the random weights.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    with seeded(seed):
        model: Any = build_hf_dinov2(DINOV2_ARCHS["dinov2_test"])
    model.save_pretrained(str(folder))
    return folder


def write_tiny_hf_sam2(folder: Path | str, seed: int = 1, *, vision_only: bool = False) -> Path:
    """Write a tiny SAM 2 model with ``save_pretrained`` (safetensors).

    Position embeddings and ``no_memory_embedding`` (zero-initialised by transformers) get random values so that
    loading them is observable.

    Args:
        folder: Target folder (created).
        seed: Seed of the random weights.
        vision_only: Write a bare ``Sam2VisionModel`` instead of a full ``Sam2Model``.

    Returns:
        ``folder``.
    """
    from transformers import Sam2Model, Sam2VisionModel

    folder = Path(folder)
    config = tiny_sam2_config()
    with seeded(seed), torch.no_grad():
        model = Sam2VisionModel(config.vision_config) if vision_only else Sam2Model(config)
        for name, param in model.named_parameters():
            if name.endswith(("pos_embed", "pos_embed_window", "no_memory_embedding")):
                param.normal_(std=0.02)
    model.save_pretrained(str(folder))
    return folder


def install_in_hub_cache(
    cache_dir: Path | str, repo: str, files: Mapping[str, Path | str], revision: str = "0" * 40
) -> Path:
    """Copy files into a Hugging Face hub cache (``HF_HUB_CACHE`` layout) as the ``main`` revision of ``repo``.

    Args:
        cache_dir: The hub cache folder (``$HF_HOME/hub``).
        repo: Model repo id ``owner/name``.
        files: File name in the repo -> local file to copy.
        revision: Commit hash to file them under.

    Returns:
        The snapshot folder.

    Raises:
        ParameterError: ``repo`` is not ``owner/name``.
    """
    if repo.count("/") != 1:
        raise ParameterError(f"repo={repo!r} must be a Hugging Face repo id 'owner/name'")
    root = Path(cache_dir) / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copyfile(src, snapshot / name)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return snapshot
