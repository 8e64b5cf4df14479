"""The contract of :class:`~changescope.encoders.base.Encoder`, checked on every built-in encoder.

Each encoder is built from a tiny random checkpoint in its real format where one exists (timm state dict, timm
DINOv2 file, transformers SAM 2 folder, Clay Lightning checkpoint, AnySat torch.hub repo, changescope checkpoint);
the full-size foundation models, which have no tiny variant, are built with ``weights="random"`` and marked slow.
A built-in encoder without a builder here fails, so a new family cannot skip the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from changescope.encoders import create_encoder, list_encoders
from changescope.encoders.bands import band_indices, normalize
from changescope.encoders.base import Encoder
from changescope.encoders.catalog import BUILTIN_ENCODERS
from changescope.errors import BandMismatchError
from changescope.series import BandInfo
from changescope.testing.checkpoints import write_changescope_checkpoint, write_timm_state_dict
from changescope.testing.checkpoints_insitu import write_anysat_hub, write_clay_checkpoint
from changescope.testing.checkpoints_vit import write_tiny_hf_sam2, write_tiny_timm_dinov2

PLANET = [BandInfo.from_name(n) for n in ("blue", "green", "red", "nir")]

Builder = Callable[[Path], Encoder]

BUILDERS: dict[str, Builder] = {
    "spectral": lambda tmp: create_encoder("spectral", bands=PLANET),
    "resnet18": lambda tmp: create_encoder("resnet18", weights=str(write_timm_state_dict(tmp / "r18.pth"))),
    "resnet50": lambda tmp: create_encoder("resnet50", weights="random", bands=PLANET),
    "dinov2_test": lambda tmp: create_encoder("dinov2_test", weights=str(write_tiny_timm_dinov2(tmp / "d.pth"))),
    "dinov2_s": lambda tmp: create_encoder("dinov2_s", weights="random"),
    "dinov2_b": lambda tmp: create_encoder("dinov2_b", weights="random"),
    "sam2_test": lambda tmp: create_encoder("sam2_test", weights=str(write_tiny_hf_sam2(tmp / "sam2"))),
    "sam2": lambda tmp: create_encoder("sam2", weights="random"),
    "clay_test": lambda tmp: create_encoder(
        "clay_test", weights=str(write_clay_checkpoint(tmp / "clay.ckpt")), bands=PLANET
    ),
    "clay": lambda tmp: create_encoder("clay", weights="random", bands=PLANET),
    "anysat": lambda tmp: create_encoder("anysat", weights=str(write_anysat_hub(tmp / "hub"))),
    "checkpoint:": lambda tmp: create_encoder(f"checkpoint:{write_changescope_checkpoint(tmp / 'c.safetensors')}"),
}
"""How to build each encoder offline, by registry name (``checkpoint:`` = a changescope checkpoint)."""

SLOW = {"dinov2_s", "dinov2_b", "sam2", "clay"}
"""Full-size models without a tiny variant: random weights, slow to build."""


def _param(name: str) -> object:
    return pytest.param(name, id=name.rstrip(":"), marks=pytest.mark.slow if name in SLOW else ())


NAMES = [*sorted(BUILTIN_ENCODERS), "checkpoint:"]


def test_every_builtin_encoder_has_a_builder() -> None:
    assert set(BUILTIN_ENCODERS) <= set(list_encoders())
    assert set(BUILTIN_ENCODERS) | {"checkpoint:"} == set(BUILDERS), "add a builder for the new encoder"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Encoder]:
    """Builds each encoder once per module (in offline mode, from tiny local files)."""
    cache: dict[str, Encoder] = {}

    def get(name: str) -> Encoder:
        if name not in cache:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("CHANGESCOPE_OFFLINE", "1")
                mp.setenv("HF_HUB_OFFLINE", "1")
                cache[name] = BUILDERS[name](tmp_path_factory.mktemp(name.rstrip(":") or "enc"))
        return cache[name]

    return get


def _tiles(enc: Encoder, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Reflectance-like tiles of 4 x 4 patches in the encoder's bands."""
    size = 4 * enc.patch_size
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, enc.meta.in_chans, size, size, generator=gen) * 0.4


def _input(enc: Encoder, raw: torch.Tensor) -> torch.Tensor:
    return normalize(raw, enc.meta.normalization, keep_nan=enc.meta.accepts_nan)


@pytest.mark.parametrize("name", [_param(n) for n in NAMES])
def test_shapes(built: Callable[[str], Encoder], name: str) -> None:
    enc = built(name)
    assert enc.meta.in_chans > 0, "a built encoder knows its bands"
    x = _input(enc, _tiles(enc))
    fmap = enc.feature_map(x)
    g = x.shape[-1] // enc.patch_size
    assert fmap.shape == (2, enc.embed_dim, g, g)
    assert fmap.dtype == torch.float32 and torch.isfinite(fmap).all()
    pooled = enc.encode(x)
    assert pooled.shape == (2, enc.embed_dim) and torch.isfinite(pooled).all()


@pytest.mark.parametrize("name", [_param(n) for n in NAMES])
def test_determinism(built: Callable[[str], Encoder], name: str) -> None:
    enc = built(name)
    x = _input(enc, _tiles(enc, seed=1))
    first = enc.feature_map(x.clone())
    assert torch.equal(first, enc.feature_map(x.clone()))
    assert torch.equal(enc.encode(x.clone()), enc.encode(x.clone()))
    torch.testing.assert_close(enc.feature_map(x[:1].clone()), first[:1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [_param(n) for n in NAMES])
def test_invalid_pixels(built: Callable[[str], Encoder], name: str) -> None:
    enc = built(name)
    raw = _tiles(enc, seed=2)
    holed = raw.clone()
    p = enc.patch_size
    holed[:, :, :p, :p] = torch.nan  # one whole patch invalid
    holed[0, 0, -1, -1] = torch.nan  # and one pixel in one band
    x = _input(enc, holed)
    assert enc.meta.accepts_nan or torch.isfinite(x).all(), "normalize fills invalid pixels for this encoder"
    fmap = enc.feature_map(x)
    assert torch.isfinite(fmap).all() and torch.isfinite(enc.encode(x)).all()
    if enc.meta.accepts_nan:  # the encoder masks invalid pixels itself: untouched patches keep their features
        clean = enc.feature_map(_input(enc, raw))
        torch.testing.assert_close(fmap[:, :, 1:-1, 1:-1], clean[:, :, 1:-1, 1:-1])


@pytest.mark.parametrize("name", [_param(n) for n in NAMES])
def test_band_mismatch(built: Callable[[str], Encoder], name: str) -> None:
    enc = built(name)
    x = _input(enc, _tiles(enc))
    with pytest.raises(BandMismatchError):
        enc.feature_map(torch.cat([x, x[:, :1]], dim=1))
    with pytest.raises(BandMismatchError):
        enc.feature_map(x[:, 1:])
    series = [BandInfo(b.name, b.wavelength) for b in enc.meta.bands]
    assert band_indices(series, enc.meta) == list(range(len(series)))
    with pytest.raises(BandMismatchError, match=repr(enc.meta.bands[0].name)):
        band_indices(series[1:], enc.meta)
