"""DINOv2 encoders: both backends load real-format tiny checkpoints; shapes, determinism, errors, offline mode."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file

from changescope.encoders import create_encoder, get_meta, list_encoders
from changescope.encoders.base import Normalization
from changescope.encoders.vit import IMAGENET_MEAN, IMAGENET_STD, RGB_FIXED_GAIN, DinoV2Encoder
from changescope.errors import ParameterError, WeightsNotFoundError
from changescope.testing.checkpoints_vit import install_in_hub_cache, write_tiny_hf_dinov2, write_tiny_timm_dinov2


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dinov2")
    return {
        "safetensors": write_tiny_timm_dinov2(root / "tiny.safetensors"),
        "pth": write_tiny_timm_dinov2(root / "tiny.pth"),
        "hf": write_tiny_hf_dinov2(root / "hf"),
    }


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline mode with an empty hub cache; returns the cache folder."""
    cache = tmp_path / "hf_home" / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def tiles(n: int = 2, h: int = 28, w: int = 42, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def hf_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transformers Dinov2 keys -> facebookresearch/dinov2 keys (what the released .pth files use)."""
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "mask_token": sd["embeddings.mask_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer."))
    for i in range(depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.qkv.{part}"] = torch.cat(
                [sd[src + f"attention.attention.{q}.{part}"] for q in ("query", "key", "value")]
            )
            out[dst + f"attn.proj.{part}"] = sd[src + f"attention.output.dense.{part}"]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[dst + f"{name}.{part}"] = sd[src + f"{name}.{part}"]
        out[dst + "ls1.gamma"] = sd[src + "layer_scale1.lambda1"]
        out[dst + "ls2.gamma"] = sd[src + "layer_scale2.lambda1"]
    return {k: v.contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(("name", "dim"), [("dinov2_s", 384), ("dinov2_b", 768), ("dinov2_test", 32)])
def test_meta(name: str, dim: int) -> None:
    meta = get_meta(name)
    assert name in list_encoders()
    assert meta.family == "vit"
    assert [b.name for b in meta.bands] == ["red", "green", "blue"]
    assert all(b.wavelength for b in meta.bands)
    assert len(meta.bands) == meta.in_chans == 3
    assert (meta.patch_size, meta.embed_dim) == (14, dim)
    assert meta.input_size % 14 == 0
    assert meta.normalization.kind == "stretch"
    assert (meta.normalization.mean, meta.normalization.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert meta.licence == "Apache-2.0"


def test_default_weights_sources() -> None:
    assert get_meta("dinov2_s").weights.ref == "timm/vit_small_patch14_dinov2.lvd142m"
    assert get_meta("dinov2_b").weights.ref == "timm/vit_base_patch14_dinov2.lvd142m"
    assert get_meta("dinov2_test").weights.kind == "none"


# ------------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_timm_state_dict_loads(ckpts: dict[str, Path], fmt: str) -> None:
    enc = create_encoder("dinov2_test", weights=str(ckpts[fmt]))
    assert isinstance(enc, DinoV2Encoder)
    assert enc.backend == "timm"
    assert enc.weights_id == str(ckpts[fmt])
    saved = load_file(str(ckpts["safetensors"]))
    loaded = enc.model.state_dict()
    for key in ("blocks.1.attn.qkv.weight", "patch_embed.proj.weight", "pos_embed"):
        torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0)
    random_init = create_encoder("dinov2_test").model.state_dict()
    assert not torch.equal(random_init["blocks.1.attn.qkv.weight"], saved["blocks.1.attn.qkv.weight"])


def test_transformers_folder_loads(ckpts: dict[str, Path]) -> None:
    enc = create_encoder("dinov2_test", weights=str(ckpts["hf"]))
    assert isinstance(enc, DinoV2Encoder)
    assert enc.backend == "transformers"
    assert enc.num_prefix_tokens == 1
    saved = load_file(str(ckpts["hf"] / "model.safetensors"))
    loaded = enc.model.state_dict()
    for key in ("encoder.layer.1.mlp.fc1.weight", "embeddings.position_embeddings", "layernorm.weight"):
        torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0)


def test_explicit_backend_must_match_weights(ckpts: dict[str, Path]) -> None:
    assert create_encoder("dinov2_test", weights=str(ckpts["hf"]), backend="transformers").backend == "transformers"
    with pytest.raises(ParameterError, match="backend='timm'.*transformers checkpoint"):
        create_encoder("dinov2_test", weights=str(ckpts["hf"]), backend="timm")
    with pytest.raises(ParameterError, match="backend='transformers'.*timm checkpoint"):
        create_encoder("dinov2_test", weights=str(ckpts["safetensors"]), backend="transformers")


def test_unknown_backend() -> None:
    with pytest.raises(ParameterError, match=r"backend='jax'.*\('timm', 'transformers'\)"):
        create_encoder("dinov2_test", backend="jax")


def test_original_dinov2_keys_load_and_backends_agree(ckpts: dict[str, Path], tmp_path: Path) -> None:
    """The same weights through timm (original facebookresearch key names) and transformers give the same map."""
    original = hf_to_original(load_file(str(ckpts["hf"] / "model.safetensors")))
    path = tmp_path / "dinov2_original.pth"
    torch.save(original, path)
    via_timm = create_encoder("dinov2_test", weights=str(path))
    via_hf = create_encoder("dinov2_test", weights=str(ckpts["hf"]))
    x = tiles(2, 56, 56)  # the native 4 x 4 grid: neither backend interpolates position embeddings
    torch.testing.assert_close(via_timm.feature_map(x), via_hf.feature_map(x), rtol=1e-4, atol=1e-4)


def test_weights_of_another_size(ckpts: dict[str, Path]) -> None:
    with pytest.raises(ParameterError, match="do not fit encoder 'dinov2_s'"):
        create_encoder("dinov2_s", weights=str(ckpts["safetensors"]))
    with pytest.raises(ParameterError, match="32-d ViT.*'dinov2_s' is 384-d"):
        create_encoder("dinov2_s", weights=str(ckpts["hf"]))


def test_missing_path() -> None:
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_encoder("dinov2_test", weights="./no/such/file.safetensors")


def test_folder_of_another_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ParameterError, match="model_type='vit'"):
        create_encoder("dinov2_test", weights=str(tmp_path))


def test_folder_without_safetensors(ckpts: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((ckpts["hf"] / "config.json").read_text())
    with pytest.raises(WeightsNotFoundError, match=r"no \.safetensors"):
        create_encoder("dinov2_test", weights=str(tmp_path))


def test_corrupt_state_dict(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(OSError, match="not a loadable weights file"):
        create_encoder("dinov2_test", weights=str(bad))


@pytest.mark.parametrize(
    ("name", "backend", "repo"),
    [
        ("dinov2_s", None, "timm/vit_small_patch14_dinov2.lvd142m"),
        ("dinov2_b", "timm", "timm/vit_base_patch14_dinov2.lvd142m"),
        ("dinov2_s", "transformers", "facebook/dinov2-small"),
        ("dinov2_b", "transformers", "facebook/dinov2-base"),
    ],
)
@pytest.mark.usefixtures("offline")
def test_offline_without_weights(name: str, backend: str | None, repo: str) -> None:
    with pytest.raises(WeightsNotFoundError, match=repo) as info:
        create_encoder(name, backend=backend)
    assert "weights=PATH" in str(info.value)


@pytest.mark.usefixtures("offline")
def test_offline_repo_override() -> None:
    with pytest.raises(WeightsNotFoundError, match="someone/dinov2-finetuned"):
        create_encoder("dinov2_s", weights="someone/dinov2-finetuned")


def test_repo_ids_load_from_the_hub_cache_offline(ckpts: dict[str, Path], offline: Path) -> None:
    """Repo ids resolve through the hub cache (as after a download): timm/ repos with timm, others with transformers."""
    install_in_hub_cache(offline, "timm/tiny_dinov2.test", {"model.safetensors": ckpts["safetensors"]})
    hf = {name: ckpts["hf"] / name for name in ("config.json", "model.safetensors")}
    snapshot = install_in_hub_cache(offline, "someone/tiny-dinov2", hf, revision="a" * 40)
    via_timm = create_encoder("dinov2_test", weights="timm/tiny_dinov2.test")
    via_hf = create_encoder("dinov2_test", weights="someone/tiny-dinov2")
    assert isinstance(via_timm, DinoV2Encoder)
    assert isinstance(via_hf, DinoV2Encoder)
    assert (via_timm.backend, via_hf.backend) == ("timm", "transformers")
    assert via_timm.weights_id == "timm/tiny_dinov2.test@" + "0" * 40
    assert via_hf.weights_id == "someone/tiny-dinov2@" + "a" * 40
    assert snapshot.name == "a" * 40
    assert create_encoder("dinov2_test", weights="someone/tiny-dinov2", backend="transformers").embed_dim == 32


def test_normalization_option() -> None:
    assert create_encoder("dinov2_test").meta.normalization == get_meta("dinov2_test").normalization
    fixed = create_encoder("dinov2_test", normalization="fixed").meta.normalization
    assert fixed == RGB_FIXED_GAIN
    assert fixed.kind == "meanstd"
    assert fixed.mean[0] == pytest.approx(IMAGENET_MEAN[0] * 0.3)
    custom = Normalization("none")
    assert create_encoder("dinov2_test", normalization=custom).meta.normalization == custom
    with pytest.raises(ParameterError, match="normalization='gamma' is unknown.*'fixed', 'stretch'"):
        create_encoder("dinov2_test", normalization="gamma")
    with pytest.raises(ParameterError, match="4 means"):
        create_encoder("dinov2_test", normalization=Normalization("meanstd", (0.1,) * 4, (0.1,) * 4))


# ------------------------------------------------------------------------------------------------------ outputs


@pytest.fixture(params=["timm", "transformers"])
def encoder(request: pytest.FixtureRequest, ckpts: dict[str, Path]) -> DinoV2Encoder:
    path = ckpts["safetensors"] if request.param == "timm" else ckpts["hf"]
    enc = create_encoder("dinov2_test", weights=str(path))
    assert isinstance(enc, DinoV2Encoder)
    return enc


def test_feature_map_shape(encoder: DinoV2Encoder) -> None:
    out = encoder.feature_map(tiles(2, 28, 42))
    assert out.shape == (2, 32, 2, 3)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_feature_map_matches_tokens(encoder: DinoV2Encoder) -> None:
    x = tiles(1, 42, 28)
    tokens = encoder.tokens(x)
    fmap = encoder.feature_map(x)
    assert tokens.shape == (1, 1 + 3 * 2, 32)
    # patch token k is the row-major position (k // 2, k % 2) of the 3 x 2 grid
    torch.testing.assert_close(fmap[0, :, 2, 1], tokens[0, 1 + 2 * 2 + 1])
    torch.testing.assert_close(fmap[0, :, 0, 1], tokens[0, 1 + 1])


def test_encode_is_mean_of_patch_tokens(encoder: DinoV2Encoder) -> None:
    x = tiles(3, 28, 42)
    pooled = encoder.encode(x)
    assert pooled.shape == (3, 32)
    torch.testing.assert_close(pooled, encoder.tokens(x)[:, 1:].mean(dim=1))


def test_deterministic(encoder: DinoV2Encoder) -> None:
    x = tiles(2, 28, 42)
    torch.testing.assert_close(encoder.feature_map(x), encoder.feature_map(x), rtol=0, atol=0)
    # batch composition does not change a tile's features
    torch.testing.assert_close(encoder.feature_map(x[:1]), encoder.feature_map(x)[:1], rtol=1e-5, atol=1e-5)


def test_no_grad(encoder: DinoV2Encoder) -> None:
    assert not encoder.feature_map(tiles(1, 14, 14)).requires_grad


@pytest.mark.parametrize("hw", [(28, 41), (30, 42), (13, 28)])
def test_non_multiple_of_14(encoder: DinoV2Encoder, hw: tuple[int, int]) -> None:
    with pytest.raises(ParameterError, match=r"multiples of .*\b14\b"):
        encoder.feature_map(tiles(1, *hw))


def test_wrong_channels_and_rank(encoder: DinoV2Encoder) -> None:
    with pytest.raises(ParameterError, match="4 channels.*expects 3"):
        encoder.feature_map(torch.zeros(1, 4, 28, 28))
    with pytest.raises(ParameterError, match=r"\(N, C, H, W\)"):
        encoder.feature_map(torch.zeros(3, 28, 28))


def test_random_weights_are_seeded() -> None:
    a = create_encoder("dinov2_test", seed=3)
    b = create_encoder("dinov2_test", weights="random", seed=3)
    c = create_encoder("dinov2_test", seed=4)
    assert a.weights_id == "random"
    x = tiles(1, 28, 28)
    torch.testing.assert_close(a.feature_map(x), b.feature_map(x), rtol=0, atol=0)
    assert not torch.allclose(a.feature_map(x), c.feature_map(x))


def test_random_transformers_backend() -> None:
    enc = create_encoder("dinov2_test", backend="transformers")
    assert isinstance(enc, DinoV2Encoder)
    assert enc.backend == "transformers"
    assert enc.feature_map(tiles(1, 28, 42)).shape == (1, 32, 2, 3)


def test_to_device(encoder: DinoV2Encoder) -> None:
    assert encoder.to("cpu") is encoder
    assert encoder.device == torch.device("cpu")


def test_state_dict_writer_rejects_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"\.safetensors, \.pth or \.pt"):
        write_tiny_timm_dinov2(tmp_path / "tiny.npz")


def test_timm_hub_folder_layout(ckpts: dict[str, Path], tmp_path: Path) -> None:
    """A downloaded timm hub repo (config.json without model_type + model.safetensors) loads with timm."""
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_small_patch14_dinov2"}))
    save_file(load_file(str(ckpts["safetensors"])), str(tmp_path / "model.safetensors"))
    enc = create_encoder("dinov2_test", weights=str(tmp_path))
    assert isinstance(enc, DinoV2Encoder)
    assert enc.backend == "timm"
