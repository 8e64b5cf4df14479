"""Vision encoders behind one interface, with metadata as data.

``create_encoder(name, weights=None, **kw)`` builds one; ``list_encoders()``, ``get_meta(name)`` and
``list_weights()`` list and describe them. Importing this package, listing and describing import neither torch nor
any encoder family: torch is imported when an encoder is built (or :class:`Encoder` is first used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from changescope.encoders.meta import BandSpec, EncoderMeta, Normalization, WeightsSource
from changescope.encoders.registry import create_encoder, get_meta, list_encoders, register_encoder
from changescope.encoders.tags import WeightsTag, get_weights_tag, list_weights

if TYPE_CHECKING:
    from changescope.encoders.base import Encoder

__all__ = [
    "BandSpec",
    "Encoder",
    "EncoderMeta",
    "Normalization",
    "WeightsSource",
    "WeightsTag",
    "create_encoder",
    "get_meta",
    "get_weights_tag",
    "list_encoders",
    "list_weights",
    "register_encoder",
]


def __getattr__(name: str) -> Any:
    """Load :class:`~changescope.encoders.base.Encoder` (and torch) on first use."""
    if name == "Encoder":
        from changescope.encoders.base import Encoder

        return Encoder
    raise AttributeError(f"module 'changescope.encoders' has no attribute {name!r}")
