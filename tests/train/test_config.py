"""The training configuration: the default file, validation messages that name the field, overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from changescope.errors import ParameterError
from changescope.train.config import (
    DEFAULT_CONFIG_YAML,
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    SSLConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    with_overrides,
)

REPO = Path(__file__).resolve().parents[2]
SECTIONS: dict[str, type[BaseModel]] = {
    "model": ModelConfig,
    "ssl": SSLConfig,
    "augment": AugmentConfig,
    "optim": OptimConfig,
}


def minimal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"data": {"inputs": ["a"]}, "out": "run"}
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_config_parses_to_the_defaults_and_documents_every_field(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DEFAULT_CONFIG_YAML))
    for name, model in SECTIONS.items():
        assert getattr(config, name) == model()
    assert config.data == DataConfig(inputs=["path/to/series"])
    assert (config.seed, config.device, config.threads) == (0, "auto", None)
    raw = yaml.safe_load(DEFAULT_CONFIG_YAML)
    assert set(raw) == set(TrainConfig.model_fields)
    sections: dict[str, type[BaseModel]] = {**SECTIONS, "data": DataConfig}
    for name, model in sections.items():
        assert set(raw[name]) == set(model.model_fields), name
    assert all(line.startswith("#") or "#" in line for line in DEFAULT_CONFIG_YAML.splitlines() if ": " in line)


def test_published_defaults() -> None:
    ssl, optim = SSLConfig(), OptimConfig()
    assert (ssl.queue_size, ssl.momentum, ssl.temperature, ssl.change_ema) == (16384, 0.999, 0.07, 0.2)
    assert (optim.lr, optim.momentum, optim.weight_decay, optim.batch_size) == (0.03, 0.9, 1e-4, 256)
    assert (optim.epochs, optim.milestones, optim.gamma) == (200, [120, 160], 0.1)


def test_the_docs_hold_the_default_config() -> None:
    doc = (REPO / "docs" / "train.md").read_text(encoding="utf-8")
    assert DEFAULT_CONFIG_YAML in doc


@pytest.mark.parametrize(
    ("changes", "field", "hint"),
    [
        ({"optim__batchsize": 4}, "optim.batchsize", "valid fields here are"),
        ({"optim__batch_size": 1}, "optim.batch_size", "greater than or equal to 2"),
        ({"optim__batch_size": "many"}, "optim.batch_size", "'many'"),
        ({"optim__milestones": [50, 250]}, "optim.milestones", "< epochs=200"),
        ({"optim__milestones": [160, 120]}, "optim.milestones", "increasing"),
        ({"ssl__queue_size": 1000, "optim__batch_size": 64}, "ssl.queue_size=1000", "multiple of optim.batch_size"),
        ({"ssl__mode": "simclr"}, "ssl.mode", "'moco', 'seco' or 'caco'"),
        ({"ssl__momentum": 1.0}, "ssl.momentum", "less than 1"),
        ({"augment__scale": [0.9, 0.2]}, "augment.scale", "low <= high"),
        ({"augment__blur_sigma": [0.0, 1.0]}, "augment.blur_sigma", "> 0"),
        ({"model__architecture": "resnet17"}, "model.architecture", "not a timm model"),
        ({"data__inputs": []}, "data.inputs", "at least 1"),
        ({"data__min_valid": 1.5}, "data.min_valid", "less than or equal to 1"),
        ({"data__format": "geotif"}, "data.format", "'dynamicearthnet'"),
        ({"device": "gpu"}, "device", "'cuda:N'"),
        ({"sed": 1}, "sed", "valid fields here are"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, changes: dict[str, Any], field: str, hint: str) -> None:
    path = write(tmp_path, yaml.safe_dump(minimal(**changes)))
    with pytest.raises(ParameterError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and field in message and hint in message
    assert "default-config" in message


def test_missing_sections_and_files(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"data: required field is missing"):
        load_config(write(tmp_path, "out: run\n"))
    with pytest.raises(ParameterError, match=r"does not exist.*default-config --out"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ParameterError, match="the file is empty"):
        load_config(write(tmp_path, "# nothing\n"))
    with pytest.raises(ParameterError, match="must be a mapping of sections"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ParameterError, match=r"cfg\.yaml: invalid YAML at line \d+, column \d+: "):
        load_config(write(tmp_path, "out: run\ndata: {inputs: [a\n"))


def test_round_trip_and_overrides() -> None:
    config = config_from_dict(minimal(optim__epochs=10, optim__milestones=[6, 8], augment__scale=[0.5, 1.0]))
    assert config_from_dict(config.model_dump(mode="json")) == config
    assert config.augment.scale == (0.5, 1.0)
    moved = with_overrides(config, out="elsewhere", epochs=20)
    assert (moved.out, moved.optim.epochs, moved.optim.milestones) == ("elsewhere", 20, [6, 8])
    assert with_overrides(config) is config
    with pytest.raises(ParameterError, match=r"--epochs: optim\.milestones: .*< epochs=5"):
        with_overrides(config, epochs=5)
    with pytest.raises(ParameterError, match=r"optim\.epochs"):
        with_overrides(config, epochs=0)
