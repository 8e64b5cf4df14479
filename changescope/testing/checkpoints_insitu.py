"""Tiny, seeded stand-ins for the in-domain foundation models' weights: Clay checkpoints and an AnySat hub repo.

- :func:`write_clay_checkpoint` writes a checkpoint in the official Clay v1.5 layout (a Lightning file with
  ``state_dict["model.encoder.…"]`` plus decoder/teacher tensors and training metadata), for the tiny
  ``clay_test`` configuration by default, so ``create_encoder("clay_test", weights=PATH)`` runs the real loader.
- :func:`write_anysat_hub` writes a local torch.hub repository whose ``hubconf.py`` defines ``anysat(pretrained,
  **kwargs)`` returning a tiny module with AnySat's forward signature (``model(data, patch_size, output=...)``)
  and loading its random weights from a safetensors file beside it, so ``create_encoder("anysat",
  weights=FOLDER)`` runs the real ``torch.hub.load(FOLDER, "anysat", source="local")`` path.

Everything is deterministic for a given seed and leaves the global random state untouched.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from changescope.encoders.clay_model import CLAY_CONFIGS, ClayEncoderNet

__all__ = ["ANYSAT_HUB_FILES", "write_anysat_hub", "write_clay_checkpoint"]


class _AttributeDict(dict[str, Any]):
    """A dict subclass, like Lightning's ``AttributeDict`` of hyper-parameters."""


def write_clay_checkpoint(
    path: Path | str,
    *,
    name: str = "clay_test",
    seed: int = 0,
    drop_keys: Sequence[str] = (),
    extra_keys: Mapping[str, torch.Tensor] | None = None,
    refused_metadata: bool = False,
) -> Path:
    """Write a random Clay encoder in the official Lightning checkpoint layout.

    Args:
        path: Output file (``.ckpt``).
        name: Configuration in :data:`~changescope.encoders.clay_model.CLAY_CONFIGS`.
        seed: Random seed of the weights.
        drop_keys: Encoder keys (without ``model.encoder.``) to leave out, to test strict loading.
        extra_keys: Tensors to add under ``model.encoder.``, to test strict loading.
        refused_metadata: Store the hyper-parameters as objects that ``torch.load(weights_only=True)`` refuses (a
            dict subclass holding a ``pathlib`` path and a numpy scalar), as Lightning checkpoints can.

    Returns:
        The path written.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ClayEncoderNet(CLAY_CONFIGS[name])
        dim = CLAY_CONFIGS[name].dim
        others = {
            "model.decoder.mask_patch": torch.randn(dim // 2),
            "model.decoder.transformer.norm.weight": torch.ones(dim // 2),
            "model.teacher.cls_token": torch.randn(1, 1, 8),
            "model.proj.weight": torch.randn(8, dim),
        }
    state = {f"model.encoder.{k}": v.clone() for k, v in net.state_dict().items() if k not in set(drop_keys)}
    state.update({f"model.encoder.{k}": v for k, v in (extra_keys or {}).items()})
    state.update(others)
    hparams: dict[str, Any] = {"model_size": name, "mask_ratio": 0.75, "patch_size": 8, "shuffle": False}
    if refused_metadata:  # objects Lightning checkpoints carry that weights_only loading refuses
        hparams["metadata_path"] = pathlib.PurePosixPath("configs/metadata.yaml")
        hparams["lr"] = np.float64(1e-5)
        hparams = _AttributeDict(hparams)
    ckpt = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state,
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": hparams,
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return out


ANYSAT_HUB_FILES = ("hubconf.py", "tiny_anysat.json", "tiny_anysat.safetensors", "tiny_anysat.pth")
"""Files :func:`write_anysat_hub` creates."""

_HUBCONF = '''"""Tiny stand-in for gastruc/AnySat's hubconf.py (written by changescope.testing.checkpoints_insitu)."""

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

dependencies = ["torch", "safetensors"]

HERE = Path(__file__).resolve().parent
CONFIG = json.loads((HERE / "tiny_anysat.json").read_text())
RES = {"s2": 10.0, "l7": 30.0, "s1-asc": 10.0, "s1": 10.0, "alos": 30.0, "naip": 1.25, "spot": 1.0, "aerial": 0.2}
CHANNELS = {"s2": 10, "l7": 6, "s1-asc": 2, "s1": 3, "alos": 3, "naip": 4, "spot": 3, "aerial": 4}
SUBPATCH = {"naip": 8, "spot": 10, "aerial": 10}


