"""changescope's own checkpoints (``checkpoint:PATH``): round trip, metadata, and refusing what is not one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from changescope.encoders import create_encoder
from changescope.encoders.base import BandSpec, EncoderMeta, Normalization
from changescope.encoders.checkpoint import (
    FORMAT_VERSION,
    META_KEY,
    load_checkpoint_encoder,
    meta_from_dict,
    meta_to_dict,
    read_checkpoint_meta,
    save_checkpoint_encoder,
)
from changescope.encoders.timm_cnn import TimmCNNEncoder, build_backbone
from changescope.errors import CorruptFileError, ParameterError, UnknownFormatError, WeightsNotFoundError
from changescope.testing.checkpoints import random_timm_model, write_changescope_checkpoint, write_timm_state_dict

BANDS = (BandSpec("blue", 0.49), BandSpec("green", 0.56), BandSpec("red", 0.665), BandSpec("nir", 0.842))


def caco_meta(**kw: object) -> EncoderMeta:
    base = EncoderMeta(
        name="caco-r18-den",
        family="timm_cnn",
        bands=BANDS,
        gsd=3.0,
        input_size=256,
        patch_size=16,
        embed_dim=256,
        normalization=Normalization("meanstd", mean=(0.05, 0.07, 0.08, 0.25), std=(0.02, 0.03, 0.04, 0.08)),
        licence="Apache-2.0",
        description="CACo ResNet-18 on DynamicEarthNet",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    return random_timm_model("resnet18", in_chans=4, seed=7)


@pytest.fixture(scope="module")
def ckpt(trained: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "runs" / "caco.safetensors"
    return save_checkpoint_encoder(
        trained, caco_meta(), path, architecture="timm:resnet18", extra={"epochs": 2, "loss": "caco"}
    )


def x4(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 4, size, size, generator=torch.Generator().manual_seed(1))


def test_round_trip_gives_identical_features(trained: torch.nn.Module, ckpt: Path) -> None:
    enc = create_encoder(f"checkpoint:{ckpt}")
    assert isinstance(enc, TimmCNNEncoder)
    with torch.inference_mode():
        want = trained.forward_intermediates(x4(), indices=[3], intermediates_only=True)[0]  # type: ignore[operator]
    torch.testing.assert_close(enc.feature_map(x4()), want, rtol=0, atol=1e-6)
    again = load_checkpoint_encoder(ckpt)
    assert torch.equal(again.feature_map(x4()), enc.feature_map(x4()))
    for key, value in enc.model.state_dict().items():
        assert torch.equal(value, trained.state_dict()[key]), key


def test_metadata_is_restored(ckpt: Path) -> None:
    enc = create_encoder(f"checkpoint:{ckpt}")
    meta = enc.meta
    assert meta.bands == BANDS and meta.in_chans == 4
    assert meta.normalization == caco_meta().normalization
    assert (meta.name, meta.gsd, meta.patch_size, meta.embed_dim) == ("caco-r18-den", 3.0, 16, 256)
    assert meta.weights.kind == "local" and meta.weights.ref == str(ckpt)
    assert enc.weights_id.startswith(f"checkpoint:{ckpt.resolve()}#sha256=")
    header = read_checkpoint_meta(ckpt)
    assert header["architecture"] == "timm:resnet18"
    assert (header["in_chans"], header["stage"], header["format_version"]) == (4, 3, FORMAT_VERSION)
    assert header["extra"] == {"epochs": 2, "loss": "caco"}
    assert header["bands"][3] == {"name": "nir", "wavelength": 0.842}


def test_file_holds_only_the_backbone(ckpt: Path) -> None:
    keys = set(load_file(ckpt))
    assert "conv1.weight" in keys and not any(k.startswith(("fc.", "layer4.")) for k in keys)
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]


def test_meta_dict_round_trip() -> None:
    meta = caco_meta()
    assert meta_from_dict(json.loads(json.dumps(meta_to_dict(meta)))) == meta


def test_testing_helper_and_other_stages(tmp_path: Path) -> None:
    path = write_changescope_checkpoint(tmp_path / "s4.safetensors", bands=("B02", "B03", "B04"), stage=4)
    enc = create_encoder(f"checkpoint:{path}")
    assert (enc.patch_size, enc.embed_dim, enc.meta.in_chans) == (32, 512, 3)
    assert enc.meta.bands[2] == BandSpec("B04", 0.665)
    assert enc.feature_map(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_features_only_backbone_and_inferred_stage(tmp_path: Path) -> None:
    backbone = build_backbone("resnet18", 4, 2)
    meta = caco_meta(patch_size=8, embed_dim=128)
    path = save_checkpoint_encoder(backbone, meta, tmp_path / "s2.safetensors", architecture="timm:resnet18")
    assert read_checkpoint_meta(path)["stage"] == 2
    assert create_encoder(f"checkpoint:{path}").feature_map(x4()).shape == (2, 128, 4, 4)


def test_save_errors(trained: torch.nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "x.safetensors"
    with pytest.raises(ParameterError, match="architecture"):
        save_checkpoint_encoder(trained, caco_meta(), out, architecture="torchvision:resnet18")
    with pytest.raises(ParameterError, match="embed_dim"):
        save_checkpoint_encoder(trained, caco_meta(embed_dim=512), out, architecture="timm:resnet18", stage=3)
    with pytest.raises(ParameterError, match="bands"):
        save_checkpoint_encoder(trained, caco_meta(bands=()), out, architecture="timm:resnet18")
    with pytest.raises(ParameterError, match="do not fit"):
        save_checkpoint_encoder(trained, caco_meta(bands=BANDS[:3]), out, architecture="timm:resnet18")
    with pytest.raises(ParameterError, match="JSON"):
        save_checkpoint_encoder(trained, caco_meta(), out, architecture="timm:resnet18", extra={"f": object()})
    assert not list(tmp_path.iterdir())


def test_missing_file() -> None:
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_encoder("checkpoint:/no/such/ckpt.safetensors")


def test_plain_safetensors_is_not_a_checkpoint(tmp_path: Path) -> None:
    plain = write_timm_state_dict(tmp_path / "plain.safetensors")
    with pytest.raises(CorruptFileError, match=r"plain\.safetensors.*not a changescope checkpoint"):
        create_encoder(f"checkpoint:{plain}")


@pytest.mark.parametrize("name", ["evil.pt", "evil.safetensors"])
def test_pickles_are_refused_without_unpickling(tmp_path: Path, name: str) -> None:
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(sentinel), "w"))

    bad = tmp_path / name
    torch.save({"conv1.weight": Evil()}, bad)
    with pytest.raises(CorruptFileError, match="not a changescope checkpoint"):
        create_encoder(f"checkpoint:{bad}")
    assert not sentinel.exists()


def _forge(path: Path, ckpt: Path, **changes: object) -> Path:
    header = {**read_checkpoint_meta(ckpt), **changes}
    save_file(load_file(ckpt), str(path), metadata={"format": "pt", META_KEY: json.dumps(header)})
    return path


def test_unknown_architecture_and_newer_format(tmp_path: Path, ckpt: Path) -> None:
    with pytest.raises(UnknownFormatError, match="foo:bar"):
        create_encoder(f"checkpoint:{_forge(tmp_path / 'a.safetensors', ckpt, architecture='foo:bar')}")
    with pytest.raises(UnknownFormatError, match="format_version"):
        create_encoder(f"checkpoint:{_forge(tmp_path / 'b.safetensors', ckpt, format_version=FORMAT_VERSION + 1)}")


def test_header_that_does_not_fit_the_tensors(tmp_path: Path, ckpt: Path) -> None:
    with pytest.raises(CorruptFileError, match="do not fit"):
        create_encoder(f"checkpoint:{_forge(tmp_path / 'c.safetensors', ckpt, architecture='timm:resnet34')}")
    with pytest.raises(CorruptFileError, match="incomplete"):
        create_encoder(f"checkpoint:{_forge(tmp_path / 'd.safetensors', ckpt, bands=None)}")


def test_options_are_refused(ckpt: Path) -> None:
    with pytest.raises(ParameterError, match="device"):
        create_encoder(f"checkpoint:{ckpt}", bands=["red"])
