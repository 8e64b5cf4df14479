"""Training: exact resume, the best checkpoint, gradient monitoring, the configuration and its errors."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import Dataset

from changescope.errors import ParameterError
from changescope.multimodal.config import DEFAULT_CONFIG_YAML, MultimodalConfig, config_from_dict, load_config
from changescope.multimodal.model import load_model
from changescope.multimodal.train import train_multimodal
from changescope.train import state as st


class TinyPairs(Dataset):
    """Seeded in-memory windows in the patch dataset's item format; changed pairs get a bright SAR blob."""

    def __init__(self, n=24, size=32, seed=0, p_changed=0.4, classes=False):
        rng = np.random.default_rng(seed)
        self.labels = (rng.random(n) < p_changed).astype(np.int64)
        self.optical = rng.standard_normal((n, 3, size, size)).astype(np.float32)
        self.sar = (self.optical[:, :1] * 0.5 + 0.5 * rng.standard_normal((n, 1, size, size))).astype(np.float32)
        c = size // 2
        self.sar[self.labels == 1, :, c - 4 : c + 4, c - 4 : c + 4] += 3.0
        self.ratio = np.where(self.labels == 1, 0.5, 0.0).astype(np.float32)
        self.classes = np.where(self.labels == 1, 2 + rng.integers(0, 2, n), rng.integers(0, 2, n)) if classes else None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {
            "optical": torch.from_numpy(self.optical[i]),
            "sar": torch.from_numpy(self.sar[i]),
            "label": torch.tensor(self.labels[i]),
            "ratio": torch.tensor(self.ratio[i]),
        }
        if self.classes is not None:
            item["damage_class"] = torch.tensor(int(self.classes[i]))
        return item


def _config(out, **optim):
    return config_from_dict(
        {
            "data": {"index": "unused.parquet"},
            "model": {"architecture": "test_resnet", "hidden_dim": 16, "proj_dim": 8, "context": 32, "roi": 8},
            "optim": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "batches_per_epoch": 2} | optim,
            "out": str(out),
            "seed": 7,
            "device": "cpu",
        }
    )


@contextlib.contextmanager
def _deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def test_killed_training_resumes_to_bit_identical_weights(tmp_path):
    train, val = TinyPairs(seed=0), TinyPairs(n=12, seed=1)
    with _deterministic():
        straight = train_multimodal(_config(tmp_path / "a", augment=True), train, val, progress=False)

        def crash(epoch):
            raise KeyboardInterrupt(f"killed after epoch {epoch}")

        cfg = _config(tmp_path / "b", augment=True)
        with pytest.raises(KeyboardInterrupt):
            train_multimodal(cfg, train, val, progress=False, on_epoch=crash)
        assert [e for e, _ in st.list_states(tmp_path / "b")] == [1]
        resumed = train_multimodal(cfg, train, val, resume=True, progress=False)
    a, b = load_model(straight.last)[0].state_dict(), load_model(resumed.last)[0].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa, sb = (st.load_state(st.state_path(tmp_path / d, 2)) for d in "ab")
    for key, value in sa["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg"], sb["optimizer"]["state"][key]["exp_avg"])
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in straight.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    # epoch 2 changed the weights, so the equality above is not trivially true
    after_one = st.load_state(st.state_path(tmp_path / "a", 1))["model"]
    assert any(not torch.equal(after_one[k], a[k]) for k in a if a[k].is_floating_point())


def test_best_checkpoint_history_and_gradient_monitoring(tmp_path):
    cfg = config_from_dict(_config(tmp_path / "run", epochs=3).model_dump() | {"monitor_gradients": True})
    result = train_multimodal(cfg, TinyPairs(seed=2), TinyPairs(n=10, seed=3), progress=False)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1 and result.best_val_loss == min(losses)
    header = json.loads((tmp_path / "run" / "best.json").read_text())
    assert header["extra"]["epoch"] == result.best_epoch
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["epoch"] == 3
    # the config written is the resolved one: n_classes left to the data (null) is 0 for windows without classes
    resolved = cfg.model_copy(update={"model": cfg.model.model_copy(update={"n_classes": 0})})
    assert cfg.model.n_classes is None and load_config(tmp_path / "run" / "config.yaml") == resolved
    assert [e for e, _ in st.list_states(tmp_path / "run")] == [2, 3]
    norms = result.history[0]["grad_norms"]
    n_layers = {n.rsplit(".", 1)[0] for n, _ in load_model(result.best)[0].named_parameters()}
    assert set(norms) == n_layers  # one entry per layer (module holding parameters)
    for layer in ("optical.features.conv1.0", "sar.features.layer4.0.conv1", "optical_head.net.0", "sar_head.net.2"):
        assert np.isfinite(norms[layer]) and norms[layer] > 0
    assert all(0.0 <= h["val_auc"] <= 1.0 for h in result.history)


