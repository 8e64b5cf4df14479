"""``checkpoint:PATH``: encoders changescope trains itself (CACo, multimodal contrastive), saved and reloaded.

Checkpoint format (``format_version`` 1): one ``.safetensors`` file.

- Tensors: the backbone's state dict, restricted to what the feature backbone uses (no classifier or projection head),
  with the names timm gives them (``conv1.weight``, ``layer1.0.bn1.running_mean``...).
- Safetensors metadata header (string to string): ``"format": "pt"`` and ``"changescope_meta"``, a JSON object with

  - the :class:`~changescope.encoders.base.EncoderMeta` fields: ``name``, ``family``, ``bands`` (a list of
    ``{"name", "wavelength"}``, wavelength in micrometres or null), ``gsd``, ``input_size``, ``patch_size``,
    ``embed_dim``, ``normalization`` (``{"kind", "mean", "std", "low", "high"}``), ``weights``, ``licence``,
    ``description``;
  - ``architecture``: how to rebuild the backbone, ``"timm:<timm model name>"`` (e.g. ``"timm:resnet18"``);
  - ``in_chans`` and ``stage`` (the timm feature stage whose output is the feature map);
  - ``format`` (``"changescope-encoder"``), ``format_version`` and ``changescope_version``;
  - ``extra``: free JSON from the writer (training configuration, epochs, data...).

Safetensors never executes code when read, so a checkpoint is safe to open whatever its origin; pickled files are
refused without being unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from changescope.encoders.backbone import build_backbone, feature_stages, load_backbone_state
from changescope.encoders.base import Encoder
from changescope.encoders.meta import BandSpec, EncoderMeta, Normalization, WeightsSource
from changescope.encoders.weights import load_state_dict
from changescope.errors import CorruptFileError, ParameterError, UnknownFormatError, WeightsNotFoundError
from changescope.types import PathLike

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "META_KEY",
    "load_checkpoint_encoder",
    "meta_from_dict",
    "meta_to_dict",
    "read_checkpoint_meta",
    "save_checkpoint_encoder",
]

FORMAT = "changescope-encoder"
FORMAT_VERSION = 1
META_KEY = "changescope_meta"
_TIMM = "timm:"


def meta_to_dict(meta: EncoderMeta) -> dict[str, Any]:
    """JSON-ready dict of an :class:`EncoderMeta` (tuples become lists)."""
    return dataclasses.asdict(meta)


def meta_from_dict(data: dict[str, Any]) -> EncoderMeta:
    """Rebuild an :class:`EncoderMeta` from :func:`meta_to_dict` output; unknown keys are ignored.

    Raises:
        KeyError, TypeError, ValueError: A required field is missing or malformed.
    """
    norm = dict(data.get("normalization") or {})
    weights = dict(data.get("weights") or {})
    if norm.get("kind", "none") not in ("meanstd", "stretch", "none"):
        raise ValueError(f"normalization kind {norm.get('kind')!r}")
    return EncoderMeta(
        name=str(data["name"]),
        family=str(data["family"]),
        bands=tuple(
            BandSpec(str(b["name"]), None if b.get("wavelength") is None else float(b["wavelength"]))
            for b in data["bands"]
        ),
        gsd=None if data.get("gsd") is None else float(data["gsd"]),
        input_size=int(data["input_size"]),
        patch_size=int(data["patch_size"]),
        embed_dim=int(data["embed_dim"]),
        normalization=Normalization(
            kind=norm.get("kind", "none"),
            mean=tuple(float(v) for v in norm.get("mean", ())),
            std=tuple(float(v) for v in norm.get("std", ())),
            low=float(norm.get("low", 2.0)),
            high=float(norm.get("high", 98.0)),
        ),
        weights=WeightsSource(
            kind=weights.get("kind", "none"), ref=str(weights.get("ref", "")), filename=weights.get("filename")
        ),
        licence=str(data.get("licence", "")),
        description=str(data.get("description", "")),
    )


def _timm_name(architecture: str) -> str | None:
    """The timm model name of ``"timm:NAME"``, or ``None`` when the architecture is not a known timm model."""
    if not architecture.startswith(_TIMM):
        return None
    import timm

    name = architecture.removeprefix(_TIMM)
    return name if timm.is_model(name) else None


def _stage_for_stride(arch: str, stride: int) -> int:
    import timm

    stages = feature_stages(timm.create_model(arch, pretrained=False, features_only=True))
    matches = [i for i, (r, _) in enumerate(stages) if r == stride]
    if len(matches) != 1:
        raise ParameterError(
            f"cannot tell the feature stage of {arch!r} from patch_size={stride}; pass stage= (strides by stage: "
            f"{[r for r, _ in stages]!r})"
        )
    return matches[0]


def save_checkpoint_encoder(
    backbone: nn.Module,
    meta: EncoderMeta,
    path: PathLike,
    *,
    architecture: str,
    stage: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a trained backbone and its metadata as a changescope checkpoint (atomically).

    Args:
        backbone: A timm model of ``architecture`` (full or ``features_only``), e.g. a CACo query encoder.
        meta: What the encoder expects and gives: ``bands`` (with wavelengths), ``normalization``, and the stage's
            ``patch_size`` (stride) and ``embed_dim`` (channels).
        path: Output file (``.safetensors``); parent folders are created.
        architecture: ``"timm:<model name>"``.
        stage: Feature stage whose output is the feature map; inferred from ``meta.patch_size`` when omitted.
        extra: JSON-serialisable information to keep beside the weights (training configuration...).

    Returns:
        The written path.

    Raises:
        ParameterError: Unknown architecture, no bands, ``extra`` not JSON, or ``backbone``/``meta`` inconsistent
            with the architecture (the same checks loading makes, so a written checkpoint always loads).
    """
    from changescope import __version__

    arch = _timm_name(architecture)
    if arch is None:
        raise ParameterError(
            f"architecture={architecture!r} is not supported; use 'timm:<timm model name>', e.g. 'timm:resnet18'"
        )
    if not meta.bands:
        raise ParameterError("meta.bands is empty; a checkpoint must say which bands it expects (with wavelengths)")
    stage = _stage_for_stride(arch, meta.patch_size) if stage is None else stage
    model = build_backbone(arch, meta.in_chans, stage)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in backbone.state_dict().items()}
    load_backbone_state(model, state, what=f"of the {type(backbone).__name__} given", error=ParameterError)
    stride, channels = feature_stages(model)[-1]
    if (stride, channels) != (meta.patch_size, meta.embed_dim):
        raise ParameterError(
            f"meta says patch_size={meta.patch_size}, embed_dim={meta.embed_dim} but stage {stage} of {arch!r} "
            f"gives stride {stride} and {channels} channels; fix meta or stage"
        )
    header = {
        **meta_to_dict(meta),
        "architecture": architecture,
        "in_chans": meta.in_chans,
        "stage": stage,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "changescope_version": __version__,
        "extra": extra or {},
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"extra={extra!r} is not JSON-serialisable ({err})") from err
    from safetensors.torch import save_file

    tensors = {k: state[k] for k in model.state_dict()}
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", META_KEY: text})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def read_checkpoint_meta(path: PathLike) -> dict[str, Any]:
    """The ``changescope_meta`` header of a checkpoint, without loading its tensors.

    Raises:
        WeightsNotFoundError: ``path`` does not exist.
        CorruptFileError: Not a safetensors file, or no (or unreadable) changescope header.
        UnknownFormatError: Written by a newer changescope with a format this version cannot read.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(
            f"checkpoint {str(p)!r} does not exist; pass the .safetensors file written by changescope training "
            "(save_checkpoint_encoder) as 'checkpoint:PATH'"
        )
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for foreign or truncated files
        raise CorruptFileError(
            f"{str(p)!r} is not a changescope checkpoint: it is not a safetensors file ({err}); checkpoints are "
            "written by save_checkpoint_encoder (plain timm weights go to create_encoder('resnet18', weights=PATH))"
        ) from err
    if META_KEY not in header:
        raise CorruptFileError(
            f"{str(p)!r} is not a changescope checkpoint: its safetensors header has no {META_KEY!r}; for plain "
            "timm weights use create_encoder('resnet18', weights=PATH)"
        )
    try:
        data = json.loads(header[META_KEY])
    except ValueError as err:
        raise CorruptFileError(f"{str(p)!r} has an unreadable {META_KEY!r} header ({err}); re-save it") from err
    if not isinstance(data, dict):
        raise CorruptFileError(f"{str(p)!r} has a {META_KEY!r} header that is not a JSON object; re-save it")
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UnknownFormatError(
            f"{str(p)!r} uses checkpoint format_version={version!r}; this changescope reads up to {FORMAT_VERSION}, "
            "upgrade changescope"
        )
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint_encoder(path: PathLike, *, device: str | torch.device | None = None, **kwargs: Any) -> Encoder:
    """Rebuild an encoder from a changescope checkpoint (what ``create_encoder("checkpoint:PATH")`` calls).

    The backbone is rebuilt from ``architecture``, its weights loaded strictly, and the bands and normalisation
    restored from the header. ``weights_id`` is ``checkpoint:<path>#sha256=<first 16 hex digits>``.

    Args:
        path: The checkpoint file.
        device: Where to run.
        **kwargs: Not accepted (a checkpoint fixes bands and stage); present so that unknown options get a clear
            error.

    Raises:
        WeightsNotFoundError: ``path`` does not exist.
        CorruptFileError: Not a changescope checkpoint, or its tensors do not fit its architecture.
        UnknownFormatError: Unknown architecture or a newer format.
        ParameterError: Options other than ``device`` were given.
    """
    from changescope.encoders.timm_cnn import TimmCNNEncoder

    if kwargs:
        raise ParameterError(
            f"checkpoint encoders take only device=; got {sorted(kwargs)!r} (bands and stage are fixed by the file)"
        )
    p = Path(path).expanduser()
    data = read_checkpoint_meta(p)
    architecture = str(data.get("architecture", ""))
    arch = _timm_name(architecture)
    if arch is None:
        raise UnknownFormatError(
            f"{str(p)!r} declares architecture={architecture!r}, which this changescope cannot build; supported: "
            "'timm:<timm model name>' (a newer changescope or timm may know it)"
        )
    try:
        meta = meta_from_dict(data)
        stage = int(data["stage"])
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(f"{str(p)!r} has an incomplete {META_KEY!r} header (missing {err}); re-save it") from err
    if int(data.get("in_chans", meta.in_chans)) != meta.in_chans:
        raise CorruptFileError(f"{str(p)!r} declares in_chans={data['in_chans']!r} but lists {meta.in_chans} bands")
    try:
        model = build_backbone(arch, meta.in_chans, stage)
    except ParameterError as err:
        raise CorruptFileError(f"{str(p)!r} declares a backbone that cannot be built: {err}") from err
    load_backbone_state(model, load_state_dict(p), what=repr(str(p)), error=CorruptFileError)
    stride, channels = feature_stages(model)[-1]
    if (stride, channels) != (meta.patch_size, meta.embed_dim):
        raise CorruptFileError(
            f"{str(p)!r} declares patch_size={meta.patch_size}, embed_dim={meta.embed_dim} but its backbone gives "
            f"{stride} and {channels}; re-save it"
        )
    meta = dataclasses.replace(meta, weights=WeightsSource("local", str(p)))
    weights_id = f"checkpoint:{p.resolve()}#sha256={_sha256(p)[:16]}"
    return TimmCNNEncoder(model, meta, weights_id=weights_id, architecture=arch, stage=stage, device=device)
