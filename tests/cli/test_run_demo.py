import json

import pytest

from changescope.cli.app import main


def test_demo_small(tmp_path, capsys):
    main(["demo", "--out", str(tmp_path / "demo"), "--size", "128", "--months", "6", "--quiet"])
    run = json.loads((tmp_path / "demo" / "run" / "run.json").read_text())
    assert run["n_dates"] == 6
    assert (tmp_path / "demo" / "aoi" / "events").is_dir()
    metrics = json.loads((tmp_path / "demo" / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["patch"]["auc"] <= 1.0
    html = (tmp_path / "demo" / "run" / "report.html").read_text()
    for section in ("ranked changes", "score maps", "evaluation", "parameters"):
        assert section in html.lower(), section
    assert (tmp_path / "demo" / "run" / "figures" / "explore_embeddings_pca.png").exists()


def test_run_cli_and_user_error(tmp_path, capsys):
    main(["demo", "--out", str(tmp_path / "d"), "--size", "128", "--months", "6", "--quiet"])
    main(["run", str(tmp_path / "d" / "aoi"), "--out", str(tmp_path / "r"), "--method", "distance", "--quiet"])
    assert (tmp_path / "r" / "changes.parquet").exists()
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_run_cli_descriptor_and_rebase_options(tmp_path):
    import numpy as np

    from changescope.embed import open_embeddings

    main(["synth", str(tmp_path / "aoi"), "--seed", "3", "--size", "128", "--months", "6"])
    common = ["--method", "distance", "--subdivide", "1", "--quiet"]
    main(["run", str(tmp_path / "aoi"), "--out", str(tmp_path / "a"), *common, "--from-weight", "0"])
    main(["run", str(tmp_path / "aoi"), "--out", str(tmp_path / "b"), *common, "--rebase"])
    dim = open_embeddings(tmp_path / "a" / "embeddings.zarr").sizes["dim"]
    a, b = (json.loads((tmp_path / x / "run.json").read_text()) for x in "ab")
    assert a["config"]["from_weight"] == 0.0 and not a["config"]["rebase"] and a["scoring_passes"] == 1
    assert b["config"]["from_weight"] == 1.0 and b["config"]["rebase"] and b["scoring_passes"] >= 1
    va, vb = np.load(tmp_path / "a" / "change_vectors.npy"), np.load(tmp_path / "b" / "change_vectors.npy")
    assert va.shape[1:] == (dim,) and vb.shape[1:] == (2 * dim,)
    if len(vb):  # each half of a from-to descriptor has unit length (or is zero)
        halves = np.linalg.norm(vb.reshape(len(vb), 2, dim), axis=2)
        assert np.all((np.abs(halves - 1) < 1e-4) | (halves < 1e-6))


def test_run_cli_decision_options(tmp_path, capsys):
    main(["synth", str(tmp_path / "aoi"), "--seed", "4", "--size", "128", "--months", "6"])
    common = ["--method", "distance", "--subdivide", "1", "--quiet"]
    main(["run", str(tmp_path / "aoi"), "--out", str(tmp_path / "f"), *common, "--fdr", "0.1"])
    main(["run", str(tmp_path / "aoi"), "--out", str(tmp_path / "n"), *common, "--false-alarms", "3"])
    main(["run", str(tmp_path / "aoi"), "--out", str(tmp_path / "o"), *common, "--threshold", "otsu"])
    main(["run", str(tmp_path / "aoi"), "--out", str(tmp_path / "a"), *common, "--null-scale", "aoi"])
    f, n, o, a = (json.loads((tmp_path / x / "run.json").read_text()) for x in "fnoa")
    assert n["config"]["null_scale"] == "patch" and a["config"]["null_scale"] == "aoi"
    assert a["decision"]["null"]["scale"] == "aoi"
    assert f["decision"]["rule"] == "fdr" and f["decision"]["fdr"] == 0.1
    assert n["decision"]["rule"] == "nfa" and n["decision"]["false_alarms_per_1000_patches"] == 3.0
    assert n["decision"]["p_threshold"] == 3.0 * n["decision"]["n_patches"] / 1000 / n["decision"]["n_tests"]
    assert o["decision"] is None and o["config"]["threshold"] == "otsu"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tmp_path / "aoi"), "--out", str(tmp_path / "bad"), *common, "--false-alarms", "-1"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "--false-alarms" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tmp_path / "aoi"), "--out", str(tmp_path / "bad"), *common, "--null-scale", "pixel"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--null-scale" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
