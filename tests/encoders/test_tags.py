"""Weight tags as data, the one weights parser, and metadata that needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from changescope.encoders import create_encoder, get_meta, get_weights_tag, list_encoders, list_weights
from changescope.encoders.catalog import BUILTIN_ENCODERS, CLAY_META, CLAY_TEST_META, SPECTRAL_META
from changescope.encoders.meta import RGB_BANDS, SENTINEL2_BANDS
from changescope.encoders.tags import WEIGHTS_TAGS
from changescope.encoders.weights import cache_dir, looks_like_repo_id, parse_weights
from changescope.errors import ParameterError, WeightsNotFoundError
from changescope.series import KNOWN_WAVELENGTHS
from changescope.testing.checkpoints import install_hf_cache_repo, write_hf_timm_repo, write_torchgeo_weights
from changescope.testing.checkpoints_insitu import write_clay_checkpoint

PLANET = ["blue", "green", "red", "nir"]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline mode with empty private caches; returns the Hugging Face cache folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.setenv("CHANGESCOPE_CACHE", str(tmp_path / "changescope_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    return tmp_path / "hf_cache"


def test_listing_and_describing_import_no_torch() -> None:
    code = (
        "import sys, json, changescope.encoders as e; names = e.list_encoders(); m = e.get_meta('resnet18'); "
        "tags = e.list_weights(); e.get_weights_tag('resnet18.sentinel2_all_moco'); "
        "heavy = [k for k in ('torch', 'xarray', 'timm') if k in sys.modules]; "
        "print(json.dumps([names, m.in_chans, len(tags), heavy]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, in_chans, n_tags, heavy = json.loads(out)
    assert "resnet18" in names and in_chans == 3 and n_tags == len(WEIGHTS_TAGS)
    assert heavy == []


def test_every_tag_is_consistent() -> None:
    assert list_weights() == sorted(WEIGHTS_TAGS)
    for name, tag in WEIGHTS_TAGS.items():
        assert name == tag.name and name.startswith(f"{tag.encoder}.")
        assert tag.encoder in list_encoders() and tag.licence.strip() and tag.description.strip()
        assert tag.source.kind != "none" and tag.source.ref
        if tag.normalization is not None and tag.normalization.mean:
            assert len(tag.normalization.mean) == len(tag.normalization.std) == len(tag.bands)
        assert get_weights_tag(name, tag.encoder) is tag
    assert list_weights("resnet18") == [t for t in list_weights() if t.startswith("resnet18.")]
    assert {"resnet18.sentinel2_all_moco", "resnet50.sentinel2_all_moco", "resnet50.sentinel2_all_dino"} <= set(
        list_weights()
    )


def test_torch_free_constants_match_the_torch_side() -> None:
    from changescope.encoders.clay_model import CLAY_CONFIGS
    from changescope.encoders.spectral import spectral_feature_names

    assert SPECTRAL_META.embed_dim == len(spectral_feature_names(SPECTRAL_META.bands))
    assert (CLAY_META.embed_dim, CLAY_TEST_META.embed_dim) == (CLAY_CONFIGS["clay"].dim, CLAY_CONFIGS["clay_test"].dim)
    for band in (*RGB_BANDS, *SENTINEL2_BANDS, *SPECTRAL_META.bands):
        assert band.wavelength == KNOWN_WAVELENGTHS[band.name]
    assert {get_meta(n) for n in BUILTIN_ENCODERS} == {b.meta for b in BUILTIN_ENCODERS.values()}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "default"),
        ("timm", "default"),
        ("random", "random"),
        ("resnet18.sentinel2_all_moco", "tag"),
        ("hf-hub:owner/model", "repo"),
        ("owner/model.v2", "repo"),
        ("torchgeo:ResNet18_Weights.X", "scheme"),
        ("owner/model.pth", "missing"),
        ("./nope/file.pth", "missing"),
        ("nope", "missing"),
        ("weights.pth", "missing"),
    ],
)
def test_one_parser(value: str | None, kind: str) -> None:
    spec = parse_weights(value, "resnet18", schemes=("torchgeo",), default_aliases=("timm",))
    assert spec.kind == kind


def test_parser_paths_win_over_repo_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "model").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert parse_weights("owner/model", "resnet18").kind == "path"
    assert looks_like_repo_id("owner/model") and not looks_like_repo_id("/abs/path") and not looks_like_repo_id("a/")


def test_unknown_tag_is_one_line_with_close_matches() -> None:
    with pytest.raises(ParameterError) as info:
        create_encoder("resnet18", weights="resnet18.sentinel2_all_mocco")
    msg = str(info.value)
    assert "\n" not in msg and "did you mean 'resnet18.sentinel2_all_moco'" in msg and "list_weights()" in msg
    with pytest.raises(ParameterError, match="are resnet50 weights, not resnet18"):
        create_encoder("resnet18", weights="resnet50.sentinel2_all_dino")
    with pytest.raises(ParameterError, match="not a known weights tag"):
        create_encoder("dinov2_test", weights="dinov2_s.lvd142")


def test_torchgeo_tag_through_the_url_cache(offline: Path) -> None:
    tag = get_weights_tag("resnet18.sentinel2_all_moco")
    with pytest.raises(WeightsNotFoundError, match="resnet18_sentinel2_all_moco-59bfdff9.pth.*CHANGESCOPE_OFFLINE"):
        create_encoder("resnet18", weights=tag.name)
    file = write_torchgeo_weights(cache_dir() / Path(tag.source.ref).name, "resnet18", in_chans=13, seed=4)
    enc = create_encoder("resnet18", weights=tag.name)
    state = torch.load(file, weights_only=True)
    torch.testing.assert_close(enc.model.state_dict()["conv1.weight"], state["conv1.weight"])  # type: ignore[attr-defined]
    assert enc.meta.bands == SENTINEL2_BANDS and enc.meta.normalization == tag.normalization
    assert (enc.weights_id, enc.meta.licence, enc.meta.weights) == (tag.name, "CC-BY-4.0", tag.source)
    four = create_encoder("resnet18", weights=tag.name, bands=["B02", "B03", "B04", "B08"])
    assert [b.name for b in four.meta.bands] == ["B02", "B03", "B04", "B08"]
    torch.testing.assert_close(
        four.model.state_dict()["conv1.weight"],  # type: ignore[attr-defined]
        state["conv1.weight"][:, [1, 2, 3, 7]] * 13 / 4,
    )


def test_hub_tags_through_the_hf_cache(offline: Path, tmp_path: Path) -> None:
    repo = write_hf_timm_repo(tmp_path / "r18", "resnet18", seed=2)
    install_hf_cache_repo(offline, "timm/resnet18.a1_in1k", repo, revision="b" * 40)
    enc = create_encoder("resnet18", weights="resnet18.a1_in1k")
    assert enc.weights_id == f"hf:timm/resnet18.a1_in1k@{'b' * 40}"
    assert enc.weights_id == create_encoder("resnet18").weights_id
    with pytest.raises(WeightsNotFoundError, match="made-with-clay/Clay"):
        create_encoder("clay", weights="clay.v1_5", bands=PLANET)
    with pytest.raises(WeightsNotFoundError, match="facebook/sam2.1-hiera-base-plus"):
        create_encoder("sam2", weights="sam2.hiera_base_plus")
    with pytest.raises(WeightsNotFoundError, match="vit_small_patch14_dinov2"):
        create_encoder("dinov2_s", weights="dinov2_s.lvd142m")
    with pytest.raises(WeightsNotFoundError, match="gastruc/anysat"):
        create_encoder("anysat", weights="anysat.base")


def test_existing_weights_strings_keep_working(tmp_path: Path) -> None:
    ckpt = write_clay_checkpoint(tmp_path / "clay.ckpt")
    assert create_encoder("clay_test", weights=str(ckpt), bands=PLANET).weights_id == str(ckpt)
    assert create_encoder("clay_test", weights="random", bands=PLANET).weights_id == "random"
    assert create_encoder("spectral", weights="none").weights_id == "none"
