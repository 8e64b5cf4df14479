"""Helpers shared by the multimodal CLI tests: a one-line failure and a tiny trained model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from changescope.cli.app import app, main

runner = CliRunner()


def fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``changescope ARGS``, check that it exits 1 with one ``error:`` line and no traceback; that line."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err and "\n" not in err
    return " ".join(err.split())


def ok(args: list[str]) -> str:
    """Run ``changescope multimodal ARGS``, check that it exits 0; its output on one line."""
    result = runner.invoke(app, ["multimodal", *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def train_tiny(root: Path, base: Path, batches_per_epoch: int) -> tuple[Path, Path, str]:
    """Index a BRIGHT tree and train a tiny model on it for 2 epochs: ``(config, best checkpoint, train output)``."""
    index = base / "index.parquet"
    ok(["index", "--root", str(root), "--out", str(index), "--context", "32", "--roi", "8", "--seed", "3"])
    config = base / "cfg.yaml"
    ok(["default-config", "--out", str(config)])
    data = yaml.safe_load(config.read_text())
    data["data"]["index"] = str(index)
    data["model"] |= {"architecture": "test_resnet", "hidden_dim": 16, "proj_dim": 8, "context": 32, "roi": 8}
    data["optim"] |= {
        "epochs": 2,
        "batch_size": 8,
        "lr": 1e-3,
        "batches_per_epoch": batches_per_epoch,
        "negative_share": 0.5,
    }
    data |= {"out": str(base / "train"), "seed": 7, "device": "cpu"}
    config.write_text(yaml.safe_dump(data))
    output = ok(["train", "--config", str(config)])
    return config, base / "train" / "best.safetensors", output
