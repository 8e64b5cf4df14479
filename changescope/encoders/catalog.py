"""The built-in encoders as data: each name's :class:`~changescope.encoders.meta.EncoderMeta` and its factory.

The registry reads :data:`BUILTIN_ENCODERS` to list and describe encoders without importing torch or any family
module; a family module is imported only when one of its encoders is built (its factory is named
``"module:function"``). Each family module reads its metadata from here, so a name's description exists once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from changescope.encoders.meta import (
    IMAGENET_REFLECTANCE,
    RGB_BANDS,
    RGB_STRETCH,
    BandSpec,
    EncoderMeta,
    Normalization,
    WeightsSource,
)

__all__ = [
    "ANYSAT_META",
    "ANYSAT_MODALITIES",
    "ANYSAT_REPO",
    "ANYSAT_TOKENS_PER_SIDE",
    "BUILTIN_ENCODERS",
    "CLAY_META",
    "CLAY_TEST_META",
    "DINOV2_B",
    "DINOV2_S",
    "DINOV2_TEST",
    "RESNET18_META",
    "RESNET50_META",
    "SAM2",
    "SAM2_REPO",
    "SAM2_TEST",
    "SPECTRAL_BANDS",
    "SPECTRAL_META",
    "AnySatModality",
    "BuiltinEncoder",
]


@dataclass(frozen=True)
class BuiltinEncoder:
    """A built-in encoder: its metadata and where its factory lives.

    Attributes:
        meta: Registered metadata.
        factory: ``"package.module:function"``; the function is called as ``factory(meta, weights=None, **kw)``.
    """

    meta: EncoderMeta
    factory: str


# --------------------------------------------------------------------------------------------------- spectral

SPECTRAL_BANDS: tuple[BandSpec, ...] = (
    BandSpec("blue", 0.490),
    BandSpec("green", 0.560),
    BandSpec("red", 0.665),
    BandSpec("nir", 0.842),
)
"""The 4-band case the ``spectral`` metadata documents (PlanetScope / DynamicEarthNet order)."""

SPECTRAL_META = EncoderMeta(
    adaptive_bands=True,
    accepts_nan=True,
    name="spectral",
    family="spectral",
    bands=SPECTRAL_BANDS,
    gsd=None,
    input_size=256,
    patch_size=8,
    embed_dim=13,  # 4 medians + 4 IQRs + ndvi, ndwi + brightness, gradient, local_std (spectral_feature_names)
    normalization=Normalization("none"),
    weights=WeightsSource("none"),
    licence="Apache-2.0",
    description="Training-free per-cell band medians/IQRs, spectral indices and texture; adapts to any bands",
)

# ------------------------------------------------------------------------------------------------- timm CNNs


def _resnet_meta(name: str, embed_dim: int, description: str) -> EncoderMeta:
    return EncoderMeta(
        name=name,
        family="timm_cnn",
        bands=RGB_BANDS,
        gsd=None,
        input_size=224,
        patch_size=16,
        embed_dim=embed_dim,
        normalization=IMAGENET_REFLECTANCE,
        weights=WeightsSource("timm", f"timm/{name}.a1_in1k", "model.safetensors"),
        licence="Apache-2.0",
        description=description,
    )


RESNET18_META = _resnet_meta("resnet18", 256, "ResNet-18 (timm, ImageNet a1) stage-3 features; any bands via bands=")
RESNET50_META = _resnet_meta("resnet50", 1024, "ResNet-50 (timm, ImageNet a1) stage-3 features; any bands via bands=")

# ------------------------------------------------------------------------------------------------ DINOv2, SAM 2


def _rgb_meta(
    name: str, family: str, embed_dim: int, patch: int, size: int, weights: WeightsSource, description: str
) -> EncoderMeta:
    return EncoderMeta(
        name=name,
        family=family,
        bands=RGB_BANDS,
        gsd=None,
        input_size=size,
        patch_size=patch,
        embed_dim=embed_dim,
        normalization=RGB_STRETCH,
        weights=weights,
        licence="Apache-2.0",
        description=description,
    )


def _timm_source(model: str) -> WeightsSource:
    return WeightsSource("timm", f"timm/{model}", "model.safetensors")


DINOV2_S = _rgb_meta(
    "dinov2_s",
    "vit",
    384,
    14,
    224,
    _timm_source("vit_small_patch14_dinov2.lvd142m"),
    "DINOv2 ViT-S/14 (LVD-142M), RGB, 14 px tokens, 384-d; backend timm (default) or transformers",
)
DINOV2_B = _rgb_meta(
    "dinov2_b",
    "vit",
    768,
    14,
    224,
    _timm_source("vit_base_patch14_dinov2.lvd142m"),
    "DINOv2 ViT-B/14 (LVD-142M), RGB, 14 px tokens, 768-d; backend timm (default) or transformers",
)
DINOV2_TEST = _rgb_meta(
    "dinov2_test",
    "vit",
    32,
    14,
    56,
    WeightsSource("none"),
    "tiny random DINOv2-architecture ViT (2 blocks, 32-d) for tests",
)

SAM2_REPO = "facebook/sam2.1-hiera-base-plus"
"""Default SAM 2 weights: SAM 2.1 Hiera base-plus in the transformers format (Apache-2.0)."""

SAM2 = _rgb_meta(
    "sam2",
    "sam2",
    256,
    16,
    1024,
    WeightsSource("hf", SAM2_REPO),
    "SAM 2.1 Hiera base-plus image encoder (FPN stride-16 embeddings), RGB, 16 px tokens, 256-d",
)
SAM2_TEST = _rgb_meta(
    "sam2_test",
    "sam2",
    256,
    16,
    64,
    WeightsSource("none"),
    "tiny random SAM 2 Hiera image encoder (256-d neck) for tests",
)

# -------------------------------------------------------------------------------------------------------- Clay


def _clay_meta(name: str, dim: int, size: int, weights: WeightsSource, description: str) -> EncoderMeta:
    return EncoderMeta(
        name=name,
        family="clay",
        bands=(),
        gsd=None,
        input_size=size,
        patch_size=8,
        embed_dim=dim,  # CLAY_CONFIGS[name].dim (changescope.encoders.clay_model)
        normalization=Normalization("meanstd"),
        weights=weights,
        licence="Apache-2.0",
        description=description,
    )


CLAY_META = _clay_meta(
    "clay",
    1024,
    256,
    WeightsSource("hf", "made-with-clay/Clay", "v1.5/clay-v1.5.ckpt"),
    "Clay v1.5 ViT-L/8, wavelength-aware patch embedding; any optical bands",
)
CLAY_TEST_META = _clay_meta(
    "clay_test", 32, 32, WeightsSource("none"), "tiny Clay (dim 32, depth 2) sharing the clay code path, for tests"
)

# ------------------------------------------------------------------------------------------------------ AnySat


@dataclass(frozen=True)
class AnySatModality:
    """One AnySat input modality, as data.

    Attributes:
        name: AnySat's dict key.
        bands: Expected bands in order.
        resolution: Nominal metres per pixel.
        time_series: Whether AnySat wants ``(B, T, C, H, W)`` plus ``<name>_dates``.
        subpatch: Pixels per side of the ``output="dense"`` cells.
        default_patch: Default ``patch_size`` in pixels.
        normalization: Default normalisation (reflectance units).
    """

    name: str
    bands: tuple[BandSpec, ...]
    resolution: float
    time_series: bool
    subpatch: int
    default_patch: int
    normalization: Normalization = field(default_factory=Normalization)


def _meanstd(pairs: Sequence[tuple[float, float]]) -> Normalization:
    return Normalization("meanstd", tuple(m for m, _ in pairs), tuple(s for _, s in pairs))


# fmt: off
_S2 = tuple(
    BandSpec(n, w)
    for n, w in [("B02", 0.490), ("B03", 0.560), ("B04", 0.665), ("B05", 0.705), ("B06", 0.740), ("B07", 0.783),
                 ("B08", 0.842), ("B8A", 0.865), ("B11", 1.610), ("B12", 2.190)]
)
# Clay's sentinel-2-l2a statistics / 10000 (same band order as AnySat's S2 input).
_S2_NORM = _meanstd(
    [(0.1105, 0.1809), (0.1355, 0.1757), (0.1552, 0.1888), (0.1887, 0.1870), (0.2422, 0.1732), (0.2630, 0.1697),
     (0.2743, 0.1742), (0.2785, 0.1648), (0.2388, 0.1470), (0.1835, 0.1379)]
)
# Clay's planetscope-sr statistics / 10000, in R, G, B, NIR order.
_RGBN = (BandSpec("red", 0.665), BandSpec("green", 0.560), BandSpec("blue", 0.490), BandSpec("nir", 0.842))
_RGBN_NORM = _meanstd([(0.2290, 0.0868), (0.2088, 0.0768), (0.1715, 0.0698), (0.3970, 0.0914)])
# Clay's landsat-c2l2-sr statistics converted to reflectance (DN * 2.75e-5 - 0.2), Landsat 7 band order.
_L7 = (
    BandSpec("blue", 0.485), BandSpec("green", 0.560), BandSpec("red", 0.660), BandSpec("nir", 0.835),
    BandSpec("swir1", 1.650), BandSpec("swir2", 2.220),
)
_L7_NORM = _meanstd([(0.1430, 0.2790), (0.1660, 0.2587), (0.1769, 0.2634), (0.2895, 0.2276), (0.2019, 0.1458),
                     (0.1493, 0.1244)])

ANYSAT_MODALITIES: dict[str, AnySatModality] = {
    m.name: m
    for m in (
        AnySatModality("s2", _S2, 10.0, True, 1, 4, _S2_NORM),
        AnySatModality("l7", _L7, 30.0, True, 1, 2, _L7_NORM),
        AnySatModality("s1-asc", (BandSpec("VV"), BandSpec("VH")), 10.0, True, 1, 4),
        AnySatModality("s1", (BandSpec("VV"), BandSpec("VH"), BandSpec("ratio")), 10.0, True, 1, 4),
        AnySatModality("alos", (BandSpec("HH"), BandSpec("HV"), BandSpec("ratio")), 30.0, True, 1, 2),
        AnySatModality("naip", _RGBN, 1.25, False, 8, 8, _RGBN_NORM),
        AnySatModality("spot", _RGBN[:3], 1.0, False, 10, 10, Normalization("meanstd", _RGBN_NORM.mean[:3],
                                                                          _RGBN_NORM.std[:3])),
        AnySatModality("aerial", _RGBN, 0.2, False, 10, 50, _RGBN_NORM),
    )
}
# fmt: on
"""Supported AnySat modalities (README "Format your data"; aerial-flair, l8 and modis are not exposed)."""

ANYSAT_REPO = "gastruc/anysat"
"""Default AnySat code and weights: the GitHub repo torch.hub loads."""
ANYSAT_TOKENS_PER_SIDE = 16
"""Preferred tile side in patches (16 x 16 = 256 tokens; AnySat advises at most 1024 per tile)."""

ANYSAT_META = EncoderMeta(
    name="anysat",
    family="anysat",
    bands=ANYSAT_MODALITIES["s2"].bands,
    gsd=10.0,
    input_size=ANYSAT_MODALITIES["s2"].default_patch * ANYSAT_TOKENS_PER_SIDE,
    patch_size=ANYSAT_MODALITIES["s2"].default_patch,
    embed_dim=768,
    normalization=ANYSAT_MODALITIES["s2"].normalization,
    weights=WeightsSource("torchhub", ANYSAT_REPO),
    licence="MIT",
    description="AnySat base (JEPA, multi-modal) via torch.hub",
)

# ------------------------------------------------------------------------------------------------------- table

_PKG = "changescope.encoders"

BUILTIN_ENCODERS: dict[str, BuiltinEncoder] = {
    entry.meta.name: entry
    for entry in (
        BuiltinEncoder(SPECTRAL_META, f"{_PKG}.spectral:create_spectral_encoder"),
        BuiltinEncoder(RESNET18_META, f"{_PKG}.timm_cnn:create_timm_encoder"),
        BuiltinEncoder(RESNET50_META, f"{_PKG}.timm_cnn:create_timm_encoder"),
        BuiltinEncoder(DINOV2_S, f"{_PKG}.vit:create_dinov2"),
        BuiltinEncoder(DINOV2_B, f"{_PKG}.vit:create_dinov2"),
        BuiltinEncoder(DINOV2_TEST, f"{_PKG}.vit:create_dinov2"),
        BuiltinEncoder(SAM2, f"{_PKG}.sam2:create_sam2"),
        BuiltinEncoder(SAM2_TEST, f"{_PKG}.sam2:create_sam2"),
        BuiltinEncoder(CLAY_META, f"{_PKG}.clay:create_clay"),
        BuiltinEncoder(CLAY_TEST_META, f"{_PKG}.clay:create_clay"),
        BuiltinEncoder(ANYSAT_META, f"{_PKG}.anysat:create_anysat"),
    )
}
"""Built-in encoders by registry name."""
