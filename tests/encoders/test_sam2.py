"""SAM 2 image encoder: tiny save_pretrained checkpoints load through create_encoder; shapes, sizes, offline mode."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file

from changescope.encoders import create_encoder, get_meta, list_encoders
from changescope.encoders.sam2 import SAM2_REPO, Sam2Encoder, dense_stride, size_multiple, tiny_sam2_config
from changescope.encoders.vit import IMAGENET_MEAN, IMAGENET_STD
from changescope.errors import ParameterError, WeightsNotFoundError
from changescope.testing.checkpoints_vit import install_in_hub_cache, write_tiny_hf_dinov2, write_tiny_hf_sam2


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sam2")
    return {
        "full": write_tiny_hf_sam2(root / "full"),
        "vision": write_tiny_hf_sam2(root / "vision", vision_only=True),
    }


@pytest.fixture(scope="module")
def encoder(ckpts: dict[str, Path]) -> Sam2Encoder:
    enc = create_encoder("sam2", weights=str(ckpts["full"]))
    assert isinstance(enc, Sam2Encoder)
    return enc


def tiles(n: int = 2, h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_meta() -> None:
    meta = get_meta("sam2")
    assert {"sam2", "sam2_test"} <= set(list_encoders())
    assert meta.family == "sam2"
    assert [b.name for b in meta.bands] == ["red", "green", "blue"]
    assert len(meta.bands) == meta.in_chans == 3
    assert (meta.patch_size, meta.embed_dim, meta.input_size) == (16, 256, 1024)
    assert meta.weights.kind == "hf"
    assert meta.weights.ref == SAM2_REPO == "facebook/sam2.1-hiera-base-plus"
    assert (meta.normalization.mean, meta.normalization.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert meta.licence == "Apache-2.0"


def test_tiny_config_geometry() -> None:
    vision = tiny_sam2_config().vision_config
    assert dense_stride(vision) == 16
    assert size_multiple(vision) == 32
    assert vision.fpn_hidden_size == 256


def test_full_model_folder_loads(encoder: Sam2Encoder, ckpts: dict[str, Path]) -> None:
    assert encoder.weights_id == str(ckpts["full"])
    saved = load_file(str(ckpts["full"] / "model.safetensors"))
    loaded = encoder.vision.state_dict()
    for key in ("backbone.patch_embed.projection.weight", "backbone.pos_embed", "neck.convs.1.weight"):
        torch.testing.assert_close(loaded[key], saved["vision_encoder." + key], rtol=0, atol=0)
    assert encoder.no_memory_embedding is not None
    torch.testing.assert_close(encoder.no_memory_embedding, saved["no_memory_embedding"].reshape(-1))


def test_feature_map_is_the_stride16_fpn_level(encoder: Sam2Encoder) -> None:
    x = tiles(2, 64, 96)
    out = encoder.feature_map(x)
    assert out.shape == (2, 256, 4, 6)
    assert torch.isfinite(out).all()
    assert encoder.no_memory_embedding is not None
    with torch.no_grad():
        expected = encoder.vision(pixel_values=x).fpn_hidden_states[-1] + encoder.no_memory_embedding.view(1, -1, 1, 1)
    torch.testing.assert_close(out, expected)


def test_encode(encoder: Sam2Encoder) -> None:
    x = tiles(3, 32, 64)
    pooled = encoder.encode(x)
    assert pooled.shape == (3, 256)
    torch.testing.assert_close(pooled, encoder.feature_map(x).mean(dim=(-2, -1)))


def test_deterministic(encoder: Sam2Encoder) -> None:
    x = tiles(2, 64, 64)
    torch.testing.assert_close(encoder.feature_map(x), encoder.feature_map(x), rtol=0, atol=0)
    assert not encoder.feature_map(x).requires_grad


@pytest.mark.parametrize(("hw", "grid"), [((48, 80), (3, 5)), ((16, 16), (1, 1)), ((112, 32), (7, 2))])
def test_multiples_of_16_are_padded_to_32(encoder: Sam2Encoder, hw: tuple[int, int], grid: tuple[int, int]) -> None:
    x = tiles(1, *hw)
    out = encoder.feature_map(x)
    assert out.shape == (1, 256, *grid)
    h, w = hw
    padded = torch.zeros(1, 3, h + (-h) % 32, w + (-w) % 32)
    padded[:, :, :h, :w] = x
    torch.testing.assert_close(out, encoder.feature_map(padded)[:, :, : grid[0], : grid[1]])


@pytest.mark.parametrize("hw", [(40, 64), (64, 24), (8, 8)])
def test_non_multiple_of_16(encoder: Sam2Encoder, hw: tuple[int, int]) -> None:
    with pytest.raises(ParameterError, match=r"multiples of .*\b16\b"):
        encoder.feature_map(tiles(1, *hw))


def test_wrong_channels(encoder: Sam2Encoder) -> None:
    with pytest.raises(ParameterError, match="1 channels.*expects 3"):
        encoder.feature_map(torch.zeros(1, 1, 32, 32))


def test_vision_only_folder_loads(ckpts: dict[str, Path]) -> None:
    enc = create_encoder("sam2", weights=str(ckpts["vision"]))
    assert isinstance(enc, Sam2Encoder)
    assert enc.no_memory_embedding is None
    saved = load_file(str(ckpts["vision"] / "model.safetensors"))
    key = "backbone.blocks.2.attn.qkv.weight"
    torch.testing.assert_close(enc.vision.state_dict()[key], saved[key], rtol=0, atol=0)
    assert enc.feature_map(tiles(1, 32, 96)).shape == (1, 256, 2, 6)


def test_sam2_test_random_is_seeded() -> None:
    a = create_encoder("sam2_test")
    b = create_encoder("sam2_test", weights="random")
    c = create_encoder("sam2_test", seed=1)
    assert a.weights_id == "random"
    x = tiles(1, 32, 32)
    torch.testing.assert_close(a.feature_map(x), b.feature_map(x), rtol=0, atol=0)
    assert not torch.allclose(a.feature_map(x), c.feature_map(x))


def test_folder_of_another_model(tmp_path: Path) -> None:
    folder = write_tiny_hf_dinov2(tmp_path / "dino")
    with pytest.raises(ParameterError, match="model_type='dinov2', not SAM 2"):
        create_encoder("sam2", weights=str(folder))


def test_file_instead_of_folder(tmp_path: Path) -> None:
    pt = tmp_path / "sam2.1_hiera_base_plus.pt"
    pt.write_bytes(b"")
    with pytest.raises(ParameterError, match="save_pretrained folder"):
        create_encoder("sam2", weights=str(pt))


def test_folder_without_safetensors(ckpts: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(json.loads((ckpts["full"] / "config.json").read_text())))
    with pytest.raises(WeightsNotFoundError, match=r"no \.safetensors"):
        create_encoder("sam2", weights=str(tmp_path))


def test_missing_path() -> None:
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_encoder("sam2", weights="./missing/sam2")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline mode with an empty hub cache; returns the cache folder."""
    cache = tmp_path / "hf_home" / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("weights", [None, "facebook/sam2.1-hiera-tiny"])
