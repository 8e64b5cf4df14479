"""Every registered encoder: metadata consistency, and a random-weights forward pass with the promised shapes.

Families added later are covered automatically. Full-size foundation models are slow to build even with random
weights, so only the training-free, CNN and AnySat families and the tiny ``*_test`` variants run by default. The
built model's first convolution must take as many channels as the metadata lists bands.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import pytest
import torch
from torch import nn

from changescope.encoders import create_encoder, get_meta, list_encoders, register_encoder
from changescope.encoders import registry as registry_module
from changescope.encoders.base import Encoder, EncoderMeta, WeightsKind
from changescope.errors import ParameterError, WeightsNotFoundError
from changescope.series import BandInfo
from changescope.testing.checkpoints_insitu import write_anysat_hub

NAMES = list_encoders()
FAST_FAMILIES = {"spectral", "timm_cnn", "anysat"}
PLANET = [BandInfo.from_name(n) for n in ("blue", "green", "red", "nir")]

RANDOM_WEIGHTS: dict[str, Callable[[Path], str]] = {
    "anysat": lambda tmp: str(write_anysat_hub(tmp / "anysat_hub")),
}
"""Encoders with no ``weights="random"``: AnySat's code comes from torch.hub, so a tiny local hub repo stands in."""

NO_FIRST_CONV: dict[str, str] = {
    "spectral": "training-free statistics, no model",
    "anysat": "built here from the tiny local torch.hub stand-in, which projects patches with linear layers",
    "clay": "the patch kernel is generated from the band wavelengths at each call (functional conv)",
    "clay_test": "the patch kernel is generated from the band wavelengths at each call (functional conv)",
    "test_conv": "test double (changescope.testing.encoders): an einsum, no module",
    "test_conv_rgbn": "test double (changescope.testing.encoders): an einsum, no module",
}
"""Encoders whose first layer is not a ``torch.nn.Conv2d``, with the reason."""


def first_conv(enc: Encoder) -> nn.Conv2d | None:
    """The first ``Conv2d`` of the encoder's modules (in registration order), if any."""
    for value in vars(enc).values():
        if isinstance(value, nn.Module):
            for module in value.modules():
                if isinstance(module, nn.Conv2d):
                    return module
    return None


def _param(name: str) -> object:
    meta = get_meta(name)
    fast = meta.family in FAST_FAMILIES or name.endswith("_test")
    return pytest.param(name, id=name, marks=() if fast else pytest.mark.slow)


def check_meta(meta: EncoderMeta) -> None:
    assert meta.name and meta.family
    names = [b.name for b in meta.bands]
    assert all(names) and len(set(names)) == len(names), f"band names must be unique: {names}"
    for band in meta.bands:
        assert band.wavelength is None or (math.isfinite(band.wavelength) and band.wavelength > 0), band
    assert meta.gsd is None or meta.gsd > 0
    assert meta.patch_size > 0 and meta.input_size > 0
    assert meta.input_size % meta.patch_size == 0
    assert meta.embed_dim > 0
    norm = meta.normalization
    assert norm.kind in ("meanstd", "stretch", "none")
    assert len(norm.mean) == len(norm.std)
    if norm.mean and meta.bands:
        assert len(norm.mean) == meta.in_chans
    assert all(s > 0 for s in norm.std)
    assert 0 <= norm.low < norm.high <= 100
    assert meta.weights.kind in get_args(WeightsKind)
    assert meta.weights.kind == "none" or meta.weights.ref
    assert meta.licence.strip()
    assert meta.description.strip() and "\n" not in meta.description


@pytest.mark.parametrize("name", NAMES)
def test_registered_metadata_is_consistent(name: str) -> None:
    meta = get_meta(name)
    assert meta.name == name
    check_meta(meta)


@pytest.mark.parametrize("name", [_param(n) for n in NAMES])
def test_random_weights_forward(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    meta = get_meta(name)
    kwargs: dict[str, object] = {} if meta.bands else {"bands": PLANET}
    weights = RANDOM_WEIGHTS[name](tmp_path) if name in RANDOM_WEIGHTS else "random"
    enc = create_encoder(name, weights=weights, **kwargs)
    check_meta(enc.meta)
    conv = first_conv(enc)
    if name in NO_FIRST_CONV:
        assert conv is None, f"{name} has a first convolution: drop it from NO_FIRST_CONV"
    else:
        assert conv is not None, f"{name} has no nn.Conv2d: list it in NO_FIRST_CONV with the reason"
        assert conv.in_channels == enc.meta.in_chans == len(enc.meta.bands)
        if not meta.adaptive_bands and meta.family != "timm_cnn":
            assert conv.in_channels == meta.in_chans, "the registered metadata lists the model's input bands"
    assert enc.meta.family == meta.family
    c = enc.meta.in_chans or len(PLANET)
    size = enc.meta.input_size
    p = enc.patch_size
    x = torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(0))
    out = enc.feature_map(x)
    assert out.shape == (2, enc.embed_dim, size // p, size // p)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    pooled = enc.encode(x)
    assert pooled.shape == (2, enc.embed_dim) and torch.isfinite(pooled).all()


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ParameterError, match="spectral"):
        create_encoder("no-such-encoder")
    with pytest.raises(ParameterError, match="checkpoint:PATH"):
        get_meta("no-such-encoder")


def test_checkpoint_prefix_is_dispatched() -> None:
    with pytest.raises(WeightsNotFoundError, match="missing.safetensors"):
        create_encoder("checkpoint:missing.safetensors")


def test_names_register_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    with pytest.raises(ParameterError, match="twice"):
        register_encoder(get_meta("spectral"))(lambda meta, weights=None: None)
