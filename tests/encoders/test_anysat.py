"""AnySat through a local torch.hub repo: loading, shapes, band mapping, patch-size rules, offline behaviour."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from changescope.encoders import create_encoder, get_meta
from changescope.encoders.anysat import ANYSAT_MODALITIES, AnySatEncoder, day_of_year
from changescope.errors import BandMismatchError, CorruptFileError, ParameterError, WeightsNotFoundError
from changescope.series import BandInfo
from changescope.testing.checkpoints_insitu import write_anysat_hub, write_clay_checkpoint

S2 = [BandInfo.from_name(b) for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")]
PLANET = [BandInfo.from_name(b) for b in ("blue", "green", "red", "nir")]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_anysat_hub(tmp_path_factory.mktemp("anysat"), seed=1)


def _anysat(repo: Path | str, **kw: object) -> AnySatEncoder:
    enc = create_encoder("anysat", weights=str(repo), **kw)
    assert isinstance(enc, AnySatEncoder)
    return enc


def test_registered_metadata() -> None:
    meta = get_meta("anysat")
    assert meta.in_chans == len(meta.normalization.mean) == 10
    assert (meta.weights.kind, meta.weights.ref, meta.embed_dim) == ("torchhub", "gastruc/anysat", 768)
    for mod in ANYSAT_MODALITIES.values():
        assert not mod.normalization.mean or len(mod.normalization.mean) == len(mod.bands)


@pytest.mark.parametrize(("patch", "size"), [(4, 16), (2, 8), (1, 4)])
def test_s2_patch_features(hub: Path, patch: int, size: int) -> None:
    enc = _anysat(hub, modality="s2", patch_size=patch, bands=S2)
    assert (enc.embed_dim, enc.patch_size, enc.patch_m) == (16, patch, 10 * patch)
    assert enc.meta.input_size == 16 * patch
    x = torch.randn(2, 10, size, size)
    assert enc.feature_map(x).shape == (2, 16, size // patch, size // patch)
    assert enc.encode(x).shape == (2, 16)
    assert enc.weights_id == str(hub)


def test_dense_and_tile_outputs(hub: Path) -> None:
    enc = _anysat(hub, modality="s2", output="dense", pool="tile")
    assert (enc.embed_dim, enc.patch_size) == (32, 1)
    x = torch.randn(2, 10, 16, 16)
    dense = enc.feature_map(x)
    assert dense.shape == (2, 32, 16, 16)
    patch = _anysat(hub, modality="s2").feature_map(x)
    torch.testing.assert_close(dense[:, :16, ::4, ::4], patch)  # first half: the patch token, repeated
    assert enc.encode(x).shape == (2, 16)


@pytest.mark.parametrize("output", ["patch", "dense"])
def test_early_release_layout_gives_the_same_map(tmp_path: Path, hub: Path, output: str) -> None:
    early = write_anysat_hub(tmp_path / "early", seed=1, layout="early")
    x = torch.randn(2, 4, 32, 32)
    a = _anysat(early, modality="naip", output=output).feature_map(x)
    b = _anysat(hub, modality="naip", output=output).feature_map(x)
    assert a.shape == ((2, 16, 4, 4) if output == "patch" else (2, 32, 4, 4))
    torch.testing.assert_close(a, b)


def test_band_mapping_errors_list_the_series_bands(hub: Path) -> None:
    with pytest.raises(BandMismatchError, match=r"needs band 'B05'.*\['blue', 'green', 'red', 'nir'\]"):
        _anysat(hub, modality="s2", bands=PLANET)
    enc = _anysat(hub, modality="naip", bands=PLANET)
    assert [b.name for b in enc.meta.bands] == ["red", "green", "blue", "nir"]
    with pytest.raises(BandMismatchError, match="4 bands"):
        enc.feature_map(torch.randn(1, 3, 16, 16))


def test_patch_size_rules(hub: Path) -> None:
    with pytest.raises(ParameterError, match="multiple of 10 m, e.g. patch_size=8"):
        _anysat(hub, modality="naip", patch_size=4)
    enc = _anysat(hub, modality="naip", patch_size=16)
    assert enc.patch_m == 20
    with pytest.raises(ParameterError, match="square"):
        enc.feature_map(torch.randn(1, 4, 32, 16))
    with pytest.raises(ParameterError, match="modality='planet'"):
        _anysat(hub, modality="planet")
    with pytest.raises(ParameterError, match="output='all'"):
        _anysat(hub, output="all")
    with pytest.raises(ParameterError, match="doy=400"):
        _anysat(hub, doy=400)


def test_dates_become_day_of_year(hub: Path) -> None:
    assert day_of_year(["2020-01-01", "2020-12-31", "2021-03-01"]).tolist() == [0, 365, 59]
    enc = _anysat(hub, modality="s2")
    x = torch.randn(2, 10, 8, 8)
    default = enc.feature_map(x)
    torch.testing.assert_close(default, enc.feature_map(x, dates=["2020-07-01"]))  # doy 182 is the default
    assert not torch.allclose(default, enc.feature_map(x, dates=["2020-01-15", "2020-02-01"]))
    with pytest.raises(ParameterError, match="3 dates for 2 tiles"):
        enc.feature_map(x, dates=["2020-01-01"] * 3)


def test_checkpoint_file_instead_of_pretrained(hub: Path, tmp_path: Path) -> None:
    x = torch.randn(1, 10, 8, 8)
    enc = _anysat(hub, checkpoint=str(hub / "tiny_anysat.pth"))
    torch.testing.assert_close(enc.feature_map(x), _anysat(hub).feature_map(x))
    with pytest.raises(WeightsNotFoundError, match="AnySat.pth"):
        _anysat(hub, checkpoint=str(tmp_path / "missing.pth"))
    wrong = write_clay_checkpoint(tmp_path / "clay.ckpt")
    with pytest.raises(CorruptFileError, match="does not fit"):
        _anysat(hub, checkpoint=str(wrong))


def test_missing_or_wrong_repo(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="neither a local AnySat clone"):
        _anysat(tmp_path / "nope")
    with pytest.raises(WeightsNotFoundError, match="without hubconf.py"):
        _anysat(tmp_path)


def test_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hub: Path) -> None:
    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError, match=r"weights=DIR.*CHANGESCOPE_OFFLINE"):
        create_encoder("anysat")
    # a repo already in torch.hub's cache is used without the network
    shutil.copytree(hub, tmp_path / "torch" / "hub" / "gastruc_anysat_main")
    enc = create_encoder("anysat")
    assert enc.weights_id == "gastruc/anysat"
    x = torch.randn(1, 10, 8, 8)
    assert enc.feature_map(x).shape == (1, 16, 2, 2)
    # the published weights already in torch.hub's checkpoint cache are loaded directly
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir()
    shutil.copy(hub / "tiny_anysat.pth", tmp_path / "torch" / "hub" / "checkpoints" / "AnySat.pth")
    cached = create_encoder("anysat")
    assert cached.weights_id.endswith("AnySat.pth")
    torch.testing.assert_close(cached.feature_map(x), enc.feature_map(x))
