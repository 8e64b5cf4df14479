"""Shared helpers of the DINOv2 and SAM 2 encoders: hub folders, configs, seeds, named RGB normalisations.

:func:`hf_model_dir` fetches a ``save_pretrained`` repo's two files through
:func:`~changescope.encoders.weights.resolve_weights` (so offline mode and the cache apply),
:func:`load_pretrained_folder` loads such a folder with transformers (safetensors only, no remote code),
:func:`resolve_normalization` applies a named or given RGB normalisation to a meta, and :func:`seeded` makes random
initialisation reproducible.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from changescope.encoders.meta import IMAGENET_REFLECTANCE, RGB_STRETCH, EncoderMeta, Normalization, WeightsSource
from changescope.encoders.weights import read_json_config, resolve_weights
from changescope.errors import CorruptFileError, ParameterError, WeightsNotFoundError

__all__ = [
    "NORMALIZATIONS",
    "RGB_FIXED_GAIN",
    "hf_model_dir",
    "hub_revision",
    "load_pretrained_folder",
    "read_hf_config",
    "resolve_normalization",
    "seeded",
]

RGB_FIXED_GAIN = IMAGENET_REFLECTANCE
"""Reflectance / 0.3 then ImageNet mean/std, folded into one mean/std in reflectance units (no per-tile stretch)."""
NORMALIZATIONS: dict[str, Normalization] = {"stretch": RGB_STRETCH, "fixed": RGB_FIXED_GAIN}
"""Named RGB normalisations accepted by ``normalization=``."""


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
    return read_json_config(folder / "config.json")


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
