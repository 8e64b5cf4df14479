"""The YAML configuration of ``changescope multimodal train``: pydantic models, loading, the commented default.

Published defaults (methods.md §3): pseudo-siamese ResNet-34s with 512 -> 512 -> 128 heads, InfoNCE at 0.07 plus
softplus on damaged pairs, Adam lr 1e-5 with weight decay 1e-4, batch 64, 9 epochs, ReduceLROnPlateau (x0.5,
patience 5), a negative share of 0.8 per batch. Every other field is ours and says so in :data:`DEFAULT_CONFIG_YAML`.

As in :mod:`changescope.train.config`, every model forbids unknown keys, and :func:`load_config` turns YAML and
validation errors into one-line :class:`~changescope.errors.ParameterError` messages naming the field path
(``cfg.yaml: optim.batch_size: Input should be greater than or equal to 2 (got 1)``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from changescope.errors import ParameterError
from changescope.types import PathLike

__all__ = [
    "AUTO_CLASSES",
    "DEFAULT_CONFIG_YAML",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "MultimodalConfig",
    "OptimConfig",
    "config_from_dict",
    "load_config",
]

_HINT = "`changescope multimodal default-config` prints every field with its default and meaning"
AUTO_CLASSES = 4
"""Classes of the damage head when ``n_classes`` is left to the data (BRIGHT: background, intact, damaged,
destroyed)."""
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the training windows come from.

    Attributes:
        index: The window index written by ``changescope multimodal index`` (Parquet).
        train_split: Index split trained on.
        val_split: Index split whose loss picks the best checkpoint and drives the plateau schedule.
        cache_size: Normalised images kept in memory by the patch dataset.
        workers: DataLoader worker processes (0 = load in the training process).
    """

    index: str = Field(min_length=1)
    train_split: str = "train"
    val_split: str = "val"
    cache_size: int = Field(default=8, ge=1)
    workers: int = Field(default=0, ge=0)


class ModelConfig(_Strict):
    """The pseudo-siamese network (:class:`changescope.multimodal.model.PseudoSiamese`).

    Attributes:
        architecture: timm backbone of both branches (separate weights).
        hidden_dim: Hidden width of each projection head.
        proj_dim: Projection size (the shared space).
        context: Side of the context window fed to the network, pixels.
        roi: Side of the region of interest centred in the context, pixels.
        pooling: ``"global"`` pools the whole context's feature map; ``"roi"`` pools only its cells that overlap
            the centred ROI (ours, not published).
        stage: Backbone stage whose feature map is pooled: 4 (default, published) is a ResNet's last stage
            (stride 32); 3 (stride 16) or 2 (stride 8) stop earlier (ours): with ``pooling="roi"`` the pooled cells
            then cover little more than the ROI, while the receptive field still spans the context.
        n_classes: Classes of the optional damage head (4 for BRIGHT); 0 = no head; ``None`` (default) = decided
            by the training data: 4 when the training windows carry BRIGHT damage classes (the index's
            ``damage_class``), else 0 (:meth:`with_classes`; the trainer resolves it, and the saved model and the
            run's ``config.yaml`` hold the number). A network built from an unresolved config has no head.
        class_weight: Weight of the damage head's cross-entropy in the loss.
    """

    architecture: str = "resnet34"
    hidden_dim: int = Field(default=512, ge=1)
    proj_dim: int = Field(default=128, ge=1)
    context: int = Field(default=256, ge=16)
    roi: int = Field(default=16, ge=1)
    pooling: Literal["global", "roi"] = "global"
    stage: int = Field(default=4, ge=1, le=4)
    n_classes: int | None = Field(default=None, ge=0)
    class_weight: float = Field(default=1.0, ge=0.0)

    def with_classes(self, has_classes: bool) -> ModelConfig:
        """This configuration with ``n_classes`` resolved: kept when set, else 4 if ``has_classes`` else 0."""
        if self.n_classes is not None:
            return self
        return self.model_copy(update={"n_classes": AUTO_CLASSES if has_classes else 0})

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        import timm

        if not timm.is_model(value):
            raise ValueError(f"{value!r} is not a timm model name; use e.g. 'resnet34' or 'resnet18'")
        return value

    @field_validator("roi")
    @classmethod
    def _roi_fits(cls, value: int, info: ValidationInfo) -> int:
        context = info.data.get("context")
        if isinstance(context, int) and value > context:
            raise ValueError(f"roi={value} must be <= context={context}")
        return value


class LossConfig(_Strict):
    """The supervised contrastive loss (:class:`changescope.multimodal.loss.ContrastiveChangeLoss`).

    Attributes:
        temperature: InfoNCE temperature.
        damage_weight: Weight of the softplus term of the damaged pairs (ours; the method gives none, i.e. 1).
        symmetric: Also use the SAR projections as anchors and average both directions (ours).
        negatives: ``changed`` (published): the changed pairs of the batch are the InfoNCE negatives; ``all`` (ours):
            the other unchanged pairs too, so the model learns which SAR matches which optical window everywhere.
    """

    temperature: float = Field(default=0.07, gt=0.0)
    damage_weight: float = Field(default=1.0, ge=0.0)
    symmetric: bool = False
    negatives: Literal["changed", "all"] = "changed"


