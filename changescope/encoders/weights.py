"""Finding and checking model weights: one ``weights=`` parser, the caches, safe loading, one state-dict check.

Sources are local paths, the Hugging Face hub cache, torch.hub and URLs, with an offline mode.

``weights=`` (CLI ``--weights``) is read by :func:`parse_weights` for every encoder family: ``None`` (the encoder's
default), ``"random"``, a weights tag (``resnet18.sentinel2_all_moco``, see :mod:`changescope.encoders.tags`), an
existing file or folder, a Hugging Face repo id (``owner/name``, optionally ``hf-hub:owner/name``), or a
family-specific ``scheme:value`` (``torchgeo:ENUM``).

Offline mode (``CHANGESCOPE_OFFLINE=1``, or the hub's own ``HF_HUB_OFFLINE=1``) never touches the network: weights
must be a local path or already in the cache, else a :class:`~changescope.errors.WeightsNotFoundError` says which
weights are missing and how to provide them. torch is imported only when a file is downloaded or loaded.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from changescope.encoders.meta import WeightsSource
from changescope.encoders.tags import WEIGHTS_TAGS, WeightsTag, get_weights_tag, list_weights, looks_like_tag
from changescope.errors import (
    ChangescopeError,
    CorruptFileError,
    MissingDependencyError,
    ParameterError,
    WeightsNotFoundError,
)

__all__ = [
    "WEIGHT_FILE_SUFFIXES",
    "WeightsSpec",
    "cache_dir",
    "check_state_dict",
    "is_offline",
    "load_state_dict",
    "looks_like_repo_id",
    "parse_weights",
    "read_json_config",
    "resolve_weights",
]

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
"""Suffixes of weights files: a string ending in one is a path, never a repo id or a tag."""

SpecKind = Literal["default", "random", "tag", "scheme", "path", "repo", "missing"]


@dataclass(frozen=True)
class WeightsSpec:
    """What a ``weights=`` value means (see :func:`parse_weights`).

    Attributes:
        kind: ``"default"`` (the encoder's default source), ``"random"``, ``"tag"`` (a known weights tag),
            ``"scheme"`` (``scheme:value``), ``"path"`` (an existing file or folder), ``"repo"`` (a Hugging Face or
            GitHub ``owner/name``) or ``"missing"`` (none of these: a path that does not exist).
        ref: The value as given (for ``"scheme"``: the part after ``scheme:``; for ``"repo"``: without ``hf-hub:``).
        path: The expanded path (``"path"`` and ``"missing"``).
        tag: The tag (``"tag"``).
        scheme: The scheme (``"scheme"``).
    """

    kind: SpecKind
    ref: str = ""
    path: Path | None = None
    tag: WeightsTag | None = None
    scheme: str = ""


def looks_like_repo_id(ref: str) -> bool:
    """Whether ``ref`` reads as a repo id (``owner/name``) rather than a local path or a weights file name."""
    return (
        ref.count("/") == 1
        and not ref.startswith((".", "/", "~"))
        and not ref.endswith("/")
        and Path(ref).suffix not in WEIGHT_FILE_SUFFIXES
    )


def parse_weights(
    weights: str | os.PathLike[str] | None,
    encoder: str,
    *,
    schemes: Sequence[str] = (),
    default_aliases: Sequence[str] = (),
) -> WeightsSpec:
    """Read a ``weights=`` value, the one way every encoder family does.

    Tags are looked up first, then ``scheme:`` prefixes, then existing paths, then repo ids.

    Args:
        weights: The value given by the user.
        encoder: Registry name of the encoder (a tag must belong to it).
        schemes: Family-specific prefixes accepted as ``scheme:value`` (e.g. ``("torchgeo",)``).
        default_aliases: Strings meaning the default weights (e.g. ``("timm",)``).

    Returns:
        The parsed value; ``kind == "missing"`` leaves the error message to the family.

    Raises:
        ParameterError: An unknown tag (close matches are suggested) or a tag of another encoder.
    """
    if weights is None:
        return WeightsSpec("default")
    ref = os.fspath(weights)
    if ref in default_aliases:
        return WeightsSpec("default", ref)
    if ref == "random":
        return WeightsSpec("random", ref)
    if ref in WEIGHTS_TAGS:
        return WeightsSpec("tag", ref, tag=get_weights_tag(ref, encoder))
    if ref.startswith("hf-hub:"):
        return WeightsSpec("repo", ref.removeprefix("hf-hub:"))
    for scheme in schemes:
        if ref.startswith(f"{scheme}:"):
            return WeightsSpec("scheme", ref.removeprefix(f"{scheme}:"), scheme=scheme)
    path = Path(ref).expanduser()
    if path.exists():
        return WeightsSpec("path", ref, path=path)
    if looks_like_repo_id(ref):
        return WeightsSpec("repo", ref)
    if looks_like_tag(ref) and path.suffix not in WEIGHT_FILE_SUFFIXES:
        owners = {t.encoder for t in WEIGHTS_TAGS.values()}
        if ref.partition(".")[0] in owners or difflib.get_close_matches(ref, list_weights(), n=1, cutoff=0.8):
            get_weights_tag(ref, encoder)  # raises: an unknown tag, with close matches
    return WeightsSpec("missing", ref, path=path)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


def check_state_dict(
    expected: Mapping[str, Any],
    given: Mapping[str, Any],
    *,
    what: str,
    target: str,
    fix: str,
    error: type[ChangescopeError] = ParameterError,
    optional: Callable[[str], bool] | None = None,
    ignored: Callable[[str], bool] | None = None,
) -> None:
    """Check that ``given`` tensors fit a model whose own state dict is ``expected``; the one check every loader makes.

    Args:
        expected: The model's state dict (names and shapes are used).
        given: The tensors to load.
        what: Names the weights in the message (``"'path.pth'"``).
        target: Names the model in the message (``"encoder 'clay_test'"``).
        fix: What to do, ending the message.
        error: Exception class raised on mismatch.
        optional: Expected names that may be absent (e.g. BatchNorm counters).
        ignored: Extra given names that are not an error (e.g. a classifier the feature model drops).

    Raises:
        ChangescopeError: ``error`` listing the missing, unexpected and wrongly shaped tensors (first few of each).
    """
    missing = sorted(k for k in expected if k not in given and not (optional and optional(k)))
    unexpected = sorted(k for k in given if k not in expected and not (ignored and ignored(k)))
    wrong = sorted(k for k in expected if k in given and _shape(given[k]) != _shape(expected[k]))
    if not (missing or unexpected or wrong):
        return
    parts = [
        f"{label} {len(keys)} key(s) {keys[:4]!r}{' ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong))
        if keys
    ]
    if wrong:
        k = wrong[0]
        parts[-1] += f" ({k}: {_shape(given[k])} given, {_shape(expected[k])} expected)"
    raise error(f"weights {what} do not fit {target}: {'; '.join(parts)}; {fix}")


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
        override: A local file/folder, a Hugging Face repo id or a weights tag given by the user instead of the
            default (read by :func:`parse_weights`).

    Raises:
        WeightsNotFoundError: The weights are not local and cannot be downloaded.
    """
    if override is not None:
        spec = parse_weights(override, name)
        if spec.kind == "path" and spec.path is not None:
            return spec.path
        if spec.kind == "tag" and spec.tag is not None:
            source = spec.tag.source
        elif spec.kind == "repo":
            source = WeightsSource("hf", spec.ref, source.filename if source.kind == "hf" else None)
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
    import torch

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
            import pickle
            import warnings

            import torch

            with warnings.catch_warnings():  # torch warns about old pickle protocols; the file is checked below
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", FutureWarning)
                try:
                    sd = torch.load(path, map_location="cpu", weights_only=True)
                except pickle.UnpicklingError:
                    raise CorruptFileError(
                        f"{str(path)!r} holds Python objects besides tensors, which changescope never unpickles; "
                        "save a plain state dict (or safetensors) and pass that"
                    ) from None
    except CorruptFileError:
        raise
    except Exception as err:  # safetensors and torch raise a variety of errors for bad files
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CorruptFileError(f"{str(path)!r} is not a loadable weights file ({reason}); re-download it") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CorruptFileError(f"{str(path)!r} holds {type(sd).__name__}, not a state dict")
    return dict(sd)


def read_json_config(path: Path | None) -> dict[str, Any]:
    """The JSON object in ``path`` (a hub ``config.json``); ``{}`` when there is no such file or it is not an object.

    Raises:
        CorruptFileError: The file is not valid JSON.
    """
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{str(path)!r} is not valid JSON ({err}); re-save or re-download it") from err
    return data if isinstance(data, dict) else {}
