"""Weights resolution (local, Hugging Face cache, URL cache) with offline mode, and safe state-dict loading."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

from changescope.encoders.base import WeightsSource
from changescope.encoders.weights import cache_dir, is_offline, load_state_dict, resolve_weights
from changescope.errors import CorruptFileError, WeightsNotFoundError
from changescope.testing.checkpoints import install_hf_cache_repo


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("CHANGESCOPE_CACHE", str(tmp_path / "url_cache"))
    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize(
    ("env", "value", "offline"),
    [("CHANGESCOPE_OFFLINE", "1", True), ("HF_HUB_OFFLINE", "true", True), ("CHANGESCOPE_OFFLINE", "0", False)],
)
def test_is_offline(monkeypatch: pytest.MonkeyPatch, env: str, value: str, offline: bool) -> None:
    monkeypatch.delenv("CHANGESCOPE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(env, value)
    assert is_offline() is offline


def test_local_override_and_source(tmp_path: Path, hub: Path) -> None:
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x")
    assert resolve_weights(WeightsSource("hf", "org/model"), "enc", override=str(f)) == f
    assert resolve_weights(WeightsSource("local", str(f)), "enc") == f


def test_missing_local_paths(tmp_path: Path, hub: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"nope\.pth.*'enc'.*check the path"):
        resolve_weights(WeightsSource("hf", "org/model"), "enc", override=str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsNotFoundError, match=r"weights=PATH"):
        resolve_weights(WeightsSource("local", str(tmp_path / "gone.pth")), "enc")


def test_offline_hf_without_cache_says_how(hub: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights(WeightsSource("hf", "org/model", "model.safetensors"), "enc")
    msg = str(err.value)
    assert "org/model/model.safetensors" in msg and "weights=PATH" in msg and "CHANGESCOPE_OFFLINE" in msg
    with pytest.raises(WeightsNotFoundError, match="other/repo"):
        resolve_weights(WeightsSource("none"), "enc", override="other/repo")


def test_offline_hf_from_cache(tmp_path: Path, hub: Path) -> None:
    src = tmp_path / "repo"
    src.mkdir()
    save_file({"w": torch.ones(2)}, str(src / "model.safetensors"))
    snapshot = install_hf_cache_repo(hub, "org/model", src)
    got = resolve_weights(WeightsSource("hf", "org/model", "model.safetensors"), "enc")
    assert got == snapshot / "model.safetensors"
    assert resolve_weights(WeightsSource("timm", "org/model", "model.safetensors"), "enc") == got
    assert resolve_weights(WeightsSource("hf", "org/model"), "enc") == snapshot  # whole snapshot


def test_url_cache_offline(hub: Path) -> None:
    source = WeightsSource("url", "https://example.org/weights/r18-abc.pth")
    with pytest.raises(WeightsNotFoundError, match="r18-abc.pth"):
        resolve_weights(source, "enc")
    target = cache_dir() / "r18-abc.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert resolve_weights(source, "enc") == target


def test_unresolvable_kind(hub: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="torchgeo"):
        resolve_weights(WeightsSource("torchgeo", "ResNet18_Weights.X"), "enc")


def test_load_state_dict_formats(tmp_path: Path) -> None:
    sd = {"a": torch.arange(3.0), "b.c": torch.ones(2, 2)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.pth")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "lightning.ckpt")
    torch.save({"model": sd}, tmp_path / "wrapped.pt")
    for name in ("w.safetensors", "w.pth", "lightning.ckpt", "wrapped.pt"):
        got = load_state_dict(tmp_path / name)
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd), name


def test_load_state_dict_refuses_pickled_code(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(sentinel), "w"))

    torch.save({"a": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CorruptFileError, match=r"evil\.pth") as err:
        load_state_dict(tmp_path / "evil.pth")
    assert not sentinel.exists()
    message = str(err.value)
    assert "\n" not in message and "weights_only=False" not in message  # never torch's advice to unpickle


def test_load_state_dict_bad_files(tmp_path: Path) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CorruptFileError, match="junk"):
        load_state_dict(tmp_path / "junk.safetensors")
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(CorruptFileError, match="list"):
        load_state_dict(tmp_path / "list.pth")
