"""Weight tags as data: ``resnet18.sentinel2_all_moco`` and the like (timm ``PretrainedCfg``, torchgeo weights enums).

A tag is ``<encoder>.<weights>``; each names one published checkpoint with the bands and normalisation it was trained
with, where it is downloaded from and its licence. ``create_encoder(name, weights=TAG)`` (CLI: ``--weights TAG``)
fetches it through :func:`~changescope.encoders.weights.resolve_weights`, so offline mode and the cache apply.
:func:`list_weights` lists the tags without importing torch.

The torchgeo ResNet tags are torchgeo's ``ResNet18_Weights`` / ``ResNet50_Weights`` members (same files, same
statistics) without needing torchgeo: SSL4EO-S12 optical inputs are reflectance x 10000 divided by 10000, so in
changescope's reflectance units their normalisation is the identity; Sentinel-1 inputs are decibels standardised with
SSL4EO-S12's statistics.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from changescope.encoders.meta import (
    SENTINEL2_BANDS,
    BandSpec,
    Normalization,
    WeightsSource,
)
from changescope.errors import ParameterError

__all__ = ["WEIGHTS_TAGS", "WeightsTag", "get_weights_tag", "list_weights", "looks_like_tag"]


@dataclass(frozen=True)
class WeightsTag:
    """One published checkpoint of an encoder, as data.

    Attributes:
        name: ``"<encoder>.<weights>"``.
        encoder: Registry name of the encoder the weights belong to.
        source: Where the file comes from (URL, Hugging Face repo and file, or torch.hub repo).
        licence: Licence of the weights.
        bands: Bands the weights expect in input order (empty: the encoder's own).
        normalization: Input normalisation in reflectance units (``None``: the encoder's own).
        description: One line.
    """

    name: str
    encoder: str
    source: WeightsSource
    licence: str
    bands: tuple[BandSpec, ...] = ()
    normalization: Normalization | None = None
    description: str = ""


_TORCHGEO = "https://hf.co/torchgeo"
_S2_IDENTITY = Normalization("meanstd", mean=(0.0,) * 13, std=(1.0,) * 13)
_S2_RGB = tuple(b for name in ("B04", "B03", "B02") for b in SENTINEL2_BANDS if b.name == name)
_S1 = (BandSpec("VV"), BandSpec("VH"))
_S1_NORM = Normalization("meanstd", mean=(-12.59, -20.26), std=(5.26, 5.91))
_SSL4EO_LICENCE = "CC-BY-4.0"


def _torchgeo(name: str, path: str, bands: tuple[BandSpec, ...], norm: Normalization, what: str) -> WeightsTag:
    encoder = name.split(".", 1)[0]
    return WeightsTag(name, encoder, WeightsSource("url", f"{_TORCHGEO}/{path}"), _SSL4EO_LICENCE, bands, norm, what)


def _hub(name: str, source: WeightsSource, licence: str, what: str) -> WeightsTag:
    return WeightsTag(name, name.split(".", 1)[0], source, licence, description=what)


WEIGHTS_TAGS: dict[str, WeightsTag] = {
    tag.name: tag
    for tag in (
        _hub(
            "resnet18.a1_in1k",
            WeightsSource("timm", "timm/resnet18.a1_in1k", "model.safetensors"),
            "Apache-2.0",
            "timm ImageNet-1k (A1 recipe), RGB; the default",
        ),
        _hub(
            "resnet50.a1_in1k",
            WeightsSource("timm", "timm/resnet50.a1_in1k", "model.safetensors"),
            "Apache-2.0",
            "timm ImageNet-1k (A1 recipe), RGB; the default",
        ),
        _torchgeo(
            "resnet18.sentinel2_all_moco",
            "resnet18_sentinel2_all_moco/resolve/5b8cddc9a14f3844350b7f40b85bcd32aed75918/"
            "resnet18_sentinel2_all_moco-59bfdff9.pth",
            SENTINEL2_BANDS,
            _S2_IDENTITY,
            "SSL4EO-S12 MoCo, Sentinel-2 L1C, 13 bands (torchgeo ResNet18_Weights.SENTINEL2_ALL_MOCO)",
        ),
        _torchgeo(
            "resnet18.sentinel2_rgb_moco",
            "resnet18_sentinel2_rgb_moco/resolve/e1c032e7785fd0625224cdb6699aa138bb304eec/"
            "resnet18_sentinel2_rgb_moco-e3a335e3.pth",
            _S2_RGB,
            Normalization("meanstd", mean=(0.0,) * 3, std=(1.0,) * 3),
            "SSL4EO-S12 MoCo, Sentinel-2 RGB (torchgeo ResNet18_Weights.SENTINEL2_RGB_MOCO)",
        ),
        _torchgeo(
            "resnet50.sentinel2_all_moco",
            "resnet50_sentinel2_all_moco/resolve/da4f3c9dbe09272eb902f3b37f46635fa4726879/"
            "resnet50_sentinel2_all_moco-df8b932e.pth",
            SENTINEL2_BANDS,
            _S2_IDENTITY,
            "SSL4EO-S12 MoCo, Sentinel-2 L1C, 13 bands (torchgeo ResNet50_Weights.SENTINEL2_ALL_MOCO)",
        ),
        _torchgeo(
            "resnet50.sentinel2_all_dino",
            "resnet50_sentinel2_all_dino/resolve/d7f14bf5530d70ac69d763e58e77e44dbecfec7c/"
            "resnet50_sentinel2_all_dino-d6c330e9.pth",
            SENTINEL2_BANDS,
            _S2_IDENTITY,
            "SSL4EO-S12 DINO, Sentinel-2 L1C, 13 bands (torchgeo ResNet50_Weights.SENTINEL2_ALL_DINO)",
        ),
        _torchgeo(
            "resnet50.sentinel1_all_moco",
            "resnet50_sentinel1_all_moco/resolve/e79862c667853c10a709bdd77ea8ffbad0e0f1cf/"
            "resnet50_sentinel1_all_moco-906e4356.pth",
            _S1,
            _S1_NORM,
            "SSL4EO-S12 MoCo, Sentinel-1 GRD VV/VH in dB (torchgeo ResNet50_Weights.SENTINEL1_ALL_MOCO)",
        ),
        _hub(
            "dinov2_s.lvd142m",
            WeightsSource("timm", "timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors"),
            "Apache-2.0",
            "DINOv2 ViT-S/14 on LVD-142M, timm format; the default",
        ),
        _hub(
            "dinov2_b.lvd142m",
            WeightsSource("timm", "timm/vit_base_patch14_dinov2.lvd142m", "model.safetensors"),
            "Apache-2.0",
            "DINOv2 ViT-B/14 on LVD-142M, timm format; the default",
        ),
        _hub(
            "sam2.hiera_base_plus",
            WeightsSource("hf", "facebook/sam2.1-hiera-base-plus"),
            "Apache-2.0",
            "SAM 2.1 Hiera base-plus, transformers format; the default",
        ),
        _hub(
            "clay.v1_5",
            WeightsSource("hf", "made-with-clay/Clay", "v1.5/clay-v1.5.ckpt"),
            "Apache-2.0",
            "Clay v1.5 Lightning checkpoint (encoder kept); the default",
        ),
        _hub(
            "anysat.base",
            WeightsSource("torchhub", "gastruc/anysat"),
            "MIT",
            "AnySat base through torch.hub (code and weights); the default",
        ),
    )
}
"""Known weight tags by name."""


def list_weights(encoder: str | None = None) -> list[str]:
    """Known weight tags, sorted; only those of ``encoder`` when given (torch is not imported).

    Args:
        encoder: A registry name, or ``None`` for every tag.
    """
    return sorted(name for name, tag in WEIGHTS_TAGS.items() if encoder is None or tag.encoder == encoder)


def looks_like_tag(ref: str) -> bool:
    """Whether ``ref`` is spelt like a tag (``word.word`` of letters, digits and ``_``), not a path or repo id."""
    head, dot, tail = ref.partition(".")
    return bool(dot) and all(part and part.replace("_", "").isalnum() for part in (head, tail))


def get_weights_tag(name: str, encoder: str | None = None) -> WeightsTag:
    """The tag called ``name``, checked to belong to ``encoder``.

    Args:
        name: A tag (see :func:`list_weights`).
        encoder: The encoder the weights are for; ``None`` skips the check.

    Raises:
        ParameterError: Unknown tag (the message suggests close matches), or a tag of another encoder.
    """
    tag = WEIGHTS_TAGS.get(name)
    if tag is None:
        pool = list_weights(encoder) or list_weights()
        close = difflib.get_close_matches(name, list_weights(), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ParameterError(
            f"weights={name!r} is not a known weights tag; {hint}known tags"
            + (f" for {encoder!r}" if encoder and list_weights(encoder) else "")
            + f": {pool!r} (changescope.encoders.list_weights())"
        )
    if encoder is not None and tag.encoder != encoder:
        raise ParameterError(
            f"weights={name!r} are {tag.encoder} weights, not {encoder} weights; use --encoder {tag.encoder} "
            f"or one of {list_weights(encoder)!r}"
        )
    return tag
