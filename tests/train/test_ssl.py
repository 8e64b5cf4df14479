"""The training loop: resume gives the same encoder, the encoder works downstream, CACo gating, modes differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import changescope
from changescope.embed import embed_series, open_embeddings
from changescope.encoders import create_encoder
from changescope.errors import NoImagesFoundError, ParameterError
from changescope.testing import make_test_series, write_dated_folder
from changescope.train.config import TrainConfig, config_from_dict, load_config
from changescope.train.data import TemporalPatches
from changescope.train.moco import MoCo
from changescope.train.ssl import TrainResult, open_inputs, train_ssl
from changescope.train.state import list_states, load_state

SIZE, STRIDE = 32, 16


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("series")
    return [
        str(write_dated_folder(root / f"s{seed}", make_test_series(seed, n_time=8, height=64, width=64)))
        for seed in (0, 1)
    ]


def make_config(inputs: list[str], out: Path, *, mode: str = "caco", epochs: int = 3, **sections: Any) -> TrainConfig:
    data: dict[str, Any] = {
        "data": {"inputs": inputs, "size": SIZE, "stride": STRIDE},
        "ssl": {"mode": mode, "queue_size": 8},
        "augment": {"out_size": 32},
        "optim": {"epochs": epochs, "batch_size": 4, "milestones": [2]},
        "out": str(out),
        "threads": 1,  # CI machines are small and shared: one thread avoids stalls when another process is busy
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
    return config_from_dict(data)


@pytest.fixture(scope="module")
def caco_run(inputs: list[str], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """An uninterrupted 3-epoch CACo run."""
    return train_ssl(make_config(inputs, tmp_path_factory.mktemp("runs") / "caco"), progress=False)


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(a), load_file(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


def test_crashed_then_resumed_run_gives_the_same_final_checkpoint(
    caco_run: TrainResult, inputs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(inputs, tmp_path / "run")

    def crash(epoch: int) -> None:
        if epoch == 1:
            raise RuntimeError("crash after epoch 1")

    with pytest.raises(RuntimeError, match="after epoch 1"):
        train_ssl(config, progress=False, on_epoch=crash)
    assert [e for e, _ in list_states(config.out)] == [1]
    assert not (tmp_path / "run" / "encoder.safetensors").exists()
    with pytest.raises(ParameterError, match="--resume"):
        train_ssl(config, progress=False)
    changed = make_config(inputs, tmp_path / "run", optim={"lr": 0.1})
    with pytest.raises(ParameterError, match=r"optim\.lr: run had 0\.03, now 0\.1"):
        train_ssl(changed, resume=True, progress=False)

    resumed = train_ssl(config, resume=True, progress=False)
    assert resumed.epochs == caco_run.epochs == 3
    assert_same_tensors(resumed.encoder, caco_run.encoder)
    for key in ("loss", "lr", "changed_fraction"):
        assert [h[key] for h in resumed.history] == [h[key] for h in caco_run.history]
    assert [e for e, _ in list_states(config.out)] == [2, 3]  # only the last two states are kept
    a, b = load_state(list_states(config.out)[-1][1]), load_state(list_states(caco_run.out)[-1][1])
    assert torch.equal(a["model"]["queue"], b["model"]["queue"])
    assert torch.equal(a["tracker"]["ratios"], b["tracker"]["ratios"])


def test_resuming_a_finished_run(caco_run: TrainResult, inputs: list[str]) -> None:
    config = make_config(inputs, caco_run.out)
    with pytest.raises(ParameterError, match=r"already holds checkpoints.*--resume"):
        train_ssl(config, progress=False)
    with pytest.raises(ParameterError, match=r"optim\.epochs=2.*--epochs 3"):
        train_ssl(make_config(inputs, caco_run.out, epochs=2, optim={"milestones": [1]}), resume=True, progress=False)
    before = list_states(caco_run.out)
    again = train_ssl(config, resume=True, progress=False)
    assert again.history == caco_run.history and list_states(caco_run.out) == before
    assert_same_tensors(again.encoder, caco_run.encoder)


def test_final_encoder_loads_and_embeds(caco_run: TrainResult, inputs: list[str], tmp_path: Path) -> None:
    path = str(caco_run.encoder)
    encoder = create_encoder("checkpoint:" + path)
    series = changescope.open(inputs[0])
    assert [b.name for b in encoder.meta.bands] == [str(b) for b in series["band"].values]
    assert all(b.wavelength is not None for b in encoder.meta.bands)
    patches = TemporalPatches.from_series([changescope.open(p) for p in inputs], size=SIZE, stride=STRIDE)
    assert encoder.meta.normalization == patches.normalization()
    assert (encoder.meta.patch_size, encoder.meta.embed_dim, encoder.meta.input_size) == (32, 512, 32)
    assert encoder.meta.gsd == pytest.approx(10.0)
    weights = load_file(caco_run.out / "checkpoints" / "encoder_0003.safetensors")
    model_state = encoder.model.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(model_state[k].cpu(), v) for k, v in weights.items())
    store = embed_series(series, "checkpoint:" + path, patch_size=32, out=tmp_path / "e.zarr", progress=False)
    emb = open_embeddings(store)
    values = np.asarray(emb["embedding"].values)
    assert values.shape[-1] == 512 and np.isfinite(values).all() and values.std() > 0


def test_caco_writes_histograms_history_and_config(caco_run: TrainResult, inputs: list[str]) -> None:
    out = caco_run.out
    assert sorted(p.name for p in (out / "ratios").iterdir()) == [f"epoch_{e:04d}.png" for e in (1, 2, 3)]
    assert all((out / "ratios" / f"epoch_{e:04d}.png").read_bytes()[:4] == b"\x89PNG" for e in (1, 2, 3))
    history = json.loads((out / "history.json").read_text())
    assert history == caco_run.history
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(0.0 <= h["changed_fraction"] <= 1.0 and np.isfinite(h["loss"]) for h in history)
    assert [h["lr"] for h in history] == pytest.approx([0.03, 0.03, 0.003])  # lr drops after the milestone epoch 2
    assert load_config(out / "config.yaml") == make_config(inputs, out)


def test_training_changes_weights_and_modes_differ(caco_run: TrainResult, inputs: list[str], tmp_path: Path) -> None:
    moco = train_ssl(
        make_config(inputs, tmp_path / "moco", mode="moco", epochs=2, optim={"milestones": []}), progress=False
    )
    assert moco.history[-1]["changed_fraction"] is None
    assert all(np.isfinite(h["loss"]) for h in moco.history)
    trained = load_file(moco.encoder)
    torch.manual_seed(0)  # how the run initialises its model
    initial = MoCo("resnet18", 4, queue_size=8).backbone_q.features.state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in trained.items() if v.is_floating_point())
    caco_epoch2 = load_file(caco_run.out / "checkpoints" / "encoder_0002.safetensors")
    assert any(not torch.equal(caco_epoch2[k], v) for k, v in trained.items() if v.is_floating_point())
    seco = train_ssl(
        make_config(inputs, tmp_path / "seco", mode="seco", epochs=1, optim={"milestones": []}), progress=False
    )
    assert np.isfinite(seco.history[0]["loss"]) and seco.history[0]["changed_fraction"] is None
    seco_weights = load_file(seco.encoder)
    moco_epoch1 = load_file(moco.out / "checkpoints" / "encoder_0001.safetensors")
    assert any(not torch.equal(moco_epoch1[k], v) for k, v in seco_weights.items() if v.is_floating_point())


def test_data_errors_name_the_field(inputs: list[str], tmp_path: Path) -> None:
    with pytest.raises(NoImagesFoundError, match=r"data\.inputs\[1\]"):
        train_ssl(make_config([inputs[0], str(tmp_path / "nope")], tmp_path / "a"), progress=False)
    with pytest.raises(ParameterError, match=r"optim\.batch_size=32 but the inputs give only 18 locations"):
        train_ssl(make_config(inputs, tmp_path / "b", optim={"batch_size": 32}, ssl={"queue_size": 32}), progress=False)
    assert not (tmp_path / "b").exists()


def test_every_aoi_of_a_dynamicearthnet_root_is_opened(tmp_path: Path) -> None:
    from changescope.synthetic import make_aoi

    for seed, aoi in enumerate(("aoi_a", "aoi_b")):
        make_aoi(tmp_path / "den", seed=seed, size=64, months=4, aoi=aoi)
    config = make_config([str(tmp_path / "den")], tmp_path / "run")
    series = open_inputs(config.data)
    assert sorted(ds.attrs["aoi"] for ds in series) == ["aoi_a", "aoi_b"]
