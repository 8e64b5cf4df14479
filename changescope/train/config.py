"""The YAML configuration of ``changescope train ssl``: pydantic models, loading with clear errors, the default file.

Every model forbids unknown keys, so a typo (``batchsize:``) fails with the field path and the valid names instead of
being silently ignored. :func:`load_config` turns YAML and validation errors into
:class:`~changescope.errors.ParameterError` messages such as ``cfg.yaml: optim.batch_size: Input should be greater
than or equal to 2 (got 1)``. :data:`DEFAULT_CONFIG_YAML` documents every field, with the published values of
MoCo v2 / SeCo / CACo beside ours (``changescope train default-config`` prints it).

Paths in the file (``data.inputs``, ``out``) are used as written: relative paths are relative to the directory the
command runs in, not to the configuration file.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from changescope.errors import ParameterError
from changescope.types import PathLike

__all__ = [
    "DEFAULT_CONFIG_YAML",
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "SSLConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "with_overrides",
]

_HINT = "`changescope train default-config` prints every field with its default and meaning"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered_pair(name: str, value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {list(value)!r}")
    return value


class DataConfig(_Strict):
    """Which series to train on and how they are cut into locations.

    Attributes:
        inputs: Paths that :func:`changescope.open` reads (folders of dated GeoTIFFs, Zarr/NetCDF stores, OSCD
            cities, DynamicEarthNet roots or AOIs...). Every AOI of a multi-AOI DynamicEarthNet root is used.
            All inputs must have the same bands in the same order.
        format: Reader name forced for every input; ``None`` detects it per input.
        size: Side of a location's crop, in pixels.
        stride: Step between locations, in pixels; ``None`` = ``size`` (no overlap).
        min_valid: Least fraction of valid pixels for a date to be usable at a location.
        min_dates: Least usable dates per location (and at least 2 in each half, so at least 4).
        max_locations: Keep a seeded random subset of this many locations; ``None`` keeps all.
    """

    inputs: list[str] = Field(min_length=1)
    format: str | None = None
    size: int = Field(default=96, ge=8)
    stride: int | None = Field(default=None, ge=1)
    min_valid: float = Field(default=0.9, ge=0.0, le=1.0)
    min_dates: int = Field(default=4, ge=1)
    max_locations: int | None = Field(default=None, ge=1)

    @field_validator("inputs")
    @classmethod
    def _non_empty_paths(cls, value: list[str]) -> list[str]:
        if any(not v.strip() for v in value):
            raise ValueError(f"inputs must be non-empty paths, got {value!r}")
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        from changescope.io.registry import list_readers

        if value is not None and value not in list_readers():
            raise ValueError(f"format {value!r} is unknown; choose one of {list_readers()!r}, or null to detect it")
        return value


class ModelConfig(_Strict):
    """The backbone and the projection head.

    Attributes:
        architecture: timm model name of the backbone (``resnet18``, ``resnet50``...).
        stage: Backbone feature stage that is pooled and saved (4 = the last ResNet stage, stride 32).
        hidden_dim: Hidden width of the MLP head; ``None`` = the backbone's channels (512 -> 512 -> 128).
        proj_dim: Output size of the projection head (the contrastive embedding).
    """

    architecture: str = "resnet18"
    stage: int = Field(default=4, ge=1)
    hidden_dim: int | None = Field(default=None, ge=1)
    proj_dim: int = Field(default=128, ge=1)

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        import timm

        if not timm.is_model(value):
            raise ValueError(f"{value!r} is not a timm model name; use e.g. 'resnet18' or 'resnet50'")
        return value


class SSLConfig(_Strict):
    """The self-supervised objective.

    Attributes:
        mode: ``"moco"`` (positives are augmentations of one image), ``"seco"`` (also another date of the same
            location) or ``"caco"`` (short-term positives, long-term negatives gated by the change estimate).
        queue_size: Negative keys kept in the MoCo queue; a multiple of ``optim.batch_size``.
        momentum: Key encoder momentum.
        temperature: InfoNCE temperature.
        change_ema: Weight of the new observation in the running change ratio (CACo: 0.2, i.e. (4 old + new) / 5).
        bn_splits: Chunks each batch is forwarded in, to emulate MoCo's shuffled BatchNorm on one device.
    """

    mode: Literal["moco", "seco", "caco"] = "caco"
    queue_size: int = Field(default=16384, ge=0)
    momentum: float = Field(default=0.999, ge=0.0, lt=1.0)
    temperature: float = Field(default=0.07, gt=0.0)
    change_ema: float = Field(default=0.2, gt=0.0, le=1.0)
    bn_splits: int = Field(default=1, ge=1)


class AugmentConfig(_Strict):
    """Multispectral-safe augmentations (:class:`changescope.train.augment.Augment`).

    Attributes:
        out_size: Side of the augmented images fed to the network, in pixels.
        scale: Range of the random crop's area as a fraction of the crop.
        brightness: Per-band brightness factor drawn in ``[1 - brightness, 1 + brightness]``.
        contrast: Per-band contrast factor drawn in ``[1 - contrast, 1 + contrast]``.
        jitter_p: Probability of brightness and contrast jitter.
        blur_sigma: Range of the Gaussian blur sigma, in output pixels.
        blur_p: Probability of blurring.
        hflip: Random left-right flips.
        vflip: Random upside-down flips.
        rot90: Random rotations by multiples of 90 degrees.
    """

    out_size: int = Field(default=64, ge=8)
    scale: tuple[float, float] = (0.2, 1.0)
    brightness: float = Field(default=0.4, ge=0.0, le=1.0)
    contrast: float = Field(default=0.4, ge=0.0, le=1.0)
    jitter_p: float = Field(default=0.8, ge=0.0, le=1.0)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = Field(default=0.5, ge=0.0, le=1.0)
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < value[0] <= 1.0 or not 0.0 < value[1] <= 1.0:
            raise ValueError(f"scale values are area fractions in (0, 1], got {list(value)!r}; e.g. [0.2, 1.0]")
        return _ordered_pair("scale", value)

    @field_validator("blur_sigma")
    @classmethod
    def _sigma_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] <= 0.0:
            raise ValueError(f"blur_sigma values must be > 0, got {list(value)!r}; e.g. [0.1, 2.0]")
        return _ordered_pair("blur_sigma", value)


class OptimConfig(_Strict):
    """SGD with a step schedule, as MoCo v2.

    Attributes:
        epochs: Passes over the locations.
        batch_size: Locations per step (the last incomplete batch of an epoch is dropped).
        lr: Learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        milestones: Epochs after which the learning rate is multiplied by ``gamma``; increasing, each < ``epochs``.
        gamma: Learning-rate factor at each milestone.
    """

    epochs: int = Field(default=200, ge=1)
    batch_size: int = Field(default=256, ge=2)
    lr: float = Field(default=0.03, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    milestones: list[int] = Field(default_factory=lambda: [120, 160])
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)

    @field_validator("milestones")
    @classmethod
    def _milestones_in_range(cls, value: list[int], info: ValidationInfo) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(value)) or any(m < 1 for m in value):
            raise ValueError(f"milestones must be strictly increasing epochs >= 1, got {value!r}")
        epochs = info.data.get("epochs")
        if isinstance(epochs, int) and value and value[-1] >= epochs:
            raise ValueError(
                f"milestones {value!r} must all be < epochs={epochs}; lower them (e.g. 60% and 80% of the epochs) "
                "or use [] for a constant learning rate"
            )
        return value


class TrainConfig(_Strict):
    """Everything ``changescope train ssl`` needs.

    Attributes:
        data: The series and their locations.
        model: Backbone and head.
        ssl: The contrastive objective.
        augment: Augmentations.
        optim: Optimiser and schedule.
        out: Run folder (checkpoints, histories, the final encoder).
        seed: Seed of everything random (model initialisation, batches, views, augmentations).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: CPU threads torch may use; ``None`` keeps torch's default.
    """

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    ssl: SSLConfig = Field(default_factory=SSLConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    out: str = Field(min_length=1)
    seed: int = Field(default=0, ge=0)
    device: str = "auto"
    threads: int | None = Field(default=None, ge=1)

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        batch = self.optim.batch_size
        if self.ssl.queue_size % batch:
            raise ValueError(
                f"ssl.queue_size={self.ssl.queue_size} must be a multiple of optim.batch_size={batch}; "
                f"use e.g. {max(batch, self.ssl.queue_size // batch * batch)}"
            )
        if self.ssl.bn_splits > batch:
            raise ValueError(f"ssl.bn_splits={self.ssl.bn_splits} must be <= optim.batch_size={batch}")
        return self


# ---------------------------------------------------------------------------------------------------------------------
# loading


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class holding the field at ``loc`` (for listing valid names), or ``None``."""
    model: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _describe(err: Any) -> str:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    where = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc)
        valid = sorted(model.model_fields) if model is not None else []
        return f"{where}: unknown field; valid fields here are {valid!r} (check the spelling)"
    if kind == "missing":
        return f"{where}: required field is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    show = loc and kind != "value_error" and not isinstance(err.get("input"), dict)
    got = f" (got {err['input']!r})" if show else ""
    return f"{where}: {msg}{got}" if where else msg


