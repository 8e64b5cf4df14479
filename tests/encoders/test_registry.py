"""Every registered encoder: metadata consistency, and a random-weights forward pass with the promised shapes.

Families added later are covered automatically. Full-size foundation models are slow to build even with random
weights, so only the training-free and CNN families and the tiny ``*_test`` variants run by default.
"""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

from changescope.encoders import create_encoder, get_meta, list_encoders, register_encoder
from changescope.encoders import registry as registry_module
from changescope.encoders.base import EncoderMeta, WeightsKind
from changescope.errors import MissingDependencyError, ParameterError, WeightsNotFoundError
from changescope.series import BandInfo

NAMES = list_encoders()
FAST_FAMILIES = {"spectral", "timm_cnn"}
PLANET = [BandInfo.from_name(n) for n in ("blue", "green", "red", "nir")]


def _param(name: str) -> object:
    meta = get_meta(name)
    fast = meta.family in FAST_FAMILIES or name.endswith("_test")
    return pytest.param(name, id=name, marks=() if fast else pytest.mark.slow)


def check_meta(meta: EncoderMeta) -> None:
    assert meta.name and meta.family
    assert meta.in_chans == len(meta.bands)
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
def test_random_weights_forward(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    meta = get_meta(name)
    kwargs: dict[str, object] = {} if meta.bands else {"bands": PLANET}
    try:
        enc = create_encoder(name, weights="random", **kwargs)
    except (WeightsNotFoundError, MissingDependencyError) as err:
        pytest.skip(f"{name} cannot be built offline with weights='random': {err}")
    check_meta(enc.meta)
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
