"""Files of a training run: per-epoch training states and encoders, the history, the resolved configuration.

Layout of a run folder ``OUT``::

    OUT/
      checkpoints/state_0007.pt            full training state after epoch 7 (the last 2 are kept)
      checkpoints/encoder_0007.safetensors the query backbone after epoch 7, a changescope encoder checkpoint
      ratios/epoch_0007.png                CACo: histogram of the change ratios after epoch 7
      history.json                         one record per epoch: loss, learning rate, changed fraction, seconds
      config.yaml                          the resolved configuration
      encoder.safetensors                  the final encoder (a copy of the last epoch's)

A training state is a plain dict of tensors, numbers, strings, lists and dicts, written with ``torch.save`` and read
with ``torch.load(weights_only=True)`` (no pickled code). Every file is written atomically.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from changescope.encoders.base import Normalization
from changescope.errors import CorruptFileError, ParameterError
from changescope.io.writers import atomic_path
from changescope.types import PathLike

__all__ = [
    "KEEP_STATES",
    "STATE_VERSION",
    "config_differences",
    "copy_atomic",
    "encoder_path",
    "has_checkpoints",
    "list_states",
    "load_state",
    "normalization_from_state",
    "normalization_to_state",
    "prune_states",
    "save_state",
    "state_path",
    "write_config",
    "write_json",
    "write_text",
]

STATE_VERSION = 1
"""Version of the training state layout; a state of another version is refused on resume."""
KEEP_STATES = 2
"""Training states kept in ``checkpoints/`` (older ones are deleted after each epoch)."""
_STATE_RE = re.compile(r"^state_(\d+)\.pt$")
_ENCODER_RE = re.compile(r"^encoder_(\d+)\.safetensors$")


def state_path(out: PathLike, epoch: int) -> Path:
    """``OUT/checkpoints/state_EEEE.pt``."""
    return Path(out) / "checkpoints" / f"state_{epoch:04d}.pt"


def encoder_path(out: PathLike, epoch: int) -> Path:
    """``OUT/checkpoints/encoder_EEEE.safetensors``."""
    return Path(out) / "checkpoints" / f"encoder_{epoch:04d}.safetensors"


def _numbered(out: PathLike, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name)) is not None]
    return sorted(found)


def list_states(out: PathLike) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the training states in ``OUT/checkpoints``, oldest first."""
    return _numbered(out, _STATE_RE)


def has_checkpoints(out: PathLike) -> bool:
    """Whether ``OUT/checkpoints`` holds a training state or an epoch encoder."""
    return bool(list_states(out) or _numbered(out, _ENCODER_RE))


def save_state(state: Mapping[str, Any], path: PathLike) -> Path:
    """Write a training state with ``torch.save``, atomically.

    Args:
        state: Tensors, numbers, strings, ``None`` and lists/dicts of them (what ``weights_only`` loading accepts).
        path: Output file; parent folders are created.

    Returns:
        The path written.
    """
    out = Path(path)
    with atomic_path(out) as tmp:
        torch.save(dict(state), tmp)
    return out


def load_state(path: PathLike) -> dict[str, Any]:
    """Read a training state written by :func:`save_state` onto the CPU, without unpickling code.

    Raises:
        CorruptFileError: The file is not a readable training state of :data:`STATE_VERSION`.
    """
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for damaged or foreign files
        raise CorruptFileError(
            f"{str(p)!r} is not a readable training state ({err}); delete it to resume from the previous one"
        ) from err
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        version = state.get("version") if isinstance(state, dict) else None
        raise CorruptFileError(
            f"{str(p)!r} is a training state of version {version!r}, not {STATE_VERSION}; it was written by another "
            "changescope version: start a new run in another out folder"
        )
    return state


def prune_states(out: PathLike, keep: int = KEEP_STATES) -> None:
    """Delete all but the newest ``keep`` training states."""
    for _, path in list_states(out)[:-keep] if keep > 0 else list_states(out):
        path.unlink(missing_ok=True)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def config_differences(
    stored: Mapping[str, Any], current: Mapping[str, Any], *, ignore: frozenset[str] = frozenset()
) -> list[str]:
    """Describe the fields that differ between two configuration dicts, as ``"path: run had X, now Y"``.

    Args:
        stored: The configuration a run was started with (JSON-like, nested by section).
        current: The configuration given now.
        ignore: Dotted field paths that may differ (``"optim.epochs"``).

    Returns:
        One line per differing field, sorted by path; empty when they agree.
    """
    old, new = _flatten(stored), _flatten(current)
    missing = object()
    return [
        f"{name}: run had {old.get(name)!r}, now {new.get(name)!r}"
        for name in sorted(set(old) | set(new))
        if name not in ignore and old.get(name, missing) != new.get(name, missing)
    ]


def normalization_to_state(norm: Normalization) -> dict[str, Any]:
    """The mean/std of a normalisation as plain lists (for a training state)."""
    return {"kind": norm.kind, "mean": [float(v) for v in norm.mean], "std": [float(v) for v in norm.std]}


def normalization_from_state(data: Mapping[str, Any]) -> Normalization:
    """Inverse of :func:`normalization_to_state`.

    Raises:
        ParameterError: The entry is malformed.
    """
    try:
        return Normalization(
            kind=data["kind"],
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ParameterError(f"the training state's normalisation {dict(data)!r} is malformed ({err})") from err


def write_json(obj: Any, path: PathLike) -> Path:
    """Write ``obj`` as indented JSON, atomically (non-finite floats are refused)."""
    return write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", path)


def write_config(config: Mapping[str, Any], path: PathLike) -> Path:
    """Write a configuration dict as YAML (in field order, loadable by ``load_config``), atomically."""
    import yaml

    header = "# resolved configuration of this run (changescope train ssl --config THIS_FILE)\n"
    return write_text(header + yaml.safe_dump(dict(config), sort_keys=False), path)


def write_text(text: str, path: PathLike) -> Path:
    """Write UTF-8 text, atomically."""
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


def copy_atomic(src: PathLike, dst: PathLike) -> Path:
    """Copy a file onto ``dst`` atomically (readers never see a partial file)."""
    out = Path(dst)
    with atomic_path(out) as tmp:
        shutil.copyfile(src, tmp)
    return out