def _validation_message(source: str, err: ValidationError) -> str:
    problems = [_describe(e) for e in err.errors()]
    return f"{source}: " + "; ".join(problems) + f". Fix the field{'s' if len(problems) > 1 else ''} ({_HINT})"


def config_from_dict(data: Any, *, source: str = "config") -> TrainConfig:
    """Validate a configuration given as plain data (e.g. parsed YAML).

    Args:
        data: A mapping with the sections of :class:`TrainConfig`.
        source: What to name in error messages (a file name, ``"--epochs"``...).

    Returns:
        The validated configuration.

    Raises:
        ParameterError: ``data`` is not a mapping or fails validation; the message names each bad field path.
    """
    if not isinstance(data, dict):
        raise ParameterError(
            f"{source}: the configuration must be a mapping of sections (data, model, ssl, augment, optim, out...), "
            f"got {type(data).__name__}; start from `changescope train default-config`"
        )
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ParameterError(_validation_message(source, err)) from err


def load_config(path: PathLike) -> TrainConfig:
    """Read and validate a YAML training configuration.

    Args:
        path: The YAML file.

    Returns:
        The validated configuration.

    Raises:
        ParameterError: The file is missing, is not valid YAML, or a field is invalid; the message names the file
            and the field path (``cfg.yaml: optim.batch_size: ...``) and says what to do.
    """
    p = Path(path).expanduser()
    data = read_yaml(p, f"changescope train default-config --out {p}")
    return config_from_dict(data, source=str(p))


