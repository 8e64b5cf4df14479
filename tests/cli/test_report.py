import importlib.util

import pytest
from typer.testing import CliRunner

from changescope.cli.app import app, main
from changescope.run import RunConfig, run_pipeline
from changescope.synthetic import make_aoi

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-report")
    make_aoi(root / "aoi", seed=3, size=192, months=8)
    run_pipeline(root / "aoi", root / "run", RunConfig(method="distance", threshold="otsu"), progress=False)
    return root / "run"


def test_report_command(run_dir):
    result = runner.invoke(app, ["report", str(run_dir), "--top", "5"])
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output
    assert (run_dir / "report.html").is_file()


def test_explore_command(run_dir):
    result = runner.invoke(app, ["explore", str(run_dir), "--method", "pca,tsne,umap", "--max-points", "300"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "figures" / "explore_embeddings_pca.png").is_file()
    assert (run_dir / "figures" / "explore_changes_tsne.png").is_file()
    if importlib.util.find_spec("umap") is None:
        assert "UMAP skipped" in result.output


def test_report_on_a_folder_without_run_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        main(["report", str(tmp_path)])
    assert ex.value.code == 1
    assert "holds no finished run" in capsys.readouterr().err


def test_explore_bad_method_is_a_user_error(run_dir, capsys):
    with pytest.raises(SystemExit) as ex:
        main(["explore", str(run_dir), "--method", "mds"])
    assert ex.value.code == 1
    assert "choose among" in capsys.readouterr().err
