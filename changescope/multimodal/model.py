"""The pseudo-siamese optical/SAR network of methods.md §3, and its safetensors + JSON files.

Two timm backbones of the same architecture (ResNet-34 by default) with **separate weights**: the optical branch
takes 3 channels, the SAR branch 1. Each pooled 512-d feature goes through its own projection head
512 -> 512 -> 128 (:class:`changescope.train.moco.ProjectionHead`), the projections are L2-normalised, and the
change score of a pair is ``1 - cos(optical_proj, sar_proj)`` (0 = same, 2 = opposite).

Region of interest. The label of a window describes the 16 px ROI at the centre of its 256 px context; the
network sees the whole context. ``pooling="global"`` (default) averages the whole last feature map, the plain
ResNet-34 + head reading of the method; ``pooling="roi"`` (ours, not published) averages only the feature cells
that overlap the centred ROI (at stride 32 and 256 px, the 2 x 2 centre cells), so the score describes the ROI
while the receptive field still covers the context.

Optional damage head (ours): ``Linear(1024, 512) -> ReLU -> Linear(512, n_classes)`` on the concatenated pooled
features of both branches, trained with cross-entropy when ``n_classes > 0`` (``None``, left to the trainer,
builds no head).

Files (:func:`save_model`): ``NAME.safetensors`` holds the tensors (``format: pt`` and the JSON header under
:data:`META_KEY`); ``NAME.json`` beside it holds the same header readably: the model configuration, the format
version and whatever the trainer adds (epoch, validation loss). Both are written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changescope.errors import CorruptFileError, ParameterError
from changescope.io.writers import atomic_path
from changescope.multimodal.config import ModelConfig
from changescope.train.moco import PooledBackbone, ProjectionHead
from changescope.types import PathLike

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "META_KEY",
    "PairOutput",
    "PseudoSiamese",
    "load_model",
    "model_paths",
    "save_model",
]

FORMAT = "changescope.multimodal.pseudo_siamese"
FORMAT_VERSION = 1
META_KEY = "changescope_meta"
OPTICAL_CHANNELS = 3
SAR_CHANNELS = 1


@dataclass(frozen=True)
class PairOutput:
    """What :meth:`PseudoSiamese.forward` gives for a batch of ``N`` pairs.

    Attributes:
        optical: ``(N, proj_dim)`` L2-normalised optical projections.
        sar: ``(N, proj_dim)`` L2-normalised SAR projections.
        score: ``(N,)`` change scores ``1 - cos``.
        logits: ``(N, n_classes)`` damage class logits, or ``None`` without a class head.
    """

    optical: torch.Tensor
    sar: torch.Tensor
    score: torch.Tensor
    logits: torch.Tensor | None


def roi_cells(size: int, roi: int, stride: int) -> slice:
    """Feature-map cells (along one axis) that overlap a ROI of ``roi`` px centred in ``size`` px at ``stride``.

    >>> roi_cells(256, 16, 32)
    slice(3, 5, None)
    """
    start = (size - roi) // 2
    stop = start + roi
    return slice(start // stride, max(start // stride + 1, -(-stop // stride)))


class PseudoSiamese(nn.Module):
    """Optical and SAR encoders with separate weights, projection heads and the ``1 - cos`` change score.

    Args:
        config: The architecture (:class:`~changescope.multimodal.config.ModelConfig`); ``None`` = the defaults.

    Attributes:
        optical: Optical backbone (:class:`~changescope.train.moco.PooledBackbone`, 3 channels).
        sar: SAR backbone (1 channel).
        optical_head: Optical projection head.
        sar_head: SAR projection head.
        class_head: Damage class head, or ``None``.

    Raises:
        ParameterError: An unknown architecture.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = ModelConfig() if config is None else config
        c = self.config
        self.optical = PooledBackbone(c.architecture, OPTICAL_CHANNELS, c.stage)
        self.sar = PooledBackbone(c.architecture, SAR_CHANNELS, c.stage)
        dim = self.optical.out_dim
        self.optical_head = ProjectionHead(dim, c.hidden_dim, c.proj_dim)
        self.sar_head = ProjectionHead(dim, c.hidden_dim, c.proj_dim)
        self.class_head: nn.Module | None = None
        if c.n_classes:
            self.class_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, c.n_classes))

    def _pool(self, backbone: PooledBackbone, x: torch.Tensor) -> torch.Tensor:
        fmap: torch.Tensor = backbone.features(x)[-1]
        if self.config.pooling == "roi":
            rows = roi_cells(x.shape[-2], self.config.roi, backbone.stride)
            cols = roi_cells(x.shape[-1], self.config.roi, backbone.stride)
            fmap = fmap[:, :, rows, cols]
        return fmap.mean(dim=(2, 3))

    def _check(self, optical: torch.Tensor, sar: torch.Tensor) -> None:
        for name, t, chans in (("optical", optical, OPTICAL_CHANNELS), ("sar", sar, SAR_CHANNELS)):
            if t.ndim != 4 or t.shape[1] != chans or t.shape[0] < 1:
                raise ParameterError(
                    f"{name} has shape {tuple(t.shape)!r}; pass a non-empty (N, {chans}, H, W) batch"
                    + (" (is a SAR image given as optical?)" if name == "optical" and t.ndim == 4 else "")
                )
        if optical.shape[0] != sar.shape[0] or optical.shape[2:] != sar.shape[2:]:
            raise ParameterError(
                f"optical {tuple(optical.shape)!r} and sar {tuple(sar.shape)!r} must have the same batch size and "
                "window size; crop both images to the same windows"
            )

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> PairOutput:
        """Project a batch of pairs.

        Args:
            optical: ``(N, 3, H, W)`` normalised optical windows.
            sar: ``(N, 1, H, W)`` normalised SAR windows (the same ``H, W``).

        Returns:
            The projections, change scores and (with a class head) the damage logits.

        Raises:
            ParameterError: Wrong channel counts or mismatched shapes.
        """
        self._check(optical, sar)
        f_opt, f_sar = self._pool(self.optical, optical), self._pool(self.sar, sar)
        z_opt = F.normalize(self.optical_head(f_opt), dim=1)
        z_sar = F.normalize(self.sar_head(f_sar), dim=1)
        score = 1.0 - (z_opt * z_sar).sum(dim=1)
        logits = None if self.class_head is None else self.class_head(torch.cat([f_opt, f_sar], dim=1))
        return PairOutput(optical=z_opt, sar=z_sar, score=score, logits=logits)

    @torch.no_grad()
    def change_score(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """``(N,)`` change scores ``1 - cos`` without gradients (in the current train/eval mode)."""
        return self.forward(optical, sar).score


def model_paths(path: PathLike) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for ``path`` given with or without a suffix."""
    p = Path(path).expanduser()
    base = p.with_suffix("") if p.suffix in {".safetensors", ".json"} else p
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_model(model: PseudoSiamese, path: PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write a model as ``NAME.safetensors`` plus ``NAME.json``, atomically.

    Args:
        model: The network.
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``; parent folders are created.
        extra: JSON-serialisable information kept in the header (``extra``), e.g. the epoch and validation loss.

    Returns:
        The ``.safetensors`` path.

    Raises:
        ParameterError: ``extra`` is not JSON-serialisable.
    """
    from safetensors.torch import save_file

    weights, sidecar = model_paths(path)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config.model_dump(mode="json"),
        "extra": extra or {},
    }
    try:
        text = json.dumps(header, indent=2, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"extra={extra!r} is not JSON-serialisable ({err})") from err
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", META_KEY: text})
    with atomic_path(sidecar) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return weights


