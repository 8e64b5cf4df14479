"""Finding model weights: local paths, the Hugging Face hub cache, torch.hub, URLs; with an offline mode.

Offline mode (``CHANGESCOPE_OFFLINE=1``, or the hub's own ``HF_HUB_OFFLINE=1``) never touches the network: weights
must be a local path or already in the cache, else a :class:`~changescope.errors.WeightsNotFoundError` says which
weights are missing and how to provide them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from changescope.encoders.base import WeightsSource
from changescope.errors import CorruptFileError, MissingDependencyError, WeightsNotFoundError

__all__ = ["cache_dir", "is_offline", "load_state_dict", "resolve_weights"]


def is_offline() -> bool:
    """Whether network downloads are disabled (``CHANGESCOPE_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("CHANGESCOPE_OFFLINE", "HF_HUB_OFFLINE"))


def cache_dir() -> Path:
    """Where URL downloads are cached: ``$CHANGESCOPE_CACHE`` or ``~/.cache/changescope/weights``."""
    return Path(os.environ.get("CHANGESCOPE_CACHE", Path.home() / ".cache" / "changescope" / "weights"))


def _how(source: WeightsSource, name: str) -> str:
    where = source.ref + ("/" + source.filename if source.filename else "")
    return (
        f"weights for encoder {name!r} ({source.kind}: {where!r}) are not available; pass weights=PATH to a "
        "local copy (CLI: --weights PATH), or go online and unset CHANGESCOPE_OFFLINE/HF_HUB_OFFLINE "
        "so they can be downloaded to the cache once"
    )


def resolve_weights(source: WeightsSource, name: str, override: str | None = None) -> Path:
    """Return a local path holding the weights, downloading them into the cache when allowed.

    Args:
        source: The encoder's default weights source.
        name: Encoder name (named in errors).
        override: A local file/folder or a Hugging Face repo id given by the user instead of the default.

    Raises:
        WeightsNotFoundError: The weights are not local and cannot be downloaded.
    """
    if override is not None:
        path = Path(override).expanduser()
        if path.exists():
            return path
        if override.count("/") == 1 and not override.startswith((".", "/", "~")):
            source = WeightsSource("hf", override, source.filename if source.kind == "hf" else None)
        else:
            raise WeightsNotFoundError(f"weights={override!r} for encoder {name!r} does not exist; check the path")
    if source.kind == "local":
        path = Path(source.ref).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(_how(source, name))
        return path
    if source.kind in ("hf", "timm"):
        return _from_hf(source, name)
    if source.kind == "url":
        return _from_url(source, name)
    raise WeightsNotFoundError(_how(source, name))


def _from_hf(source: WeightsSource, name: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as err:  # pragma: no cover - a core dependency of timm/transformers
        raise MissingDependencyError("huggingface_hub is needed to fetch weights; pip install huggingface_hub") from err
    offline = is_offline()
    try:
        if source.filename:
            return Path(hf_hub_download(source.ref, source.filename, local_files_only=offline))
        return Path(snapshot_download(source.ref, local_files_only=offline))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        raise WeightsNotFoundError(_how(source, name)) from err


def _from_url(source: WeightsSource, name: str) -> Path:
    target = cache_dir() / (source.filename or Path(source.ref).name)
    if target.exists():
        return target
    if is_offline():
        raise WeightsNotFoundError(_how(source, name))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(source.ref, str(target), progress=False)
    except (OSError, ValueError) as err:
        raise WeightsNotFoundError(_how(source, name)) from err
    return target


def load_state_dict(path: Path) -> dict[str, Any]:
    """Load a state dict safely: safetensors, or ``torch.load(weights_only=True)`` (never arbitrary pickles).

    Lightning-style checkpoints (``{"state_dict": {...}}``) and ``{"model": {...}}`` wrappers are unwrapped.

    Raises:
        CorruptFileError: The file is not a loadable state dict.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise a variety of errors for bad files
        raise CorruptFileError(f"{str(path)!r} is not a loadable weights file ({err}); re-download it") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CorruptFileError(f"{str(path)!r} holds {type(sd).__name__}, not a state dict")
    return dict(sd)
