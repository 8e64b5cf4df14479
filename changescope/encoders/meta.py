"""Encoder metadata as data, without torch: what an encoder expects and gives, and where its weights come from.

Everything here is plain frozen dataclasses and constants, so listing and describing encoders
(:func:`~changescope.encoders.list_encoders`, :func:`~changescope.encoders.get_meta`,
:func:`~changescope.encoders.list_weights`) imports neither torch nor xarray. The encoder interface itself lives in
:mod:`changescope.encoders.base`.

Each registered encoder has an :class:`EncoderMeta`: the bands it expects (names and centre wavelengths), its native
GSD, preferred input size, token/patch size, input normalisation, embedding dimension, weights source and licence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DISPLAY_WHITE",
    "IMAGENET_MEAN",
    "IMAGENET_REFLECTANCE",
    "IMAGENET_STD",
    "RGB_BANDS",
    "RGB_STRETCH",
    "SENTINEL2_BANDS",
    "BandSpec",
    "EncoderMeta",
    "Normalization",
    "NormalizationKind",
    "WeightsKind",
    "WeightsSource",
]

WeightsKind = Literal["none", "local", "hf", "torchhub", "url", "timm", "torchgeo"]
"""Where weights come from (see :class:`WeightsSource`)."""

NormalizationKind = Literal["meanstd", "stretch", "none"]
"""How reflectance becomes encoder input (see :class:`Normalization`)."""


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

    kind: NormalizationKind = "none"
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


IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet per-channel mean (red, green, blue) of 0-1 display values."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet per-channel standard deviation (red, green, blue) of 0-1 display values."""

RGB_BANDS: tuple[BandSpec, ...] = (BandSpec("red", 0.665), BandSpec("green", 0.560), BandSpec("blue", 0.490))
"""Input order of RGB-pretrained weights (timm, torchvision, DINOv2, SAM 2), with Sentinel-2 B04/B03/B02 centre
wavelengths in micrometres (the values of :data:`changescope.series.KNOWN_WAVELENGTHS`)."""

SENTINEL2_BANDS: tuple[BandSpec, ...] = tuple(
    BandSpec(name, wavelength)
    for name, wavelength in (
        ("B01", 0.443),
        ("B02", 0.490),
        ("B03", 0.560),
        ("B04", 0.665),
        ("B05", 0.705),
        ("B06", 0.740),
        ("B07", 0.783),
        ("B08", 0.842),
        ("B8A", 0.865),
        ("B09", 0.945),
        ("B10", 1.375),
        ("B11", 1.610),
        ("B12", 2.190),
    )
)
"""The 13 Sentinel-2 MSI bands in band-number order (SSL4EO-S12's stack), centre wavelengths in micrometres."""

DISPLAY_WHITE = 0.3
"""Reflectance shown as white when RGB-pretrained weights see reflectance (ImageNet stats are scaled by it)."""

IMAGENET_REFLECTANCE = Normalization(
    "meanstd",
    mean=tuple(round(m * DISPLAY_WHITE, 6) for m in IMAGENET_MEAN),
    std=tuple(round(s * DISPLAY_WHITE, 6) for s in IMAGENET_STD),
)
"""Reflectance / :data:`DISPLAY_WHITE` then ImageNet mean/std, folded into one mean/std in reflectance units: a fixed,
date-independent mapping (no per-tile stretch), so real brightness changes are kept."""

RGB_STRETCH = Normalization(kind="stretch", mean=IMAGENET_MEAN, std=IMAGENET_STD, low=2.0, high=98.0)
"""Per-tile, per-band 2-98 % stretch to 0-1, then ImageNet mean/std (see :mod:`changescope.encoders.vit`)."""
