"""``resnet18`` / ``resnet50``: timm CNNs as dense patch encoders, for any band count.

The backbone is ``timm.create_model(arch, features_only=True, out_indices=(stage,))`` and the feature map is that
stage's output. The default ``stage=3`` has stride 16 and 256 channels (ResNet-18) or 1024 (ResNet-50); stage 4 has
stride 32 and 512 / 2048 channels; stages 0-2 have strides 2, 4, 8.

Weights (``weights=``):

- ``None`` or ``"timm"``: the default timm tag (``timm/resnet18.a1_in1k``), fetched through the Hugging Face cache
  (offline mode: cache only);
- ``"random"``: random initialisation (benchmarks, tests);
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

import importlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from changescope.encoders.bands import band_indices
from changescope.encoders.base import BandSpec, Encoder, EncoderMeta, Normalization, WeightsSource
from changescope.encoders.registry import register_encoder
from changescope.encoders.weights import load_state_dict, resolve_weights
from changescope.errors import (
    BandMismatchError,
    ChangescopeError,
    CorruptFileError,
    MissingDependencyError,
    ParameterError,
    WeightsNotFoundError,
)
from changescope.series import KNOWN_WAVELENGTHS, BandInfo

__all__ = [
    "DISPLAY_WHITE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RGB_BANDS",
    "TimmCNNEncoder",
    "build_backbone",
    "create_timm_encoder",
    "feature_stages",
    "load_backbone_state",
]

DISPLAY_WHITE = 0.3
"""Reflectance shown as white when RGB-pretrained weights see reflectance (ImageNet stats are scaled by it)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RGB_BANDS: tuple[BandSpec, ...] = tuple(BandSpec(n, KNOWN_WAVELENGTHS[n]) for n in ("red", "green", "blue"))
"""Input order of RGB-pretrained weights (timm and torchvision)."""

DEFAULT_STAGE = 3
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_SAR_BANDS = {"vv", "vh", "hh", "hv"}
_DN_SCALE = {"SSL4EO-S12": 10_000.0}
"""Digital numbers per unit reflectance of torchgeo datasets stored as scaled reflectance; others are 8-bit."""


def _imagenet_normalization() -> Normalization:
    return Normalization(
        "meanstd",
        mean=tuple(round(m * DISPLAY_WHITE, 6) for m in IMAGENET_MEAN),
        std=tuple(round(s * DISPLAY_WHITE, 6) for s in IMAGENET_STD),
    )


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


def build_backbone(architecture: str, in_chans: int, stage: int = DEFAULT_STAGE) -> nn.Module:
    """A randomly initialised ``features_only`` timm backbone returning the output of ``stage``.

    Args:
        architecture: timm model name (``"resnet18"``).
        in_chans: Input channels.
        stage: Feature stage index (``0`` = stem ... ``4`` = last ResNet stage).

    Raises:
        ParameterError: Unknown architecture, no feature stages, or ``stage`` out of range.
    """
    import timm

    if not timm.is_model(architecture):
        raise ParameterError(f"architecture={architecture!r} is not a timm model; see timm.list_models()")
    if in_chans < 1:
        raise ParameterError(f"in_chans={in_chans!r} must be at least 1")
    if isinstance(stage, bool) or not isinstance(stage, int) or stage < 0:
        raise ParameterError(f"stage={stage!r} must be a feature stage index >= 0")
    try:
        model: nn.Module = timm.create_model(
            architecture, pretrained=False, in_chans=in_chans, features_only=True, out_indices=(stage,)
        )
    except IndexError as err:
        n = len(feature_stages(timm.create_model(architecture, pretrained=False, features_only=True)))
        raise ParameterError(f"stage={stage!r} is out of range for {architecture!r}; choose 0..{n - 1}") from err
    except (RuntimeError, TypeError) as err:
        raise ParameterError(f"timm model {architecture!r} cannot give dense features ({err})") from err
    return model.eval()


def feature_stages(model: nn.Module) -> list[tuple[int, int]]:
    """``(stride, channels)`` of every stage a ``features_only`` timm model returns, in output order."""
    info: Any = getattr(model, "feature_info", None)
    if info is None:
        raise ParameterError(f"{type(model).__name__} is not a features_only timm model (no feature_info)")
    return [(int(r), int(c)) for r, c in zip(info.reduction(), info.channels(), strict=True)]