class OptimConfig(_Strict):
    """Adam with ReduceLROnPlateau on the validation loss, and the ratio batch sampler.

    Attributes:
        epochs: Passes over the training windows.
        batch_size: Windows per step.
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay.
        plateau_factor: Learning-rate factor when the validation loss stops improving.
        plateau_patience: Epochs without improvement before the factor is applied.
        negative_share: Share of changed (negative) pairs in every training batch.
        batches_per_epoch: Steps per epoch; ``None`` = labelled training windows // batch size (at least 1).
        augment: Paired random flips and 90-degree rotations (the same on both images).
    """

    epochs: int = Field(default=9, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=1e-5, gt=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    plateau_factor: float = Field(default=0.5, gt=0.0, lt=1.0)
    plateau_patience: int = Field(default=5, ge=0)
    negative_share: float = Field(default=0.8, ge=0.0, le=1.0)
    batches_per_epoch: int | None = Field(default=None, ge=1)
    augment: bool = False


class MultimodalConfig(_Strict):
    """Everything ``changescope multimodal train`` needs.

    Attributes:
        data: The window index and its splits.
        model: The network.
        loss: The loss.
        optim: Optimiser, schedule, sampler and augmentation.
        out: Run folder (checkpoints, history, the best model).
        seed: Seed of everything random (initialisation, batches, augmentation).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: CPU threads torch may use; ``None`` keeps torch's default.
        monitor_gradients: Log per-layer gradient norms (mean over the epoch's steps) in the history.
    """

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    out: str = Field(min_length=1)
    seed: int = Field(default=0, ge=0)
    device: str = "auto"
    threads: int | None = Field(default=None, ge=1)
    monitor_gradients: bool = False

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
        return value


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """Valid field names of the model holding ``loc`` (for an unknown-field message)."""
    model: type[BaseModel] = MultimodalConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


def _problem(err: Any) -> str:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field; valid fields here are {_fields_at(loc)!r} (check the spelling)"
    if err["type"] == "missing":
        return f"{where}: required field is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    shown = err["type"] != "value_error" and not isinstance(err.get("input"), dict)
    return f"{where}: {msg}" + (f" (got {err['input']!r})" if shown else "")


def config_from_dict(data: Any, *, source: str = "config") -> MultimodalConfig:
    """Validate a configuration given as plain data (e.g. parsed YAML).

    Args:
        data: A mapping with the sections of :class:`MultimodalConfig`.
        source: What to name in error messages (a file name...).

    Returns:
        The validated configuration.

    Raises:
        ParameterError: ``data`` is not a mapping or fails validation; one line naming each bad field path.
    """
    if not isinstance(data, dict):
        raise ParameterError(
            f"{source}: the configuration must be a mapping of sections (data, model, loss, optim, out...), got "
            f"{type(data).__name__}; start from `changescope multimodal default-config`"
        )
    try:
        return MultimodalConfig.model_validate(data)
    except ValidationError as err:
        problems = [_problem(e) for e in err.errors()]
        raise ParameterError(f"{source}: " + "; ".join(problems) + f". Fix the field ({_HINT})") from err


def load_config(path: PathLike) -> MultimodalConfig:
    """Read and validate a YAML configuration of ``changescope multimodal train``.

    Raises:
        ParameterError: The file is missing, empty, not YAML, or a field is invalid (named with its path).
    """
    from changescope.train.config import read_yaml

    p = Path(path).expanduser()
    return config_from_dict(read_yaml(p, "changescope multimodal default-config"), source=str(p))


DEFAULT_CONFIG_YAML = """\
# changescope multimodal train --config THIS_FILE
# Supervised contrastive change detection between a pre-event optical and a post-event SAR image
# (methods.md section 3). Values in [brackets] are the published ones; fields marked (ours) are not published.
# Relative paths are relative to the directory the command runs in.

data:
  index: runs/mm/index.parquet  # window index from `changescope multimodal index`
  train_split: train    # index split trained on
  val_split: val        # split whose loss keeps the best checkpoint and drives the schedule
  cache_size: 8         # normalised images kept in memory (ours)
  workers: 0            # DataLoader worker processes (ours)

model:
  architecture: resnet34  # both branches, separate weights; optical 3 channels, SAR 1 [resnet34]
  hidden_dim: 512       # projection head 512 -> hidden -> proj [512]
  proj_dim: 128         # [128]
  context: 256          # context window side, pixels [256]
  roi: 16               # region of interest at the centre, pixels [16]
  pooling: global       # global: pool the whole context (ours); roi: pool the feature cells over the ROI (ours)
  stage: 4              # backbone stage pooled: 4 = last (stride 32) [4]; 3 (stride 16), 2 (stride 8) (ours)
  n_classes: null       # damage class head (ours): null = 4 when the index has BRIGHT classes, else none; 0 = none
  class_weight: 1.0     # weight of the class head's cross-entropy (ours)

loss:
  temperature: 0.07     # InfoNCE temperature [0.07]
  damage_weight: 1.0    # weight of softplus(cos) on damaged pairs (ours; unweighted in the method)
  symmetric: false      # also SAR anchors, both directions averaged (ours)
  negatives: changed    # InfoNCE negatives: changed pairs (published) or all other pairs (ours)

optim:
  epochs: 9             # [9]
  batch_size: 64        # [64]
  lr: 1.0e-05           # Adam [1e-5]
  weight_decay: 0.0001  # [1e-4]
  plateau_factor: 0.5   # ReduceLROnPlateau factor [0.5]
  plateau_patience: 5   # [5]
  negative_share: 0.8   # share of changed pairs per batch [0.8]
  batches_per_epoch: null  # null = labelled training windows // batch_size (ours)
  augment: false        # paired flips and 90-degree rotations [optional]

out: runs/mm/train      # run folder: checkpoints/, history.json, config.yaml, best.safetensors, best.json
seed: 0                 # same seed and config, same weights
device: auto            # auto (CUDA when available), cpu, cuda or cuda:N
threads: null           # CPU threads for torch; null = torch's default
monitor_gradients: false  # log per-layer gradient norms in history.json [optional]
"""
"""A commented configuration holding every field at its default (``changescope multimodal default-config``)."""
