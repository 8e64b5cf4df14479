"""The encoder registry: ``register_encoder``, ``create_encoder``, ``list_encoders``, ``get_meta``.

The built-in encoders are a declarative table (:data:`~changescope.encoders.catalog.BUILTIN_ENCODERS`: name ->
metadata + ``"module:function"`` factory), so listing and describing them imports neither torch nor any family
module; a family module is imported when one of its encoders is first built. Other encoders (plugins, the tiny test
encoders of :mod:`changescope.testing.encoders`) register a factory with :func:`register_encoder`.
``checkpoint:PATH`` names an encoder changescope trained itself (see :mod:`changescope.encoders.checkpoint`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from changescope.encoders.catalog import BUILTIN_ENCODERS
from changescope.encoders.meta import EncoderMeta
from changescope.errors import ParameterError

if TYPE_CHECKING:
    from changescope.encoders.base import Encoder

__all__ = ["CHECKPOINT_PREFIX", "create_encoder", "get_meta", "list_encoders", "register_encoder"]

CHECKPOINT_PREFIX = "checkpoint:"

Factory = Callable[..., "Encoder"]


@dataclass
class _Entry:
    """A registered name: its metadata and its factory (a callable, or ``"module:function"`` not imported yet)."""

    meta: EncoderMeta
    factory: Factory | str

    def load(self) -> Factory:
        """The factory, importing its module on first use."""
        if isinstance(self.factory, str):
            module, _, attr = self.factory.partition(":")
            factory: Factory = getattr(importlib.import_module(module), attr)
            self.factory = factory
            return factory
        return self.factory


_REGISTRY: dict[str, _Entry] = {name: _Entry(b.meta, b.factory) for name, b in BUILTIN_ENCODERS.items()}


def register_encoder(meta: EncoderMeta) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(meta, weights=None, **kw) -> Encoder`` under ``meta.name``.

    Args:
        meta: The encoder's metadata; ``meta.name`` is the registry name.

    Returns:
        A decorator that registers the factory and returns it unchanged.

    Raises:
        ParameterError: The name is already registered.
    """

    def deco(factory: Factory) -> Factory:
        if meta.name in _REGISTRY:
            raise ParameterError(f"encoder {meta.name!r} is registered twice")
        _REGISTRY[meta.name] = _Entry(meta, factory)
        return factory

    return deco


def list_encoders() -> list[str]:
    """Registered encoder names (``checkpoint:PATH`` is accepted too); torch is not imported."""
    return sorted(_REGISTRY)


def get_meta(name: str) -> EncoderMeta:
    """Metadata of a registered encoder; torch is not imported.

    Args:
        name: A registered name.

    Raises:
        ParameterError: Unknown name.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ParameterError(f"encoder={name!r} is unknown; choose one of {list_encoders()!r} or 'checkpoint:PATH'")
    return entry.meta


def create_encoder(name: str, weights: str | None = None, **kwargs: Any) -> Encoder:
    """Build an encoder by name.

    Args:
        name: A registered name (see :func:`list_encoders`) or ``checkpoint:PATH``.
        weights: Weights to load instead of the default source: a weights tag (see
            :func:`~changescope.encoders.tags.list_weights`), a local file or folder, a Hugging Face repo id,
            ``"random"`` for random initialisation (tests, baselines), or a family-specific ``scheme:value``
            (read by :func:`~changescope.encoders.weights.parse_weights`).
        **kwargs: Family options (e.g. ``device=``, ``bands=`` for band-adaptive encoders).

    Returns:
        The encoder, ready for inference.

    Raises:
        ParameterError: Unknown name or weights tag.
        WeightsNotFoundError: Weights are needed but cannot be found (offline, or a wrong path).
    """
    if name.startswith(CHECKPOINT_PREFIX):
        from changescope.encoders.checkpoint import load_checkpoint_encoder

        return load_checkpoint_encoder(name[len(CHECKPOINT_PREFIX) :], **kwargs)
    meta = get_meta(name)
    encoder: Encoder = _REGISTRY[name].load()(meta, weights=weights, **kwargs)
    return encoder