def test_class_head_trains_with_damage_classes(tmp_path):
    cfg = _config(tmp_path / "cls", epochs=1)
    cfg = config_from_dict(cfg.model_dump() | {"model": cfg.model.model_dump() | {"n_classes": 4}})
    result = train_multimodal(cfg, TinyPairs(classes=True), None, progress=False)
    assert result.history[0]["val_loss"] == result.history[0]["loss"]
    assert load_model(result.best)[0].class_head is not None
    with pytest.raises(ParameterError, match="damage_class"):
        train_multimodal(cfg.model_copy(update={"out": str(tmp_path / "no")}), TinyPairs(), None, progress=False)


def test_refuses_to_overwrite_and_to_resume_a_different_run(tmp_path):
    train, val = TinyPairs(seed=0), TinyPairs(n=8, seed=1)
    train_multimodal(_config(tmp_path / "r", epochs=1), train, val, progress=False)
    with pytest.raises(ParameterError, match="already holds checkpoints"):
        train_multimodal(_config(tmp_path / "r", epochs=2), train, val, progress=False)
    with pytest.raises(ParameterError, match=r"optim\.lr: run had 0\.001, now 0\.01"):
        train_multimodal(_config(tmp_path / "r", epochs=2, lr=1e-2), train, val, resume=True, progress=False)
    with pytest.raises(ParameterError, match="datasets now hold"):
        train_multimodal(_config(tmp_path / "r", epochs=2), TinyPairs(n=20), val, resume=True, progress=False)


def test_loss_negatives_reach_the_criterion(tmp_path):
    # negatives="all" also contrasts the unchanged pairs with each other: same seed, same batches, other weights
    base = _config(tmp_path / "changed", epochs=1)
    other = config_from_dict(base.model_dump() | {"loss": {"negatives": "all"}, "out": str(tmp_path / "all")})
    a = train_multimodal(base, TinyPairs(seed=4), None, progress=False)
    b = train_multimodal(other, TinyPairs(seed=4), None, progress=False)
    assert load_config(tmp_path / "all" / "config.yaml").loss.negatives == "all"
    assert a.history[0]["loss"] != b.history[0]["loss"]
    wa = dict(load_model(a.last)[0].named_parameters())["optical_head.net.0.weight"]
    wb = dict(load_model(b.last)[0].named_parameters())["optical_head.net.0.weight"]
    assert not torch.equal(wa, wb)


def test_sampler_share_that_the_labels_cannot_fill(tmp_path):
    all_unchanged = TinyPairs(p_changed=0.0)
    with pytest.raises(ParameterError, match="negative_share"):
        train_multimodal(_config(tmp_path / "x"), all_unchanged, None, progress=False)


def test_default_yaml_holds_the_published_defaults():
    data = yaml.safe_load(DEFAULT_CONFIG_YAML)
    cfg = config_from_dict(data)
    defaults = MultimodalConfig(data={"index": data["data"]["index"]}, out=data["out"])
    assert cfg == defaults
    o, m = cfg.optim, cfg.model
    assert (o.lr, o.weight_decay, o.batch_size, o.epochs, o.negative_share) == (1e-5, 1e-4, 64, 9, 0.8)
    assert (o.plateau_factor, o.plateau_patience, cfg.loss.temperature) == (0.5, 5, 0.07)
    assert (m.architecture, m.hidden_dim, m.proj_dim, m.context, m.roi) == ("resnet34", 512, 128, 256, 16)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"optim": {"batchsize": 8}}, r"optim\.batchsize: unknown field; valid fields here are \['augment'"),
        ({"optim": {"batch_size": 1}}, r"optim\.batch_size: Input should be greater than or equal to 2 \(got 1\)"),
        ({"model": {"architecture": "resnet999"}}, r"model\.architecture: 'resnet999' is not a timm model"),
        ({"model": {"roi": 64, "context": 32}}, r"model\.roi: roi=64 must be <= context=32"),
        ({"device": "gpu"}, "device must be"),
        ({"data": {}}, r"data\.index: required field is missing"),
    ],
)
def test_config_errors_are_one_line_and_name_the_field(change, match):
    data = {"data": {"index": "i.parquet"}, "out": "o"} | change
    with pytest.raises(ParameterError, match=match) as err:
        config_from_dict(data, source="cfg.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("cfg.yaml: ")


def test_load_config_errors(tmp_path):
    with pytest.raises(ParameterError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ParameterError, match="invalid YAML at line"):
        load_config(bad)
    bad.write_text("")
    with pytest.raises(ParameterError, match="empty"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ParameterError, match="must be a mapping"):
        load_config(bad)