@pytest.mark.usefixtures("offline")
def test_offline_without_weights(weights: str | None) -> None:
    with pytest.raises(WeightsNotFoundError, match=weights or SAM2_REPO) as info:
        create_encoder("sam2", weights=weights)
    assert "weights=PATH" in str(info.value)


def test_default_repo_from_the_hub_cache_offline(ckpts: dict[str, Path], offline: Path) -> None:
    """With the default repo in the cache, create_encoder("sam2") loads it offline and records the revision."""
    files = {name: ckpts["full"] / name for name in ("config.json", "model.safetensors")}
    install_in_hub_cache(offline, SAM2_REPO, files, revision="b" * 40)
    enc = create_encoder("sam2")
    assert isinstance(enc, Sam2Encoder)
    assert enc.weights_id == f"{SAM2_REPO}@{'b' * 40}"
    reference = create_encoder("sam2", weights=str(ckpts["full"]))
    x = tiles(1, 32, 32)
    torch.testing.assert_close(enc.feature_map(x), reference.feature_map(x), rtol=0, atol=0)


def test_normalization_option() -> None:
    assert create_encoder("sam2_test", normalization="fixed").meta.normalization.kind == "meanstd"
    with pytest.raises(ParameterError, match="normalization='raw' is unknown"):
        create_encoder("sam2_test", normalization="raw")


@pytest.mark.slow
def test_random_base_plus_architecture() -> None:
    """``weights="random"`` builds the full-size base-plus Hiera offline (about 70 M parameters)."""
    enc = create_encoder("sam2", weights="random")
    assert isinstance(enc, Sam2Encoder)
    assert enc.size_multiple == 32
    assert enc.feature_map(tiles(1, 64, 64)).shape == (1, 256, 4, 4)
