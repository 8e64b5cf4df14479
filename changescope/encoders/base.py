"""Encoder metadata (as data) and the one interface every encoder offers.

Each registered encoder has an :class:`EncoderMeta`: the bands it expects (names and centre wavelengths), its native
GSD, preferred input size, token/patch size, input normalisation, embedding dimension, weights source and licence.
Every encoder turns normalised tiles ``(N, C, H, W)`` into dense features ``(N, D, H / p, W / p)``
(:meth:`Encoder.feature_map`) or pooled vectors ``(N, D)`` (:meth:`Encoder.encode`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch

from changescope.errors import ParameterError

__all__ = ["BandSpec", "Encoder", "EncoderMeta", "Normalization", "WeightsSource"]

WeightsKind = Literal["none", "local", "hf", "torchhub", "url", "timm", "torchgeo"]


@dataclass(frozen=True)
class BandSpec:
    """A band an encoder expects.

    Attributes:
        name: Canonical name (``"red"``, ``"nir"``, ``"B8A"``...).
        wavelength: Centre wavelength in micrometres (``None`` for non-optical inputs).
    """

    name: str
    wavelength: float | None = None


@dataclass(frozen=True)
class Normalization:
    """How reflectance (0-1 floats) becomes encoder input.

    Attributes:
        kind: ``"meanstd"``: ``(x - mean) / std`` per band; ``"stretch"``: per-tile percentile stretch to 0-1
            (``low``/``high`` percentiles) followed by ``mean``/``std`` if given; ``"none"``: reflectance as is.
        mean: Per-band means (reflectance units unless ``kind == "stretch"``).
        std: Per-band standard deviations.
        low: Lower percentile of the stretch.
        high: Upper percentile of the stretch.
    """

    kind: Literal["meanstd", "stretch", "none"] = "none"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    low: float = 2.0
    high: float = 98.0


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's weights come from.

    Attributes:
        kind: ``"none"`` (training-free or random), ``"local"`` (a path), ``"hf"`` (Hugging Face repo id),
            ``"torchhub"`` (a torch.hub repo ``owner/name`` or a local clone), ``"url"``, ``"timm"`` (a timm
            pretrained tag, fetched through the HF hub cache) or ``"torchgeo"`` (a torchgeo weights enum name).
        ref: The repo id, URL, path or enum name.
        filename: File inside the repo, when it matters.
    """

    kind: WeightsKind = "none"
    ref: str = ""
    filename: str | None = None


@dataclass(frozen=True)
class EncoderMeta:
    """Everything downstream code needs to know about an encoder, as data.

    Attributes:
        name: Registry name.
        family: Implementation family (``"spectral"``, ``"timm_cnn"``, ``"vit"``, ``"sam2"``, ``"clay"``...).
        bands: Expected bands in input order; empty = any bands (the encoder adapts to the series).
        gsd: Native ground sample distance in metres (``None`` = any).
        input_size: Preferred tile side in pixels.
        patch_size: Pixels per output token (the feature map's stride).
        embed_dim: Feature dimension ``D``.
        normalization: Input normalisation.
        weights: Default weights source.
        licence: Licence of the default weights (or the code for training-free encoders).
        description: One line for ``list_encoders``.
        adaptive_bands: The encoder takes any bands (``bands=`` the series' bands); ``bands`` then documents the
            default case.
        accepts_nan: The encoder handles NaN (invalid) pixels itself; others get them filled with 0 after
            normalisation.
    """

    name: str
    family: str
    bands: tuple[BandSpec, ...]
    gsd: float | None
    input_size: int
    patch_size: int
    embed_dim: int
    normalization: Normalization = field(default_factory=Normalization)
    weights: WeightsSource = field(default_factory=WeightsSource)
    licence: str = "Apache-2.0"
    description: str = ""
    adaptive_bands: bool = False
    accepts_nan: bool = False

    @property
    def in_chans(self) -> int:
        """Number of input channels (0 when the encoder adapts to any band count)."""
        return len(self.bands)


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
            ParameterError: Wrong rank, channel count or tile size; the message says what is expected.
        """
        if tiles.ndim != 4:
            raise ParameterError(
                f"tiles of shape {tuple(tiles.shape)!r} given to encoder {self.meta.name!r}; expected (N, C, H, W)"
            )
        c, h, w = tiles.shape[1:]
        if self.meta.in_chans and c != self.meta.in_chans:
            raise ParameterError(
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
