"""The one interface every encoder offers (the metadata dataclasses live in :mod:`changescope.encoders.meta`).

The metadata names are re-exported here for compatibility: :class:`EncoderMeta` (the bands an encoder expects, its
GSD, input and patch size, normalisation, embedding dimension, weights source and licence), :class:`BandSpec`,
:class:`Normalization` and :class:`WeightsSource`. Every encoder turns normalised tiles ``(N, C, H, W)`` into
dense features ``(N, D, H / p, W / p)`` (:meth:`Encoder.feature_map`) or pooled vectors ``(N, D)``
(:meth:`Encoder.encode`).

The contract every registered encoder keeps (``tests/encoders/test_contract.py`` checks it):

- shapes: ``feature_map`` gives ``(N, embed_dim, H / patch_size, W / patch_size)`` float32, ``encode`` ``(N, D)``;
- determinism: the same input gives the same output;
- invalid pixels: encoders whose meta says ``accepts_nan`` take NaN pixels and give finite features; the others are
  fed :func:`~changescope.encoders.bands.normalize` output, where invalid pixels are 0, and give finite features;
- bands: tiles with another channel count than the encoder's bands raise :class:`ChannelMismatchError` (both a
  :class:`~changescope.errors.BandMismatchError` and a :class:`~changescope.errors.ParameterError`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from changescope.encoders.meta import BandSpec, EncoderMeta, Normalization, WeightsKind, WeightsSource
from changescope.errors import BandMismatchError, ParameterError

__all__ = [
    "BandSpec",
    "ChannelMismatchError",
    "Encoder",
    "EncoderMeta",
    "Normalization",
    "WeightsKind",
    "WeightsSource",
]


class ChannelMismatchError(BandMismatchError, ParameterError):
    """Tiles with another channel count than the encoder's bands: a band mismatch and a bad argument at once."""


class Encoder(ABC):
    """The one interface downstream code uses.

    Subclasses set :attr:`meta` and implement :meth:`feature_map`. Inputs are float32 tensors already mapped to
    the encoder's bands and normalised (see :mod:`changescope.encoders.bands`); ``H`` and ``W`` must be multiples
    of :attr:`patch_size`.
    """

    meta: EncoderMeta
    weights_id: str = "none"
    """Identifies the loaded weights (path, repo id@revision, or ``"random"``/``"none"``) for provenance."""

    @property
    def embed_dim(self) -> int:
        """Feature dimension ``D``."""
        return self.meta.embed_dim

    @property
    def patch_size(self) -> int:
        """Pixels per output token."""
        return self.meta.patch_size

    @property
    def device(self) -> torch.device:
        """Device the encoder runs on."""
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> Encoder:
        """Move the encoder to ``device`` (no-op for encoders without parameters)."""
        return self

    def check_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """Validate encoder input and return it as float32 on :attr:`device`.

        Args:
            tiles: ``(N, C, H, W)`` with ``C == meta.in_chans`` (any ``C`` when the meta has no bands) and ``H``,
                ``W`` multiples of :attr:`patch_size`.

        Returns:
            ``(N, C, H, W)`` float32 on :attr:`device`.

        Raises:
            ChannelMismatchError: ``C`` differs from the encoder's band count.
            ParameterError: Wrong rank or tile size; the message says what is expected.
        """
        if tiles.ndim != 4:
            raise ParameterError(
                f"tiles of shape {tuple(tiles.shape)!r} given to encoder {self.meta.name!r}; expected (N, C, H, W)"
            )
        c, h, w = tiles.shape[1:]
        if self.meta.in_chans and c != self.meta.in_chans:
            raise ChannelMismatchError(
                f"tiles have {c} channels but encoder {self.meta.name!r} expects {self.meta.in_chans} "
                f"({[b.name for b in self.meta.bands]!r}); select them with changescope.encoders.bands.band_indices"
            )
        p = self.patch_size
        if h % p or w % p:
            raise ParameterError(
                f"tiles of {h}x{w} px given to encoder {self.meta.name!r}; height and width must be multiples of "
                f"its patch size {p} (pad or crop the tiles)"
            )
        return tiles.to(device=self.device, dtype=torch.float32)

    @abstractmethod
    def feature_map(self, tiles: torch.Tensor) -> torch.Tensor:
        """Dense features.

        Args:
            tiles: ``(N, C, H, W)`` float32 normalised input.

        Returns:
            ``(N, D, H // patch_size, W // patch_size)``.
        """

    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, D)``: the mean of :meth:`feature_map` over space."""
        return self.feature_map(tiles).mean(dim=(-2, -1))
