"""``resnet18`` / ``resnet50``: timm CNNs as dense patch encoders, for any band count.

This module holds the encoder class and its factory (input adaptation); the backbone is built by
:mod:`changescope.encoders.backbone` (a timm ``features_only`` model, default stage 3: stride 16, 256 channels for
ResNet-18, 1024 for ResNet-50) and the weights are found by :mod:`changescope.encoders.timm_weights`.

Weights (``weights=``):

- ``None`` or ``"timm"``: the default timm tag (``timm/resnet18.a1_in1k``), fetched through the Hugging Face cache
  (offline mode: cache only);
- ``"random"``: random initialisation (benchmarks, tests);
- a weights tag (:func:`~changescope.encoders.list_weights`): ``"resnet18.sentinel2_all_moco"``,
  ``"resnet50.sentinel2_all_dino"``... (torchgeo's published SSL4EO-S12 files, without torchgeo; their bands and
  statistics become the encoder's metadata);
- a local file: a timm/torchvision-style state dict (``.safetensors``, or ``.pth``/``.pt``/``.bin`` loaded with
  ``torch.load(weights_only=True)``);
- a local folder laid out like a Hugging Face timm repo (``config.json`` + ``model.safetensors``);
- a Hugging Face repo id (``timm/resnet18.tv_in1k``, optionally prefixed ``hf-hub:``);
- ``"torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO"``: a torchgeo weights enum (needs ``pip install torchgeo``); its
  bands, input channels and normalisation become the encoder's metadata.

Input adaptation: when the bands the encoder will be fed (``bands=`` or ``in_chans=``) differ from the weights'
own, the first convolution is adapted. If the weights' bands are known (RGB for ImageNet weights, the enum's bands for
torchgeo) and some requested bands are among them (matched by name or wavelength), each of those keeps its own input
channel and each other band gets the mean of the input channels (so blue, green, red, nir fed to RGB weights maps
blue to blue, not to red); otherwise timm's :func:`~timm.models.adapt_input_conv` repeats (or, for one band, sums)
the channels. Both rescale by ``source channels / target channels``. Normalisation statistics follow the same
mapping.

Normalisation: RGB weights trained on ImageNet get ImageNet mean/std expressed in reflectance, assuming
reflectance :data:`DISPLAY_WHITE` is displayed as white (``x / DISPLAY_WHITE`` is the usual true-colour gain); this is
a fixed, date-independent mapping, so real brightness changes are kept. torchgeo weights get the statistics of their
own transforms. Pass ``normalization=`` to override.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from changescope.encoders.backbone import (
    DEFAULT_STAGE,
    build_backbone,
    feature_stages,
    first_conv_name,
    load_backbone_state,
)
from changescope.encoders.bands import band_indices
from changescope.encoders.base import Encoder
from changescope.encoders.catalog import RESNET18_META, RESNET50_META
from changescope.encoders.meta import (
    DISPLAY_WHITE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RGB_BANDS,
    BandSpec,
    EncoderMeta,
    Normalization,
)
from changescope.encoders.timm_weights import LoadedWeights, resolve_timm_weights
from changescope.errors import BandMismatchError, ParameterError
from changescope.series import BandInfo

__all__ = [
    "DISPLAY_WHITE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESNET18_META",
    "RESNET50_META",
    "RGB_BANDS",
    "TimmCNNEncoder",
    "build_backbone",
    "create_timm_encoder",
    "feature_stages",
    "load_backbone_state",
]


class TimmCNNEncoder(Encoder):
    """A timm CNN feature stage as a dense encoder.

    Args:
        model: A ``features_only`` timm model returning one feature map (see :func:`build_backbone`).
        meta: This instance's metadata (bands, stride as ``patch_size``, channels as ``embed_dim``).
        weights_id: What was loaded, for provenance.
        architecture: timm model name.
        stage: Feature stage index.
        device: Where to run (default CPU).
    """

    def __init__(
        self,
        model: nn.Module,
        meta: EncoderMeta,
        *,
        weights_id: str,
        architecture: str,
        stage: int,
        device: str | torch.device | None = None,
    ) -> None:
        self.meta = meta
        self.weights_id = weights_id
        self.architecture = architecture
        self.stage = stage
        self.model = model.eval()
        self._device = torch.device("cpu")
        if device is not None:
            self.to(device)

    @property
    def device(self) -> torch.device:
        """Device the backbone sits on."""
        return self._device

    def to(self, device: str | torch.device) -> TimmCNNEncoder:
        """Move the backbone to ``device``."""
        self._device = torch.device(device)
        self.model.to(self._device)
        return self

    def feature_map(self, tiles: torch.Tensor) -> torch.Tensor:
        """Dense features of the chosen stage.

        Args:
            tiles: ``(N, C, H, W)`` normalised input, ``H`` and ``W`` multiples of :attr:`patch_size`.

        Returns:
            ``(N, embed_dim, H // patch_size, W // patch_size)`` float32.
        """
        with torch.inference_mode():
            x = self.check_tiles(tiles)
            out: torch.Tensor = self.model(x)[0]
            return out.float()


def _band_map(source: tuple[BandSpec, ...] | None, target: tuple[BandSpec, ...], arch: str) -> list[int | None]:
    """For each target band, the index of the same band among the weights' bands (by name or wavelength)."""
    if source is None:
        return [None] * len(target)
    series = [BandInfo(b.name, b.wavelength) for b in source]
    out: list[int | None] = []
    for band in target:
        try:
            out.append(band_indices(series, EncoderMeta(arch, "timm_cnn", (band,), None, 1, 1, 1))[0])
        except BandMismatchError:
            out.append(None)
    return out


def _adapt(
    loaded: LoadedWeights, target: tuple[BandSpec, ...], first_conv: str, arch: str
) -> tuple[dict[str, Any] | None, Normalization | None]:
    """Fit the first convolution and the normalisation of ``loaded`` to the ``target`` bands.

    Known bands keep their own input channel (selected, reordered); bands the weights lack get the mean of all
    input channels; every channel is scaled by ``source_channels / target_channels`` as timm does. When no band is
    known, timm's :func:`~timm.models.adapt_input_conv` repeats (or, for one band, sums) the channels.
    """
    from timm.models import adapt_input_conv

    sd = loaded.state_dict
    norm = loaded.normalization
    key = f"{first_conv}.weight"
    if sd is not None and key in sd:
        src_chans = int(sd[key].shape[1])
    else:
        src_chans = len(loaded.bands) if loaded.bands is not None else len(target)
    c = len(target)
    mapping = _band_map(loaded.bands if loaded.bands and len(loaded.bands) == src_chans else None, target, arch)
    if c == src_chans and mapping in ([None] * c, list(range(c))):
        return sd, norm
    known = any(i is not None for i in mapping)
    if sd is not None and key in sd:
        weight = sd[key].float()
        if known:
            fill = weight.mean(dim=1)
            chans = [weight[:, i] if i is not None else fill for i in mapping]
            sd = {**sd, key: torch.stack(chans, dim=1) * (src_chans / c)}
        else:
            sd = {**sd, key: adapt_input_conv(c, weight, base_chans=src_chans)}
    if norm is not None and norm.mean:
        mean, std = norm.mean, norm.std
        mean_fill, std_fill = round(sum(mean) / len(mean), 6), round(sum(std) / len(std), 6)
        if known:
            mean = tuple(mean[i] if i is not None else mean_fill for i in mapping)
            std = tuple(std[i] if i is not None else std_fill for i in mapping)
        elif c == 1:
            mean, std = (mean_fill,), (std_fill,)
        else:
            reps = math.ceil(c / len(mean))
            mean, std = (mean * reps)[:c], (std * reps)[:c]
        norm = replace(norm, mean=mean, std=std)
    return sd, norm


def _target_bands(
    bands: Sequence[BandInfo | BandSpec | str] | None, in_chans: int | None, loaded: LoadedWeights
) -> tuple[BandSpec, ...]:
    if bands is not None:
        specs = []
        for b in bands:
            if isinstance(b, str):
                info = BandInfo.from_name(b)
                specs.append(BandSpec(info.name, info.wavelength))
            else:
                wl = b.wavelength
                specs.append(BandSpec(b.name, None if wl is None or math.isnan(wl) else float(wl)))
        if in_chans is not None and in_chans != len(specs):
            raise ParameterError(f"in_chans={in_chans!r} does not match the {len(specs)} bands given")
        if not specs:
            raise ParameterError("bands=[] is empty; pass the series bands")
        return tuple(specs)
    if in_chans is None:
        if loaded.bands is None:
            raise ParameterError("the weights do not say which bands they expect; pass bands=[...] (series order)")
        return loaded.bands
    if loaded.bands is not None and len(loaded.bands) == in_chans:
        return loaded.bands
    if in_chans < 1:
        raise ParameterError(f"in_chans={in_chans!r} must be at least 1")
    return tuple(BandSpec(f"band{i + 1}") for i in range(in_chans))


def create_timm_encoder(
    meta: EncoderMeta,
    weights: str | os.PathLike[str] | None = None,
    *,
    bands: Sequence[BandInfo | BandSpec | str] | None = None,
    in_chans: int | None = None,
    stage: int = DEFAULT_STAGE,
    normalization: Normalization | None = None,
    device: str | torch.device | None = None,
) -> TimmCNNEncoder:
    """Build a timm CNN encoder (the factory behind ``resnet18`` and ``resnet50``).

    Args:
        meta: The registered metadata; ``meta.name`` is the timm architecture.
        weights: See the module docstring (``None``, ``"timm"``, ``"random"``, a tag, path, repo id,
            ``"torchgeo:ENUM"``).
        bands: Bands the encoder will be fed, in order; the default is the weights' own bands (RGB for ImageNet).
        in_chans: Input channel count when bands are not named (adapts the first convolution).
        stage: Feature stage (default 3: stride 16).
        normalization: Overrides the normalisation derived from the weights.
        device: Where to run.

    Raises:
        WeightsNotFoundError: The weights are not local and cannot be downloaded (offline mode).
        MissingDependencyError: torchgeo weights without torchgeo installed.
        ParameterError: Bad ``weights``, ``bands``, ``in_chans`` or ``stage``, or weights of another architecture.
        CorruptFileError: A weights file cannot be read.
    """
    arch = meta.name
    loaded = resolve_timm_weights(meta, weights)
    target = _target_bands(bands, in_chans, loaded)
    model = build_backbone(arch, len(target), stage)
    first_conv = first_conv_name(arch)
    state_dict, norm = _adapt(loaded, target, first_conv, arch)
    if state_dict is not None:
        load_backbone_state(model, state_dict, what=repr(loaded.weights_id))
    stride, channels = feature_stages(model)[-1]
    inst = replace(
        meta,
        bands=target,
        patch_size=stride,
        embed_dim=channels,
        input_size=stride * math.ceil(meta.input_size / stride),
        normalization=normalization or norm or Normalization("none"),
        weights=loaded.source,
        licence=loaded.licence or meta.licence,
    )
    return TimmCNNEncoder(model, inst, weights_id=loaded.weights_id, architecture=arch, stage=stage, device=device)
