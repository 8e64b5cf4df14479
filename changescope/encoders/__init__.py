"""Vision encoders behind one interface, with metadata as data.

``create_encoder(name, weights=None, **kw)`` builds one; ``list_encoders()`` lists the names. Importing this package
imports torch, so :mod:`changescope` itself imports it only where needed.
"""

from changescope.encoders.base import BandSpec, Encoder, EncoderMeta, Normalization, WeightsSource
from changescope.encoders.registry import create_encoder, get_meta, list_encoders, register_encoder

__all__ = [
    "BandSpec",
    "Encoder",
    "EncoderMeta",
    "Normalization",
    "WeightsSource",
    "create_encoder",
    "get_meta",
    "list_encoders",
    "register_encoder",
]
