import json

import pytest
from typer.testing import CliRunner

from changescope.cli.app import app, main
from changescope.run import RunConfig, run_pipeline
from changescope.synthetic import make_aoi

runner = CliRunner()


@pytest.fixture(scope="module")
def aoi_and_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_aoi")
    make_aoi(root, seed=31, size=128, months=6)
    out = root.parent / f"{root.name}_run"
    run_pipeline(root, out, RunConfig(method="distance", patch_size=32), progress=False)
    return root, out


def test_evaluate_command(aoi_and_run):
    root, out = aoi_and_run
    res = runner.invoke(app, ["evaluate", str(out), "--min-fraction", "0.1", "--truth", str(root)])
    assert res.exit_code == 0, res.output
    assert "all patches" in res.output and "pixel level" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"]["min_fraction"] == 0.1 and (out / "figures" / "roc.png").exists()


def test_evaluate_user_error_exits_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "no finished run" in err and "Traceback" not in err


def test_benchmark_command(aoi_and_run, tmp_path):
    root, _ = aoi_and_run
    out = tmp_path / "b"
    res = runner.invoke(
        app,
        [
            "benchmark",
            str(root),
            "--encoders",
            "spectral,resnet18",
            "--methods",
            "distance",
            "--baselines",
            "cva",
            "--weights",
            "resnet18=/nonexistent",
            "--out",
            str(out),
            "--patch-size",
            "32",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    md = (out / "benchmark.md").read_text()
    assert "spectral_distance" in md and "WeightsNotFoundError" in md and "baseline_cva" in md


def test_benchmark_bad_weights_option(aoi_and_run, tmp_path, capsys):
    root, _ = aoi_and_run
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", str(root), "--weights", "resnet18", "--out", str(tmp_path / "x")])
    assert exc.value.code == 1
    assert "ENCODER=PATH" in capsys.readouterr().err
