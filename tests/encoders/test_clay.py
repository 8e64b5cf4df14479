"""Clay v1.5: official checkpoint layout, strict loading, wavelength awareness, shapes, offline behaviour."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from changescope.encoders import create_encoder, get_meta, list_encoders
from changescope.encoders.bands import band_indices, normalize
from changescope.encoders.clay import (
    CLAY_PLATFORMS,
    ClayEncoder,
    clay_latlon_code,
    clay_time_code,
)
from changescope.encoders.clay_model import read_clay_state_dict
from changescope.errors import BandMismatchError, CorruptFileError, ParameterError, WeightsNotFoundError
from changescope.series import BandInfo
from changescope.testing.checkpoints_insitu import write_clay_checkpoint

PLANET = [BandInfo.from_name(b) for b in ("blue", "green", "red", "nir")]
S2 = [BandInfo.from_name(b) for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clay_checkpoint(tmp_path_factory.mktemp("clay") / "clay-test.ckpt", seed=3)


def _clay(ckpt: Path, bands: list[BandInfo] = PLANET, **kw: object) -> ClayEncoder:
    enc = create_encoder("clay_test", weights=str(ckpt), bands=bands, **kw)
    assert isinstance(enc, ClayEncoder)
    return enc


def test_registered_metadata() -> None:
    assert {"clay", "clay_test"} <= set(list_encoders())
    meta = get_meta("clay")
    assert (meta.embed_dim, meta.patch_size, meta.family) == (1024, 8, "clay")
    assert (meta.weights.kind, meta.weights.ref, meta.weights.filename) == (
        "hf",
        "made-with-clay/Clay",
        "v1.5/clay-v1.5.ckpt",
    )
    assert meta.bands == () and meta.in_chans == 0  # adapts to the series bands


def test_official_layout_loads_strictly(ckpt: Path) -> None:
    enc = _clay(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("model.decoder.") for k in state)  # non-encoder tensors are skipped
    torch.testing.assert_close(enc.net.cls_token, state["model.encoder.cls_token"])
    assert enc.weights_id == str(ckpt)
    assert len(read_clay_state_dict(ckpt)) == len(enc.net.state_dict())


def test_refused_lightning_metadata_is_inert(tmp_path: Path) -> None:
    path = write_clay_checkpoint(tmp_path / "c.ckpt", refused_metadata=True)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    enc = _clay(path)
    assert enc.feature_map(torch.randn(1, 4, 16, 16)).shape == (1, 32, 2, 2)


def test_plain_safetensors_state_dict(tmp_path: Path, ckpt: Path) -> None:
    sd = read_clay_state_dict(ckpt)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "enc.safetensors"))
    a, b = _clay(ckpt), _clay(tmp_path / "enc.safetensors")
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(a.feature_map(x), b.feature_map(x))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"drop_keys": ["transformer.norm.weight"]}, r"missing 1 key\(s\) \['transformer.norm.weight'\]"),
        ({"extra_keys": {"head.weight": torch.zeros(2)}}, r"unexpected 1 key\(s\) \['head.weight'\]"),
        ({"extra_keys": {"cls_token": torch.zeros(1, 1, 7)}}, r"wrongly shaped 1 key\(s\) \['cls_token'\]"),
    ],
)
def test_mismatched_checkpoint_is_corrupt(tmp_path: Path, kw: dict[str, object], match: str) -> None:
    path = write_clay_checkpoint(tmp_path / "bad.ckpt", **kw)  # type: ignore[arg-type]
    with pytest.raises(CorruptFileError, match=match) as info:
        _clay(path)
    assert "'clay_test'" in str(info.value)


def test_unreadable_or_foreign_files_are_corrupt(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError, match="re-download"):
        _clay(junk)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"model.backbone.w": torch.zeros(1)}}, foreign)
    with pytest.raises(CorruptFileError, match="model.encoder"):
        _clay(foreign)


@pytest.mark.parametrize(("bands", "hw"), [(PLANET, (32, 32)), (S2, (16, 24)), (PLANET[:3], (8, 64))])
def test_any_band_set_gives_embed_dim_outputs(ckpt: Path, bands: list[BandInfo], hw: tuple[int, int]) -> None:
    enc = _clay(ckpt, bands)
    x = torch.randn(3, len(bands), *hw)
    fmap = enc.feature_map(x)
    assert fmap.shape == (3, enc.embed_dim, hw[0] // 8, hw[1] // 8)
    assert enc.encode(x).shape == (3, enc.embed_dim)
    torch.testing.assert_close(enc.encode(x), fmap.mean(dim=(-2, -1)))
    assert [b.name for b in enc.meta.bands] == [b.name for b in bands]
    assert len(enc.meta.normalization.mean) == len(bands)


def test_kernel_depends_on_wavelengths(ckpt: Path) -> None:
    x = torch.randn(2, 4, 16, 16)
    planet = _clay(ckpt, PLANET)
    shifted = [BandInfo(b.name, (b.wavelength or 0) + 0.3) for b in PLANET]
    b = _clay(ckpt, shifted, normalization=planet.meta.normalization).feature_map(x)
    a = planet.feature_map(x)
    assert not torch.allclose(a, b)


def test_band_and_size_errors(ckpt: Path) -> None:
    with pytest.raises(BandMismatchError, match="have none"):
        _clay(ckpt, [BandInfo("mystery")])
    with pytest.raises(BandMismatchError, match="platform="):
        _clay(ckpt, [BandInfo("thermal", 10.9)], platform="sentinel-2-l2a")
    with pytest.raises(ParameterError, match="platform='sentinel-3'"):
        _clay(ckpt, platform="sentinel-3")
    enc = _clay(ckpt)
    with pytest.raises(BandMismatchError, match="4 bands"):
        enc.feature_map(torch.randn(1, 3, 16, 16))
    with pytest.raises(ParameterError, match="multiple of the patch size 8"):
        enc.feature_map(torch.randn(1, 4, 12, 16))


def test_normalisation_maps_reflectance_to_clay_units(ckpt: Path) -> None:
    s2 = _clay(ckpt, S2, gsd=10.0)
    assert "sentinel-2-l2a" in s2.meta.description
    assert s2.meta.normalization.mean[2] == pytest.approx(0.1552)
    assert s2.meta.normalization.std[2] == pytest.approx(0.1888)
    landsat = _clay(ckpt, [BandInfo("red", 0.65)], gsd=30.0)
    assert landsat.meta.normalization.mean[0] == pytest.approx(13705 * 2.75e-5 - 0.2)
    # (reflectance - mean_r) / std_r equals Clay's (DN - mean_dn) / std_dn
    refl = torch.full((1, 1, 8, 8), 0.3)
    dn = refl * CLAY_PLATFORMS["landsat-c2l2-sr"].gain + CLAY_PLATFORMS["landsat-c2l2-sr"].offset
    torch.testing.assert_close(normalize(refl, landsat.meta.normalization), (dn - 13705.0) / 9578.0)
    planet = _clay(ckpt, gsd=3.0)
    assert "planetscope-sr" in planet.meta.description and planet.gsd == 3.0
    assert band_indices(PLANET, planet.meta) == [0, 1, 2, 3]


def test_time_and_location_codes(ckpt: Path) -> None:
    code = clay_time_code(["2020-01-06T12:00"])
    week = 2 * math.pi * 2 / 52
    torch.testing.assert_close(code, torch.tensor([[math.sin(week), math.cos(week), 0.0, -1.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(clay_latlon_code(90.0, 0.0), torch.tensor([[1.0, 0.0, 0.0, 1.0]]), atol=1e-6, rtol=0)
    enc = _clay(ckpt)
    x = torch.randn(2, 4, 16, 16)
    base = enc.feature_map(x)
    assert not torch.allclose(base, enc.feature_map(x, dates=["2020-06-01"]))
    assert not torch.allclose(base, enc.feature_map(x, latlon=(45.0, 5.0)))
    located = _clay(ckpt, latlon=(45.0, 5.0))
    torch.testing.assert_close(located.feature_map(x), enc.feature_map(x, latlon=(45.0, 5.0)))
    with pytest.raises(ParameterError, match="3 dates"):
        enc.feature_map(x, dates=["2020-01-01"] * 3)


def test_cls_pooling_and_determinism(ckpt: Path) -> None:
    x = torch.randn(2, 4, 16, 16)
    cls = _clay(ckpt, pool="cls")
    torch.testing.assert_close(cls.encode(x), cls.tokens(x)[:, 0])
    torch.testing.assert_close(_clay(ckpt).feature_map(x), _clay(ckpt).feature_map(x))
    with pytest.raises(ParameterError, match="pool='max'"):
        _clay(ckpt, pool="max")


def test_random_and_default_tiny_weights() -> None:
    enc = create_encoder("clay_test", weights="random", bands=PLANET)
    assert enc.weights_id == "random"
    assert create_encoder("clay_test").meta.in_chans == 10  # Sentinel-2 bands by default
    assert enc.feature_map(torch.randn(1, 4, 8, 8)).shape == (1, 32, 1, 1)


def test_offline_without_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError, match="weights=PATH") as info:
        create_encoder("clay", bands=PLANET)
    assert "made-with-clay/Clay" in str(info.value)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_encoder("clay_test", weights=str(tmp_path / "nope.ckpt"))


@pytest.mark.slow
def test_full_size_shapes() -> None:
    enc = create_encoder("clay", weights="random", bands=PLANET, gsd=3.0)
    assert sum(p.numel() for p in enc.net.parameters()) > 300e6  # type: ignore[attr-defined]
    assert enc.feature_map(torch.randn(1, 4, 32, 32)).shape == (1, 1024, 4, 4)
