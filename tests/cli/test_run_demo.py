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
