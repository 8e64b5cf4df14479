"""timm CNN feature backbones: build one, describe its stages, load weights into it strictly.

Shared by the ``resnet18``/``resnet50`` encoders (:mod:`changescope.encoders.timm_cnn`), changescope's own
checkpoints (:mod:`changescope.encoders.checkpoint`) and training (:mod:`changescope.train.moco`). It does not import
the registry, so every one of them can import it.

The backbone is ``timm.create_model(arch, features_only=True, out_indices=(stage,))`` and the feature map is that
stage's output. The default ``stage=3`` has stride 16 and 256 channels (ResNet-18) or 1024 (ResNet-50); stage 4 has
stride 32 and 512 / 2048 channels; stages 0-2 have strides 2, 4, 8.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from changescope.encoders.weights import check_state_dict
from changescope.errors import ChangescopeError, ParameterError

__all__ = [
    "DEFAULT_STAGE",
    "build_backbone",
    "feature_stages",
    "first_conv_name",
    "load_backbone_state",
    "strip_prefix",
]

DEFAULT_STAGE = 3
"""Feature stage of the ResNet encoders by default (stride 16)."""


def build_backbone(architecture: str, in_chans: int, stage: int = DEFAULT_STAGE) -> nn.Module:
    """A randomly initialised ``features_only`` timm backbone returning the output of ``stage``.

    Args:
        architecture: timm model name (``"resnet18"``).
        in_chans: Input channels.
        stage: Feature stage index (``0`` = stem ... ``4`` = last ResNet stage).

    Returns:
        The backbone, in eval mode.

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
    """``(stride, channels)`` of every stage a ``features_only`` timm model returns, in output order.

    Raises:
        ParameterError: ``model`` is not a ``features_only`` timm model.
    """
    info: Any = getattr(model, "feature_info", None)
    if info is None:
        raise ParameterError(f"{type(model).__name__} is not a features_only timm model (no feature_info)")
    return [(int(r), int(c)) for r, c in zip(info.reduction(), info.channels(), strict=True)]


def first_conv_name(arch: str) -> str:
    """Name of the input convolution of a timm architecture (``"conv1"`` for ResNets, ``"conv1.0"`` for deep stems)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    name = getattr(cfg, "first_conv", None)
    return name if isinstance(name, str) and name else "conv1"


def strip_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` without a ``module.``/``backbone.``/``model.`` prefix common to every key."""
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
    sd = strip_prefix(state_dict)
    own = model.state_dict()
    children = {name for name, _ in model.named_children()}
    check_state_dict(
        own,
        sd,
        what=what,
        target=f"the {type(model).__name__} backbone",
        fix="pass weights of the same architecture",
        error=error,
        optional=lambda k: k.endswith("num_batches_tracked"),
        ignored=lambda k: k.split(".", 1)[0] not in children,
    )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
