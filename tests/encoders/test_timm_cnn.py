"""ResNet encoders: every weights source through the real loading code on tiny random checkpoints, offline."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from changescope.encoders import create_encoder, get_meta
from changescope.encoders.timm_cnn import DISPLAY_WHITE, IMAGENET_MEAN, TimmCNNEncoder
from changescope.errors import CorruptFileError, MissingDependencyError, ParameterError, WeightsNotFoundError
from changescope.testing.checkpoints import (
    install_hf_cache_repo,
    write_hf_timm_repo,
    write_timm_state_dict,
    write_torchgeo_weights,
)

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
BGRN = ["blue", "green", "red", "nir"]
TG_URL = "https://hf.co/torchgeo/resnet18_sentinel2_all_moco/resolve/5b8cdd/resnet18_sentinel2_all_moco-59bfdff9.pth"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline mode with empty, private Hugging Face and changescope caches; returns the HF cache folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.setenv("CHANGESCOPE_CACHE", str(tmp_path / "changescope_cache"))
    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("timm")
    return {
        "pth": write_timm_state_dict(root / "r18.pth", "resnet18", seed=1),
        "safetensors": write_timm_state_dict(root / "r18.safetensors", "resnet18", seed=1),
        "hf": write_hf_timm_repo(root / "hf_r18", "resnet18", seed=2),
        "hf_other": write_hf_timm_repo(root / "hf_r10t", "resnet10t", seed=3),
    }


def tiles(c: int, n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(0))


def timm_encoder(name: str = "resnet18", **kw: object) -> TimmCNNEncoder:
    enc = create_encoder(name, **kw)  # type: ignore[arg-type]
    assert isinstance(enc, TimmCNNEncoder)
    return enc


def assert_loaded(enc: TimmCNNEncoder, state: dict[str, torch.Tensor]) -> None:
    own = enc.model.state_dict()
    assert own
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def test_registered_meta() -> None:
    for name, dim in (("resnet18", 256), ("resnet50", 1024)):
        meta = get_meta(name)
        assert meta.embed_dim == dim and meta.patch_size == 16 and meta.in_chans == 3
        assert [b.name for b in meta.bands] == ["red", "green", "blue"]
        assert meta.weights.kind == "timm" and meta.weights.ref == f"timm/{name}.a1_in1k"
        assert meta.normalization.mean[0] == pytest.approx(IMAGENET_MEAN[0] * DISPLAY_WHITE)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_local_timm_state_dict(saved: dict[str, Path], fmt: str) -> None:
    enc = timm_encoder(weights=str(saved[fmt]))
    state = load_file(saved["safetensors"])
    assert_loaded(enc, state)
    assert enc.weights_id == str(saved[fmt].resolve())
    assert enc.meta.weights.kind == "local"
    out = enc.feature_map(tiles(3))
    assert out.shape == (2, 256, 2, 2) and torch.isfinite(out).all()
    assert enc.encode(tiles(3)).shape == (2, 256)


def test_hf_layout_folder(saved: dict[str, Path]) -> None:
    import timm

    enc = timm_encoder(weights=str(saved["hf"]))
    assert_loaded(enc, load_file(saved["hf"] / "model.safetensors"))
    assert enc.meta.licence == "apache-2.0"
    # the folder is the real format: timm itself loads it
    ref = timm.create_model(f"local-dir:{saved['hf']}", pretrained=True, features_only=True, out_indices=(3,)).eval()
    with torch.inference_mode():
        torch.testing.assert_close(ref(tiles(3))[0], enc.feature_map(tiles(3)))


def test_default_weights_from_the_offline_hf_cache(saved: dict[str, Path], hub: Path) -> None:
    install_hf_cache_repo(hub, "timm/resnet18.a1_in1k", saved["hf"], revision="a" * 40)
    enc = timm_encoder()
    assert enc.weights_id == f"hf:timm/resnet18.a1_in1k@{'a' * 40}"
    assert enc.meta.weights.kind == "hf"
    assert timm_encoder(weights="timm/resnet18.a1_in1k").weights_id == enc.weights_id
    assert_loaded(enc, load_file(saved["hf"] / "model.safetensors"))
    install_hf_cache_repo(hub, "someone/r18-finetuned", saved["hf"])
    assert timm_encoder(weights="someone/r18-finetuned").weights_id.startswith("hf:someone/r18-finetuned@")
    assert timm_encoder(weights="hf-hub:someone/r18-finetuned").meta.weights.ref == "someone/r18-finetuned"


def test_offline_without_weights_says_what_and_how(hub: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as err:
        create_encoder("resnet18")
    msg = str(err.value)
    assert "timm/resnet18.a1_in1k" in msg and "weights=PATH" in msg and "CHANGESCOPE_OFFLINE" in msg
    with pytest.raises(WeightsNotFoundError, match="someone/missing"):
        create_encoder("resnet50", weights="someone/missing")
    with pytest.raises(WeightsNotFoundError, match="check the path"):
        create_encoder("resnet18", weights="./no/such/file.pth")


def test_random_weights_need_nothing(hub: Path) -> None:
    enc = timm_encoder("resnet50", weights="random")
    assert enc.weights_id == "random" and enc.meta.weights.kind == "none"
    assert enc.feature_map(tiles(3, n=1, size=32)).shape == (1, 1024, 2, 2)


def test_rgb_weights_adapt_to_4_bands_by_name(saved: dict[str, Path]) -> None:
    enc = timm_encoder(weights=str(saved["safetensors"]), bands=BGRN)
    src = load_file(saved["safetensors"])["conv1.weight"]
    conv = enc.model.state_dict()["conv1.weight"]
    assert conv.shape[1] == 4 and enc.meta.in_chans == 4
    scale = 3 / 4
    torch.testing.assert_close(conv[:, 0], src[:, 2] * scale)  # blue <- the weights' blue, not red
    torch.testing.assert_close(conv[:, 2], src[:, 0] * scale)
    torch.testing.assert_close(conv[:, 3], src.mean(dim=1) * scale)  # nir: unknown to RGB weights
    norm = enc.meta.normalization
    assert len(norm.mean) == len(norm.std) == 4
    assert norm.mean[0] == pytest.approx(IMAGENET_MEAN[2] * DISPLAY_WHITE)
    assert torch.isfinite(enc.feature_map(tiles(4))).all()


def test_rgb_weights_adapt_to_13_bands(saved: dict[str, Path]) -> None:
    enc = timm_encoder(weights=str(saved["pth"]), bands=S2)
    assert enc.model.state_dict()["conv1.weight"].shape[1] == 13
    assert [b.name for b in enc.meta.bands] == S2 and len(enc.meta.normalization.mean) == 13
    out = enc.feature_map(tiles(13))
    assert out.shape == (2, 256, 2, 2) and torch.isfinite(out).all()


def test_unnamed_channels_use_timms_adapt_input_conv(saved: dict[str, Path]) -> None:
    from timm.models import adapt_input_conv

    enc = timm_encoder(weights=str(saved["pth"]), in_chans=13)
    src = load_file(saved["safetensors"])["conv1.weight"]
    torch.testing.assert_close(enc.model.state_dict()["conv1.weight"], adapt_input_conv(13, src))
    assert enc.meta.bands[0].name == "band1"
    assert torch.isfinite(enc.feature_map(tiles(13))).all()
    with pytest.raises(ParameterError, match="in_chans"):
        create_encoder("resnet18", weights="random", bands=BGRN, in_chans=3)


@pytest.mark.parametrize(("stage", "stride", "dim"), [(2, 8, 128), (3, 16, 256), (4, 32, 512)])
def test_stage_choice(stage: int, stride: int, dim: int) -> None:
    enc = timm_encoder(weights="random", stage=stage)
    assert (enc.patch_size, enc.embed_dim) == (stride, dim)
    assert enc.meta.input_size % stride == 0
    assert enc.feature_map(tiles(3, size=64)).shape == (2, dim, 64 // stride, 64 // stride)


def test_bad_stage_and_tiles() -> None:
    with pytest.raises(ParameterError, match="stage"):
        create_encoder("resnet18", weights="random", stage=9)
    enc = timm_encoder(weights="random")
    with pytest.raises(ParameterError, match="multiples"):
        enc.feature_map(tiles(3, size=40))
    with pytest.raises(ParameterError, match="channels"):
        enc.feature_map(tiles(4))


def test_weights_of_another_architecture(saved: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="resnet10t"):
        create_encoder("resnet18", weights=str(saved["hf_other"]))
    other = write_timm_state_dict(tmp_path / "r10t.safetensors", "resnet10t")
    with pytest.raises(ParameterError, match="do not fit"):
        create_encoder("resnet18", weights=str(other))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(sentinel), "w"))

    bad = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Evil()}, bad)
    with pytest.raises(CorruptFileError, match="evil.pth"):
        create_encoder("resnet18", weights=str(bad))
    assert not sentinel.exists()


def test_torchgeo_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchgeo", None)
    monkeypatch.setitem(sys.modules, "torchgeo.models", None)
    with pytest.raises(MissingDependencyError, match="pip install torchgeo"):
        create_encoder("resnet18", weights="torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO")


class Normalize(nn.Module):
    """Stands in for kornia.augmentation.Normalize (which keeps mean/std in ``flags``)."""

    def __init__(self, mean: float | list[float], std: float | list[float]) -> None:
        super().__init__()
        self.flags = {"mean": torch.as_tensor(mean), "std": torch.as_tensor(std)}


@pytest.fixture
def fake_torchgeo(monkeypatch: pytest.MonkeyPatch, hub: Path, tmp_path: Path) -> Path:
    """A ``torchgeo.models`` with torchvision's real WeightsEnum and torchgeo's published metadata layout."""
    from torchvision.models._api import Weights, WeightsEnum

    class ResNet18_Weights(WeightsEnum):
        SENTINEL2_ALL_MOCO = Weights(
            url=TG_URL,
            transforms=nn.Sequential(Normalize(0.0, 10000.0)),
            meta={
                "dataset": "SSL4EO-S12",
                "in_chans": 13,
                "model": "resnet18",
                "bands": [f"B{b}" for b in ("1", "2", "3", "4", "5", "6", "7", "8", "8a", "9", "10", "11", "12")],
            },
        )
        SENTINEL2_RGB_SECO = Weights(
            url=TG_URL.replace("all_moco", "rgb_seco"),
            transforms=nn.Sequential(Normalize([3.0, 2.0, 0.0], [85.0, 101.0, 129.0]), Normalize(0.0, 1 / 255)),
            meta={"dataset": "SeCo Dataset", "in_chans": 3, "model": "resnet18", "bands": ["B4", "B3", "B2"]},
        )

    models = types.ModuleType("torchgeo.models")
    models.ResNet18_Weights = ResNet18_Weights  # type: ignore[attr-defined]
    package = types.ModuleType("torchgeo")
    package.models = models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchgeo", package)
    monkeypatch.setitem(sys.modules, "torchgeo.models", models)
    cache = tmp_path / "changescope_cache"
    write_torchgeo_weights(cache / TG_URL.rsplit("/", 1)[1], "resnet18", in_chans=13, seed=4)
    write_torchgeo_weights(cache / TG_URL.replace("all_moco", "rgb_seco").rsplit("/", 1)[1], in_chans=3, seed=5)
    return cache


def test_torchgeo_weights(fake_torchgeo: Path) -> None:
    enc = timm_encoder(weights="torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO")
    state = torch.load(fake_torchgeo / TG_URL.rsplit("/", 1)[1], weights_only=True)
    assert_loaded(enc, state)
    assert [b.name for b in enc.meta.bands] == S2 and enc.meta.bands[1].wavelength == pytest.approx(0.49)
    assert enc.meta.normalization.kind == "meanstd"
    assert enc.meta.normalization.mean == (0.0,) * 13 and enc.meta.normalization.std == (1.0,) * 13
    assert enc.weights_id == "torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO"
    assert enc.meta.weights.kind == "torchgeo"
    assert torch.isfinite(enc.feature_map(tiles(13))).all()
    # a 4-band series takes the matching input channels of the 13-band weights
    four = timm_encoder(weights="torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO", bands=["B02", "B03", "B04", "B08"])
    torch.testing.assert_close(four.model.state_dict()["conv1.weight"], state["conv1.weight"][:, [1, 2, 3, 7]] * 13 / 4)


def test_torchgeo_8bit_weights_are_stretched(fake_torchgeo: Path) -> None:
    enc = timm_encoder(weights="torchgeo:ResNet18_Weights.SENTINEL2_RGB_SECO")
    norm = enc.meta.normalization
    assert norm.kind == "stretch"
    assert norm.mean[0] == pytest.approx(3.0 / 255) and norm.std[0] == pytest.approx(85.0 / 255 / 255)
    assert [b.name for b in enc.meta.bands] == ["B04", "B03", "B02"]


def test_torchgeo_name_errors(fake_torchgeo: Path) -> None:
    with pytest.raises(ParameterError, match="SENTINEL2_ALL_MOCO"):
        create_encoder("resnet18", weights="torchgeo:ResNet18_Weights.NOPE")
    with pytest.raises(ParameterError, match="not resnet50 weights"):
        create_encoder("resnet50", weights="torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO")
    with pytest.raises(ParameterError, match="torchgeo weights enum"):
        create_encoder("resnet18", weights="torchgeo:Nothing")


def test_device_and_determinism() -> None:
    enc = timm_encoder(weights="random")
    assert enc.to("cpu") is enc and enc.device == torch.device("cpu")
    x = tiles(3)
    assert torch.equal(enc.feature_map(x), enc.feature_map(x))
