import json

import numpy as np
import pytest
from typer.testing import CliRunner

from changescope.cli.app import app, main
from changescope.discover import Catalog
from changescope.testing.catalog import write_test_catalog

runner = CliRunner()


@pytest.fixture
def runs(tmp_path):
    a = write_test_catalog(tmp_path / "run-a", seed=0, aoi="aoi-a")
    b = write_test_catalog(tmp_path / "run-b", seed=0, aoi="aoi-b")  # same planted types, another AOI
    return a, b


def _first_id(run):
    return str(Catalog.open(run).frame["event_id"].iloc[0])


def test_search_like_writes_json_and_table(runs, tmp_path):
    a, _ = runs
    qid = _first_id(a)
    out = tmp_path / "res.json"
    result = runner.invoke(app, ["search", str(a), "--like", qid, "-k", "5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    ids = [r["event_id"] for r in data["results"]]
    assert len(ids) == 5 and qid not in ids
    assert all(i in result.output for i in ids)
    sims = [r["similarity"] for r in data["results"]]
    assert sims == sorted(sims, reverse=True)
    assert data["query"]["event_id"] == qid and data["index"]["kind"] == "flat"
    assert len(data["results"][0]["bounds"]) == 4
    assert (a / "changes.faiss").is_file() and (a / "changes.faiss.json").is_file()
    again = runner.invoke(app, ["search", str(a), "--like", qid, "-k", "5"])
    assert "loaded from" in " ".join(again.output.split())


def test_search_across_catalogs_with_filters(runs, tmp_path):
    a, b = runs
    qid = _first_id(a)
    out = tmp_path / "res.json"
    args = ["search", str(a), str(b), "--like", qid, "-k", "50", "--json", str(out)]
    args += ["--dates", "2018-02-01/2018-04-01", "--exclude-same-patch"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    res = json.loads(out.read_text())["results"]
    assert {r["aoi"] for r in res} == {"aoi-a", "aoi-b"}
    assert all("2018-02-01" <= r["time"][:10] <= "2018-04-01" for r in res)
    q_row, q_col = Catalog.open(a).frame[["row", "col"]].iloc[0]
    assert not any(r["aoi"] == "aoi-a" and (r["row"], r["col"]) == (q_row, q_col) for r in res)
    # the same planted change, in the other AOI, is the best match there
    top_b = next(r for r in res if r["aoi"] == "aoi-b")
    assert top_b["similarity"] > 0.9
    # bbox: a box around the first 2x2 patches only
    result = runner.invoke(app, ["search", str(a), "--like", qid, "--bbox", "500001,4999841,500159,4999999"])
    assert result.exit_code == 0, result.output


def test_list_mode_shows_ranked_ids(runs):
    a, _ = runs
    result = runner.invoke(app, ["search", str(a), "-k", "3"])
    assert result.exit_code == 0, result.output
    frame = Catalog.open(a).frame.sort_values("rank")
    for eid in frame["event_id"].iloc[:3]:
        assert eid in result.output
    assert "--like" in result.output


def test_unknown_event_id_exits_1(runs, capsys):
    a, _ = runs
    qid = _first_id(a)
    with pytest.raises(SystemExit) as exc:
        main(["search", str(a), "--like", qid[:-1] + "9"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "unknown event id" in err and "did you mean" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("--dates", "2018-13-45/x", "--dates"),
        ("--bbox", "1,2,3", "--bbox"),
        ("--dates", "2019-01-01/2018-01-01", "starts after"),
    ],
)
def test_bad_filter_strings_exit_1(runs, capsys, option, value, match):
    a, _ = runs
    with pytest.raises(SystemExit) as exc:
        main(["search", str(a), "--like", _first_id(a), option, value])
    assert exc.value.code == 1
    assert match in capsys.readouterr().err


def test_empty_catalog_exits_1(tmp_path, capsys):
    run = write_test_catalog(tmp_path / "empty", type_sizes=(), discover=False)
    with pytest.raises(SystemExit) as exc:
        main(["search", str(run), "--like", "x:2018-01-01:r0c0"])
    assert exc.value.code == 1
    assert "is empty" in capsys.readouterr().err


def test_different_dims_exit_1(runs, tmp_path, capsys):
    a, _ = runs
    other = write_test_catalog(tmp_path / "run-c", seed=1, aoi="aoi-c", dim=8)
    with pytest.raises(SystemExit) as exc:
        main(["search", str(a), str(other), "--like", _first_id(a)])
    assert exc.value.code == 1
    assert "different change-vector dimensions" in capsys.readouterr().err


def test_missing_catalog_exits_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", str(tmp_path / "nope"), "--like", "x"])
    assert exc.value.code == 1
    assert "not found" in capsys.readouterr().err


def test_index_is_rebuilt_when_catalog_changes(runs):
    a, _ = runs
    qid = _first_id(a)
    runner.invoke(app, ["search", str(a), "--like", qid])
    cat = Catalog.open(a)
    Catalog.from_frame(cat.frame, cat.vectors + np.float32(0.5)).write(a)
    result = runner.invoke(app, ["search", str(a), "--like", qid])
    assert result.exit_code == 0 and "built and saved" in " ".join(result.output.split())
