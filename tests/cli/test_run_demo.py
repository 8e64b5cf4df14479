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