def _read_header(weights: Path, sidecar: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        if sidecar.is_file():
            header = json.loads(sidecar.read_text(encoding="utf-8"))
        else:
            with safe_open(str(weights), framework="pt") as f:
                header = json.loads((f.metadata() or {}).get(META_KEY, "null"))
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{str(weights)!r} has no readable model header ({err}); save it again") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CorruptFileError(f"{str(weights)!r} is not a changescope pseudo-siamese model (format {FORMAT!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise CorruptFileError(
            f"{str(weights)!r} has format version {header.get('format_version')!r}, not {FORMAT_VERSION}; it was "
            "written by another changescope version"
        )
    return header


def load_model(path: PathLike, *, device: str | torch.device | None = None) -> tuple[PseudoSiamese, dict[str, Any]]:
    """Read a model written by :func:`save_model`, in eval mode.

    Args:
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``.
        device: Where to put the model; ``None`` = CPU.

    Returns:
        The model and its header (``model``: the configuration, ``extra``: what the trainer stored).

    Raises:
        WeightsNotFoundError: The weights file does not exist.
        CorruptFileError: The header or the tensors do not match a pseudo-siamese model.
    """
    from safetensors.torch import load_file

    from changescope.errors import WeightsNotFoundError

    weights, sidecar = model_paths(path)
    if not weights.is_file():
        raise WeightsNotFoundError(f"model file {str(weights)!r} does not exist; train one or fix the path")
    header = _read_header(weights, sidecar)
    try:
        model = PseudoSiamese(ModelConfig.model_validate(header["model"]))
        model.load_state_dict(load_file(str(weights)))
    except Exception as err:  # pydantic, safetensors and load_state_dict all raise their own types
        raise CorruptFileError(f"{str(weights)!r} does not hold the model its header describes ({err})") from err
    model.eval()
    return model.to(torch.device("cpu") if device is None else device), header