def _strip_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    for prefix in ("module.", "backbone.", "model."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def load_backbone_state(
    model: nn.Module,
    state_dict: dict[str, Any],
    *,
    what: str,
    error: type[ChangescopeError] = ParameterError,
) -> None:
    """Load ``state_dict`` into a :func:`build_backbone` model, strictly.

    Every tensor of the model must be present with the same shape (BatchNorm ``num_batches_tracked`` counters
    excepted). Tensors of parts the feature model drops (classifier, later stages) are ignored; any other extra
    tensor is an error.

    Args:
        model: The backbone.
        state_dict: Tensors by name (a common ``module.``/``backbone.``/``model.`` prefix is removed).
        what: Names the weights in errors (a path or repo id).
        error: Exception class raised on mismatch.

    Raises:
        ChangescopeError: ``error`` when the tensors do not fit the model; the message lists the first offenders.
    """
    sd = _strip_prefix(state_dict)
    own = model.state_dict()
    children = {name for name, _ in model.named_children()}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own and k.split(".", 1)[0] in children]
    shapes = [
        f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and tuple(getattr(sd[k], "shape", ())) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} {items[:5]!r}{' ...' if len(items) > 5 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if items
        ]
        raise error(
            f"weights {what} do not fit the {type(model).__name__} backbone: {'; '.join(parts)}; "
            "pass weights of the same architecture"
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


@dataclass(frozen=True)
class _Loaded:
    """Weights found for a timm encoder, before adaptation."""

    state_dict: dict[str, Any] | None
    bands: tuple[BandSpec, ...] | None
    normalization: Normalization | None
    source: WeightsSource
    weights_id: str
    licence: str | None = None


def _read_config(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{str(path)!r} is not a readable JSON config ({err}); re-download it") from err
    return cfg if isinstance(cfg, dict) else {}


def _first_conv(arch: str) -> str:
    """Name of the input convolution of a timm architecture (``"conv1"`` for ResNets, ``"conv1.0"`` for deep stems)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    name = getattr(cfg, "first_conv", None)
    return name if isinstance(name, str) and name else "conv1"


def _from_state_dict(
    state_dict: dict[str, Any], config: dict[str, Any], arch: str, source: WeightsSource, weights_id: str
) -> _Loaded:
    state_dict = _strip_prefix(state_dict)
    found = str(config.get("architecture", arch)).split(".")[0]
    if found != arch:
        raise ParameterError(
            f"weights {weights_id!r} hold a {found!r} model but encoder {arch!r} was asked for; "
            f"use create_encoder({found!r}, weights=...) or weights for {arch}"
        )
    pcfg = config.get("pretrained_cfg", {})
    conv = state_dict.get(f"{pcfg.get('first_conv', _first_conv(arch))}.weight")
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
        norm = _imagenet_normalization()
    licence = pcfg.get("license")
    return _Loaded(state_dict, bands, norm, source, weights_id, str(licence) if licence else None)


def _weights_in_folder(folder: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsNotFoundError(
        f"folder {str(folder)!r} has none of {list(_WEIGHT_FILES)!r}; pass a weights file or a folder laid out like "
        "a Hugging Face timm repo (config.json + model.safetensors)"
    )


def _from_path(path: Path, arch: str) -> _Loaded:
    folder = path if path.is_dir() else None
    file = _weights_in_folder(path) if folder is not None else path
    config = _read_config(folder / "config.json" if folder is not None else None)
    ident = str(path.resolve())
    return _from_state_dict(load_state_dict(file), config, arch, WeightsSource("local", str(path)), ident)


def _from_hf(repo: str, meta: EncoderMeta) -> _Loaded:
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
    return _from_state_dict(load_state_dict(file), _read_config(config_path), meta.name, source, ident)


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


def _from_torchgeo(enum_name: str, meta: EncoderMeta) -> _Loaded:
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
    return _Loaded(load_state_dict(path), bands, norm, WeightsSource("torchgeo", enum_name), ident, licence)


def _resolve(meta: EncoderMeta, weights: str | os.PathLike[str] | None) -> _Loaded:
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if weights == "random":
        return _Loaded(None, RGB_BANDS, _imagenet_normalization(), WeightsSource("none"), "random")
    if weights is None or weights == "timm":
        return _from_hf(meta.weights.ref, meta)
    if weights.startswith("torchgeo:"):
        return _from_torchgeo(weights.removeprefix("torchgeo:"), meta)
    if weights.startswith("hf-hub:"):
        return _from_hf(weights.removeprefix("hf-hub:"), meta)
    path = Path(weights).expanduser()
    if path.exists():
        return _from_path(path, meta.name)
    if weights.count("/") == 1 and not weights.startswith((".", "/", "~")) and path.suffix not in _FILE_SUFFIXES:
        return _from_hf(weights, meta)
    raise WeightsNotFoundError(
        f"weights={weights!r} for encoder {meta.name!r} is not an existing file or folder, a Hugging Face repo id, "
        "'timm', 'random' or 'torchgeo:ENUM'; check the path"
    )


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
    loaded: _Loaded, target: tuple[BandSpec, ...], first_conv: str, arch: str
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
    bands: Sequence[BandInfo | BandSpec | str] | None, in_chans: int | None, loaded: _Loaded
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
        weights: See the module docstring (``None``, ``"timm"``, ``"random"``, path, repo id, ``"torchgeo:ENUM"``).
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
    loaded = _resolve(meta, weights)
    target = _target_bands(bands, in_chans, loaded)
    model = build_backbone(arch, len(target), stage)
    first_conv = _first_conv(arch)
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


def _resnet_meta(name: str, embed_dim: int, description: str) -> EncoderMeta:
    return EncoderMeta(
        name=name,
        family="timm_cnn",
        bands=RGB_BANDS,
        gsd=None,
        input_size=224,
        patch_size=16,
        embed_dim=embed_dim,
        normalization=_imagenet_normalization(),
        weights=WeightsSource("timm", f"timm/{name}.a1_in1k", "model.safetensors"),
        licence="Apache-2.0",
        description=description,
    )


RESNET18_META = _resnet_meta("resnet18", 256, "ResNet-18 (timm, ImageNet a1) stage-3 features; any bands via bands=")
RESNET50_META = _resnet_meta("resnet50", 1024, "ResNet-50 (timm, ImageNet a1) stage-3 features; any bands via bands=")

register_encoder(RESNET18_META)(create_timm_encoder)
register_encoder(RESNET50_META)(create_timm_encoder)
