"""``changescope train ssl`` and ``changescope train default-config``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from changescope.cli.app import app, main
from changescope.encoders import create_encoder
from changescope.errors import ParameterError
from changescope.train.config import DEFAULT_CONFIG_YAML, config_from_dict, load_config

runner = CliRunner()


def test_default_config_prints_and_writes_a_valid_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "default-config"])
    assert result.exit_code == 0, result.output
    assert result.output == DEFAULT_CONFIG_YAML
    assert config_from_dict(yaml.safe_load(result.output)).ssl.mode == "caco"
    path = tmp_path / "cfg" / "train.yaml"
    result = runner.invoke(app, ["train", "default-config", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert load_config(path).optim.epochs == 200 and "train ssl --config" in result.output


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    from changescope.synthetic import make_aoi

    for seed, aoi in enumerate(("aoi_a", "aoi_b")):
        make_aoi(tmp_path / "den", seed=seed, size=64, months=6, aoi=aoi)
    config = yaml.safe_load(DEFAULT_CONFIG_YAML)
    config["data"].update(inputs=[str(tmp_path / "den")], size=32, stride=16, min_valid=0.5)
    config["ssl"].update(mode="moco", queue_size=8)
    config["augment"].update(out_size=32)
    config["optim"].update(epochs=1, batch_size=4, milestones=[])
    config.update(out=str(tmp_path / "ignored"), threads=1)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_train_ssl_end_to_end(config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "ssl", "--config", str(config_file), "--out", str(out)]
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert not (tmp_path / "ignored").exists()
    encoder = create_encoder(f"checkpoint:{out / 'encoder.safetensors'}")
    assert encoder.meta.name == "moco-resnet18" and len(encoder.meta.bands) == 4
    assert load_config(out / "config.yaml").out == str(out)

    again = runner.invoke(app, args)
    assert again.exit_code != 0 and isinstance(again.exception, ParameterError)
    assert "--resume" in str(again.exception)

    more = runner.invoke(app, [*args, "--resume", "--epochs", "2"])
    assert more.exit_code == 0, more.output
    assert "2 epochs" in more.output and f"--encoder checkpoint:{out / 'encoder.safetensors'}" in more.output
    assert load_config(out / "config.yaml").optim.epochs == 2


def test_config_errors_exit_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("data: {inputs: [x]}\nout: run\noptim: {batch_size: 0}\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["train", "ssl", "--config", str(path)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "optim.batch_size" in err and "Traceback" not in err