class TinyAnyModule(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        self.embed_dim = embed_dim
        self.projectors = nn.ModuleDict({m.replace("-", "_"): nn.Linear(c, embed_dim) for m, c in CHANNELS.items()})
        self.date = nn.Linear(2, embed_dim)
        self.mix = nn.Linear(embed_dim, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(embed_dim))

    def _run(self, x, scale, output, keep):
        mods = [k for k in x if not (k.endswith("_dates") or k.endswith("_mask"))]
        m = keep or mods[0]
        data = x[m]
        proj = self.projectors[m.replace("-", "_")]
        if data.ndim == 5:
            doy = x[m + "_dates"].float() * (2 * math.pi / 365)
            code = self.date(torch.stack((doy.sin(), doy.cos()), dim=-1))
            pix = (proj(data.permute(0, 1, 3, 4, 2)) + code[:, :, None, None, :]).mean(dim=1)
        else:
            pix = proj(data.permute(0, 2, 3, 1))
        pix = pix.permute(0, 3, 1, 2)
        patch_px = round(scale * 10 / RES[m])
        sub_px = SUBPATCH.get(m, 1)
        patches = torch.tanh(self.mix(F.avg_pool2d(pix, patch_px).permute(0, 2, 3, 1)))
        if output == "tile":
            return patches.mean(dim=(1, 2)) + self.cls_token
        if output == "dense":
            k = patch_px // sub_px
            rep = patches.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2)
            dense = torch.cat((rep, F.avg_pool2d(pix, sub_px).permute(0, 2, 3, 1)), dim=-1)
            if CONFIG["layout"] == "early":
                b, hs, ws, d2 = dense.shape
                h, w = hs // k, ws // k
                dense = dense.reshape(b, h, k, w, k, d2).permute(0, 1, 3, 2, 4, 5).reshape(b, h * w, k * k, d2)
            return dense
        if CONFIG["layout"] == "early":
            return patches.flatten(1, 2)
        return patches


if CONFIG["layout"] == "early":
    class TinyRelease(TinyAnyModule):
        def forward_release(self, x, scale, output="patch", modality_keep=""):
            return self._run(x, scale, output, modality_keep)
else:
    class TinyRelease(TinyAnyModule):
        def forward_release(self, x, scale, output="patch", output_modality=""):
            return self._run(x, scale, output, output_modality)


class AnySat(nn.Module):
    def __init__(self, flash_attn=True, **kwargs):
        super().__init__()
        self.model = TinyRelease(CONFIG["embed_dim"])

    def forward(self, x, patch_size, **kwargs):
        return self.model.forward_release(x, patch_size // 10, **kwargs)


def anysat(pretrained=False, **kwargs):
    model = AnySat(**kwargs)
    if pretrained:
        from safetensors.torch import load_file

        model.model.load_state_dict(load_file(str(HERE / "tiny_anysat.safetensors")))
    return model
'''


def write_anysat_hub(
    folder: Path | str,
    *,
    seed: int = 0,
    embed_dim: int = 16,
    layout: Literal["current", "early"] = "current",
) -> Path:
    """Write a local torch.hub repository holding a tiny AnySat stand-in.

    Args:
        folder: Output folder (created).
        seed: Random seed of the weights.
        embed_dim: Token dimension ``D`` (``output="dense"`` gives ``2 D``).
        layout: Output layout: ``"current"`` releases return ``(B, h, w, D)`` and take ``output_modality=``;
            ``"early"`` ones ``(B, h * w, D)`` (dense: ``(B, patches, sub-patches, 2 D)``) and ``modality_keep=``.

    Returns:
        The folder, holding :data:`ANYSAT_HUB_FILES` (the ``.pth`` is the same weights as a ``{"state_dict": …}``
        file, for ``create_encoder("anysat", checkpoint=...)``).
    """
    from safetensors.torch import save_file

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / "hubconf.py").write_text(_HUBCONF)
    (root / "tiny_anysat.json").write_text(json.dumps({"embed_dim": embed_dim, "layout": layout}))
    hub_load: Any = torch.hub.load  # untyped in torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = hub_load(str(root), "anysat", source="local", pretrained=False)
    state = {k: v.contiguous() for k, v in model.model.state_dict().items()}
    save_file(state, str(root / "tiny_anysat.safetensors"))
    torch.save({"state_dict": state}, root / "tiny_anysat.pth")
    return root