def read_yaml(path: Path, make: str) -> Any:
    """The data of a YAML configuration file, with one-line errors that say how to make one (``make``).

    Raises:
        ParameterError: The file is missing, unreadable, empty or not valid YAML.
    """
    import yaml

    if not path.is_file():
        raise ParameterError(f"config file {str(path)!r} does not exist; write one with `{make}` and edit it")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ParameterError(f"{path}: invalid YAML{where}: {problem}; fix the syntax") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ParameterError(f"{path}: cannot be read as UTF-8 text ({err}); give a YAML file") from err
    if data is None:
        raise ParameterError(f"{path}: the file is empty; start from `{make}`")
    return data


def with_overrides(config: TrainConfig, *, out: PathLike | None = None, epochs: int | None = None) -> TrainConfig:
    """Return ``config`` with ``out`` and/or ``optim.epochs`` replaced, validated again.

    Args:
        config: The configuration.
        out: New run folder (``--out``).
        epochs: New number of epochs (``--epochs``).

    Raises:
        ParameterError: The result is invalid (e.g. ``optim.milestones`` not below the new epochs).
    """
    data = config.model_dump(mode="python")
    names = []
    if out is not None:
        data["out"] = str(out)
        names.append("--out")
    if epochs is not None:
        data["optim"]["epochs"] = epochs
        names.append("--epochs")
    return config_from_dict(data, source=" and ".join(names) or "config") if names else config


