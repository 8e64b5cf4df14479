"""Finding the weights of the timm CNN encoders: tags, timm/Hugging Face repos, local files and folders, torchgeo.

Every source ends as a :class:`LoadedWeights`: a state dict plus the bands and normalisation the weights were
trained with (when known) and their licence; :mod:`changescope.encoders.timm_cnn` then fits the first convolution
to the bands the encoder will be fed. ImageNet (RGB) weights get ImageNet mean/std expressed in reflectance
(:data:`~changescope.encoders.meta.IMAGENET_REFLECTANCE`); weights tags and torchgeo enums bring their own
statistics. torchgeo inputs are digital numbers: reflectance x 10000 for SSL4EO-S12 optical data (so the statistics
are divided by 10000), decibels for SAR (unchanged), and 8-bit display values otherwise (mapped from a per-tile
2-98 % stretch).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from changescope.encoders.backbone import first_conv_name, strip_prefix
from changescope.encoders.meta import (
    DISPLAY_WHITE,
    IMAGENET_REFLECTANCE,
    RGB_BANDS,
    BandSpec,
    EncoderMeta,
    Normalization,
    WeightsSource,
)
from changescope.encoders.tags import WeightsTag, list_weights
from changescope.encoders.weights import load_state_dict, parse_weights, read_json_config, resolve_weights
from changescope.errors import MissingDependencyError, ParameterError, WeightsNotFoundError
from changescope.series import KNOWN_WAVELENGTHS

__all__ = ["LoadedWeights", "resolve_timm_weights"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SAR_BANDS = {"vv", "vh", "hh", "hv"}
_DN_SCALE = {"SSL4EO-S12": 10_000.0}
"""Digital numbers per unit reflectance of torchgeo datasets stored as scaled reflectance; others are 8-bit."""


@dataclass(frozen=True)
class LoadedWeights:
    """Weights found for a timm encoder, before adaptation.

    Attributes:
        state_dict: The tensors (``None``: random initialisation).
        bands: The bands the weights expect, in input order (``None``: unknown).
        normalization: The statistics the weights were trained with, in reflectance units (``None``: unknown).
        source: Where they came from (becomes the encoder's ``meta.weights``).
        weights_id: Provenance string (path, ``hf:repo@revision``, tag name...).
        licence: Licence of the weights, when known.
    """

    state_dict: dict[str, Any] | None
    bands: tuple[BandSpec, ...] | None
    normalization: Normalization | None
    source: WeightsSource
    weights_id: str
    licence: str | None = None


def _from_state_dict(
    state_dict: dict[str, Any], config: dict[str, Any], arch: str, source: WeightsSource, weights_id: str
) -> LoadedWeights:
    state_dict = strip_prefix(state_dict)
    found = str(config.get("architecture", arch)).split(".")[0]
    if found != arch:
        raise ParameterError(
            f"weights {weights_id!r} hold a {found!r} model but encoder {arch!r} was asked for; "
            f"use create_encoder({found!r}, weights=...) or weights for {arch}"
        )
    pcfg = config.get("pretrained_cfg", {})
    conv = state_dict.get(f"{pcfg.get('first_conv', first_conv_name(arch))}.weight")
    if not isinstance(conv, torch.Tensor) or conv.ndim != 4:  # foreign names: the first convolution kernel
        conv = next((v for v in state_dict.values() if isinstance(v, torch.Tensor) and v.ndim == 4), None)
    chans = int(conv.shape[1]) if conv is not None else None
    bands = RGB_BANDS if chans == 3 else None
    norm: Normalization | None = None
    if "mean" in pcfg and "std" in pcfg and len(pcfg["mean"]) == chans:
        norm = Normalization(
            "meanstd",
            mean=tuple(round(float(m) * DISPLAY_WHITE, 6) for m in pcfg["mean"]),
            std=tuple(round(float(s) * DISPLAY_WHITE, 6) for s in pcfg["std"]),
        )
    elif chans == 3:
        norm = IMAGENET_REFLECTANCE
    licence = pcfg.get("license")
    return LoadedWeights(state_dict, bands, norm, source, weights_id, str(licence) if licence else None)


def _weights_in_folder(folder: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsNotFoundError(
        f"folder {str(folder)!r} has none of {list(_WEIGHT_FILES)!r}; pass a weights file or a folder laid out like "
        "a Hugging Face timm repo (config.json + model.safetensors)"
    )


def _from_path(path: Path, arch: str) -> LoadedWeights:
    folder = path if path.is_dir() else None
    file = _weights_in_folder(path) if folder is not None else path
    config = read_json_config(folder / "config.json" if folder is not None else None)
    ident = str(path.resolve())
    return _from_state_dict(load_state_dict(file), config, arch, WeightsSource("local", str(path)), ident)


def _from_hf(repo: str, meta: EncoderMeta) -> LoadedWeights:
    first: WeightsNotFoundError | None = None
    file: Path | None = None
    for name in _WEIGHT_FILES:
        try:
            file = resolve_weights(WeightsSource("hf", repo, name), meta.name)
            break
        except WeightsNotFoundError as err:
            first = first or err
    if file is None:
        raise first or WeightsNotFoundError(f"no weights file found in Hugging Face repo {repo!r}")
    try:
        config_path: Path | None = resolve_weights(WeightsSource("hf", repo, "config.json"), meta.name)
    except WeightsNotFoundError:
        config_path = None
    revision = file.parent.name if file.parent.parent.name == "snapshots" else ""
    ident = f"hf:{repo}" + (f"@{revision}" if revision else "")
    source = WeightsSource("hf", repo, file.name)
    return _from_state_dict(load_state_dict(file), read_json_config(config_path), meta.name, source, ident)


def _torchgeo_band(name: str) -> BandSpec:
    up = name.upper()
    if up.startswith("B") and up[1:].isdigit() and len(up) == 2:
        up = f"B0{up[1]}"  # torchgeo's Sentinel-2 "B1" is changescope's "B01"
    key = up if up in KNOWN_WAVELENGTHS else name
    return BandSpec(key, KNOWN_WAVELENGTHS.get(key))


def _normalize_steps(transforms: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(mean, std)`` of every kornia ``Normalize`` in a torchgeo transform, in application order."""
    if not isinstance(transforms, nn.Module):
        return []
    steps = []
    for module in transforms.modules():
        flags = getattr(module, "flags", None)
        if type(module).__name__ == "Normalize" and isinstance(flags, dict) and "mean" in flags and "std" in flags:
            steps.append((torch.as_tensor(flags["mean"]).double(), torch.as_tensor(flags["std"]).double()))
    return steps


def _torchgeo_normalization(
    transforms: Any, tmeta: dict[str, Any], bands: Sequence[BandSpec], in_chans: int
) -> Normalization:
    """Compose torchgeo's chained normalisations into one, expressed for changescope's reflectance input.

    ``Normalize(m1, s1)`` then ``Normalize(m2, s2)`` equals ``Normalize(m1 + m2 * s1, s1 * s2)``. torchgeo inputs
    are digital numbers: reflectance x 10000 for SSL4EO-S12 optical data (so the statistics are divided by 10000),
    decibels for SAR (unchanged), and 8-bit display values otherwise (mapped from a per-tile 2-98 % stretch).
    """
    mean = torch.zeros(in_chans, dtype=torch.float64)
    std = torch.ones(in_chans, dtype=torch.float64)
    for m, s in _normalize_steps(transforms):
        if m.numel() not in (1, in_chans) or s.numel() not in (1, in_chans):
            continue  # a per-channel step for another channel count: not ours to apply
        mean = mean + m.flatten().expand(in_chans) * std
        std = std * s.flatten().expand(in_chans)
    kind: Literal["meanstd", "stretch"]
    if {b.name.lower() for b in bands} <= _SAR_BANDS:
        kind, scale = "meanstd", 1.0
    elif str(tmeta.get("dataset")) in _DN_SCALE:
        kind, scale = "meanstd", _DN_SCALE[str(tmeta.get("dataset"))]
    else:
        kind, scale = "stretch", 255.0
    return Normalization(kind, mean=tuple(float(v) / scale for v in mean), std=tuple(float(v) / scale for v in std))


def _from_torchgeo(enum_name: str, meta: EncoderMeta) -> LoadedWeights:
    try:
        models = importlib.import_module("torchgeo.models")
    except ImportError as err:
        raise MissingDependencyError(
            f"weights='torchgeo:{enum_name}' need the optional torchgeo package; pip install torchgeo"
        ) from err
    cls_name, _, member = enum_name.partition(".")
    enum_cls = getattr(models, cls_name, None)
    if enum_cls is None or not member:
        raise ParameterError(
            f"weights='torchgeo:{enum_name}' is not a torchgeo weights enum; write it as "
            "'torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO'"
        )
    try:
        weights = enum_cls[member]
    except KeyError as err:
        choices = [w.name for w in enum_cls]
        raise ParameterError(
            f"weights='torchgeo:{enum_name}': {cls_name} has no {member!r}; choose one of {choices!r}"
        ) from err
    if not cls_name.lower().startswith(meta.name.lower() + "_"):
        raise ParameterError(
            f"weights='torchgeo:{enum_name}' are not {meta.name} weights; pick the encoder matching {cls_name}"
        )
    tmeta = dict(weights.meta)
    in_chans = int(tmeta["in_chans"])
    names = tmeta.get("bands")
    bands = (
        tuple(_torchgeo_band(str(n)) for n in names)
        if names is not None and len(names) == in_chans
        else tuple(BandSpec(f"band{i + 1}") for i in range(in_chans))
    )
    path = resolve_weights(WeightsSource("url", str(weights.url)), meta.name)
    norm = _torchgeo_normalization(weights.transforms, tmeta, bands, in_chans)
    licence = str(tmeta.get("license", "")) or f"see torchgeo's documentation of {enum_name}"
    ident = f"torchgeo:{enum_name}"
    return LoadedWeights(load_state_dict(path), bands, norm, WeightsSource("torchgeo", enum_name), ident, licence)


def _from_tag(tag: WeightsTag, meta: EncoderMeta) -> LoadedWeights:
    """Weights of a tag: a torchgeo-style file fetched by URL (bands and statistics from the tag), or a hub repo."""
    if tag.source.kind in ("timm", "hf"):
        return _from_hf(tag.source.ref, meta)
    path = resolve_weights(tag.source, meta.name)
    bands = tag.bands or None
    return LoadedWeights(load_state_dict(path), bands, tag.normalization, tag.source, tag.name, tag.licence)


def resolve_timm_weights(meta: EncoderMeta, weights: str | os.PathLike[str] | None) -> LoadedWeights:
    """Find the weights ``weights=`` names for a timm CNN encoder (see :mod:`changescope.encoders.timm_cnn`).

    Args:
        meta: The registered metadata (``meta.weights`` is the default source).
        weights: The ``weights=`` value, read by :func:`~changescope.encoders.weights.parse_weights`.

    Returns:
        The state dict (``None`` for random weights) with the bands, normalisation and licence it comes with.

    Raises:
        WeightsNotFoundError: Not local and cannot be downloaded, or a path that does not exist.
        ParameterError: An unknown tag or torchgeo enum, or weights of another architecture.
        MissingDependencyError: ``torchgeo:`` weights without torchgeo installed.
        CorruptFileError: A weights file cannot be read.
    """
    spec = parse_weights(weights, meta.name, schemes=("torchgeo",), default_aliases=("timm",))
    if spec.kind == "random":
        return LoadedWeights(None, RGB_BANDS, IMAGENET_REFLECTANCE, WeightsSource("none"), "random")
    if spec.kind == "default":
        return _from_hf(meta.weights.ref, meta)
    if spec.kind == "tag" and spec.tag is not None:
        return _from_tag(spec.tag, meta)
    if spec.kind == "scheme":
        return _from_torchgeo(spec.ref, meta)
    if spec.kind == "repo":
        return _from_hf(spec.ref, meta)
    if spec.kind == "path" and spec.path is not None:
        return _from_path(spec.path, meta.name)
    raise WeightsNotFoundError(
        f"weights={spec.ref!r} for encoder {meta.name!r} is not an existing file or folder, a weights tag "
        f"({list_weights(meta.name)!r}), a Hugging Face repo id, 'timm', 'random' or 'torchgeo:ENUM'; check the path"
    )
