"""The encoder registry: ``register_encoder``, ``create_encoder``, ``list_encoders``.

Families register a factory per name with :func:`register_encoder` in their own module; the built-in modules are
imported on first use, so importing :mod:`changescope` never imports torch. ``checkpoint:PATH`` names an encoder
changescope trained itself (see :mod:`changescope.encoders.checkpoint`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from changescope.encoders.base import Encoder, EncoderMeta
from changescope.errors import ParameterError

__all__ = ["CHECKPOINT_PREFIX", "create_encoder", "get_meta", "list_encoders", "register_encoder"]

CHECKPOINT_PREFIX = "checkpoint:"

_BUILTIN_MODULES = (
    "changescope.encoders.spectral",
    "changescope.encoders.timm_cnn",
    "changescope.encoders.vit",
    "changescope.encoders.sam2",
    "changescope.encoders.clay",
    "changescope.encoders.anysat",
)

Factory = Callable[..., Encoder]


@dataclass(frozen=True)
class _Entry:
    meta: EncoderMeta
    factory: Factory


_REGISTRY: dict[str, _Entry] = {}
_loaded = False


def register_encoder(meta: EncoderMeta) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(meta, weights=None, **kw) -> Encoder`` under ``meta.name``.

    Raises:
        ParameterError: The name is already registered.
    """

    def deco(factory: Factory) -> Factory:
        if meta.name in _REGISTRY:
            raise ParameterError(f"encoder {meta.name!r} is registered twice")
        _REGISTRY[meta.name] = _Entry(meta, factory)
        return factory

    return deco


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)


def list_encoders() -> list[str]:
    """Registered encoder names (``checkpoint:PATH`` is accepted too)."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_meta(name: str) -> EncoderMeta:
    """Metadata of a registered encoder.

    Raises:
        ParameterError: Unknown name.
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise ParameterError(f"encoder={name!r} is unknown; choose one of {list_encoders()!r} or 'checkpoint:PATH'")
    return _REGISTRY[name].meta


def create_encoder(name: str, weights: str | None = None, **kwargs: Any) -> Encoder:
    """Build an encoder by name.

    Args:
        name: A registered name (see :func:`list_encoders`) or ``checkpoint:PATH``.
        weights: Weights to load instead of the default source: a local file or folder, a Hugging Face repo id,
            ``"random"`` for random initialisation (tests, baselines), or a family-specific tag.
        **kwargs: Family options (e.g. ``device=``, ``bands=`` for band-adaptive encoders).

    Raises:
        ParameterError: Unknown name.
        WeightsNotFoundError: Weights are needed but cannot be found (offline, or a wrong path).
    """
    if name.startswith(CHECKPOINT_PREFIX):
        from changescope.encoders.checkpoint import load_checkpoint_encoder

        encoder: Encoder = load_checkpoint_encoder(name[len(CHECKPOINT_PREFIX) :], **kwargs)
        return encoder
    meta = get_meta(name)
    return _REGISTRY[name].factory(meta, weights=weights, **kwargs)