DEFAULT_CONFIG_YAML = """\
# changescope train ssl --config THIS_FILE
# Self-supervised training of an in-domain encoder on your own unlabelled time series (MoCo v2, SeCo or CACo).
# Values in [brackets] are the published ones (MoCo v2 / SeCo / CACo, see methods.md section 2); ours are
# smaller where the published ones assume 100k locations and a GPU cluster.
# Relative paths are relative to the directory the command runs in.

data:
  # Series to train on: anything `changescope.open` reads. Every AOI of a DynamicEarthNet root is used.
  # All inputs must have the same bands in the same order.
  inputs:
    - path/to/series
  format: null          # force a reader (e.g. dynamicearthnet); null = detect per input
  size: 96              # crop side per location, pixels
  stride: null          # step between locations, pixels; null = size (no overlap)
  min_valid: 0.9        # least valid-pixel fraction for a date to be usable at a location
  min_dates: 4          # least usable dates per location (at least 2 per half are always required)
  max_locations: null   # keep a seeded random subset of this many locations; null = all

model:
  architecture: resnet18  # timm backbone [resnet18 or resnet50]
  stage: 4                # feature stage pooled and saved (4 = last ResNet stage, stride 32)
  hidden_dim: null        # MLP head hidden width; null = backbone channels [512 -> 512 -> 128 on resnet18]
  proj_dim: 128           # projection size [128]

ssl:
  mode: caco            # moco: augmentation positives; seco: + another date as positive;
                        # caco: short-term positives, long-term negatives only where the location changed
  queue_size: 16384     # negatives in the queue, a multiple of optim.batch_size [16384]
  momentum: 0.999       # key encoder momentum [0.999]
  temperature: 0.07     # InfoNCE temperature [0.07]
  change_ema: 0.2       # weight of a new change ratio in its running average [0.2 = (4 old + new) / 5]
  bn_splits: 1          # forward each batch in this many chunks (emulates shuffled BatchNorm on one device)

augment:
  out_size: 64          # network input side, pixels [224]
  scale: [0.2, 1.0]     # random resized crop area fraction [0.2-1]
  brightness: 0.4       # per-band brightness jitter [0.4]
  contrast: 0.4         # per-band contrast jitter [0.4]
  jitter_p: 0.8         # probability of jitter [0.8]
  blur_sigma: [0.1, 2.0]  # Gaussian blur sigma range [0.1-2]
  blur_p: 0.5           # probability of blur [0.5]
  hflip: true           # random left-right flips [yes]
  vflip: true           # random upside-down flips (not in SeCo/CACo; fine for nadir images)
  rot90: true           # random 90-degree rotations (not in SeCo/CACo; fine for nadir images)

optim:
  epochs: 200           # [200; the CACo run used 1000 with milestones 600, 800]
  batch_size: 256       # locations per step [256]
  lr: 0.03              # SGD learning rate [0.03]
  momentum: 0.9         # SGD momentum [0.9]
  weight_decay: 0.0001  # [1e-4]
  milestones: [120, 160]  # epochs after which lr is multiplied by gamma, each < epochs [120, 160]
  gamma: 0.1            # [0.1]

out: runs/caco          # run folder: checkpoints/, ratios/, history.json, config.yaml, encoder.safetensors
seed: 0                 # same seed and config, same encoder
device: auto            # auto (CUDA when available), cpu, cuda or cuda:N
threads: null           # CPU threads for torch; null = torch's default
"""
"""A commented configuration holding every field at its default (``changescope train default-config``)."""
