"""The web app's API through FastAPI's test client: every endpoint, bad ids, traversal, size limits, labels."""

from __future__ import annotations

import io
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from changescope.patch_scores import PatchScores
from changescope.serve.app import MAX_BODY, create_app
from changescope.serve.ranking import IRRELEVANT_WEIGHT, RELEVANT_WEIGHT


@pytest.fixture()
def runs(browser_run: Path, second_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Fresh copies of the two runs (labels written by one test do not reach the next)."""
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run2"
    for src, dst in ((browser_run, a), (second_run, b)):
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("feedback.sqlite*"))
    return a, b


@pytest.fixture()
def client(runs: tuple[Path, Path]) -> TestClient:
    return TestClient(create_app(list(runs)))


def _catalog(run: Path) -> tuple[pd.DataFrame, np.ndarray]:
    return pd.read_parquet(run / "changes.parquet"), np.load(run / "change_vectors.npy")


def _items(client: TestClient, **params: object) -> list[dict]:
    r = client.get("/api/changes", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _label(client: TestClient, run: str, label: str, event_id: str | None = None, cluster: int | None = None) -> dict:
    body = {"run": run, "label": label, **({"event_id": event_id} if event_id else {"cluster": cluster})}
    r = client.post("/api/feedback", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------------------------------------------------
# runs and images


def test_runs_describe_each_folder(client: TestClient, runs: tuple[Path, Path]) -> None:
    info = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(info) == {"run", "run2"}
    for rid, root in zip(("run", "run2"), runs, strict=True):
        r = info[rid]
        changes, _ = _catalog(root)
        scores = PatchScores.read(root)
        assert r["n_events"] == len(changes)
        assert r["n_confirmed"] + r["n_pending"] == len(changes)
        assert r["dates"] == [t.strftime("%Y-%m-%d") for t in scores.times]
        assert r["extent"] == [0, -r["height"], r["width"], 0]
        assert r["patch_size"] == scores.size
        lo, hi = r["score_range"]
        assert lo < hi
        assert sum(t["size"] for t in r["types"]) == len(changes)
        assert r["has_imagery"] is True
    assert info["run"]["width"] == 256 and info["run2"]["width"] == 192


def test_quicklook_valid_and_score_images_line_up(client: TestClient, runs: tuple[Path, Path]) -> None:
    run = client.get("/api/runs").json()["runs"][0]
    scores = PatchScores.read(runs[0])
    t = int(np.argmax([np.nanmax(np.nan_to_num(s, nan=-np.inf)) for s in scores.score]))  # the date of the top score
    jpg = Image.open(io.BytesIO(client.get(f"/api/runs/run/dates/{t}/image.jpg").content))
    png = Image.open(io.BytesIO(client.get(f"/api/runs/run/dates/{t}/image.png").content))
    valid = Image.open(io.BytesIO(client.get(f"/api/runs/run/dates/{t}/valid.png").content))
    assert jpg.format == "JPEG" and png.format == "PNG"
    assert jpg.size == png.size == valid.size == (run["width"], run["height"])  # 256 px: factor 1
    cells = scores.score[t]
    r, c = np.unravel_index(np.nanargmax(cells), cells.shape)
    full = np.asarray(Image.open(io.BytesIO(client.get(f"/api/runs/run/dates/{t}/score.png").content)))
    assert full.shape == (run["height"], run["width"], 4)
    y, x = r * scores.stride + scores.stride // 2, c * scores.stride + scores.stride // 2
    assert full[y, x, 3] == 255  # the highest-scoring cell is drawn where its patch is
    high = float(np.nanmax(cells)) + 1
    none = np.asarray(Image.open(io.BytesIO(client.get(f"/api/runs/run/dates/{t}/score.png?threshold={high}").content)))
    assert none[..., 3].max() == 0
    mid = float(np.nanmedian(cells))
    some = np.asarray(Image.open(io.BytesIO(client.get(f"/api/runs/run/dates/{t}/score.png?threshold={mid}").content)))
    opaque = (some[..., 3] > 0).mean()
    assert 0 < opaque < (full[..., 3] > 0).mean()


def test_image_errors(client: TestClient) -> None:
    n = len(client.get("/api/runs").json()["runs"][0]["dates"])
    for url in (
        f"/api/runs/run/dates/{n}/image.jpg",
        "/api/runs/nope/dates/0/image.jpg",
        "/api/runs/run/dates/-1/valid.png",
    ):
        r = client.get(url)
        assert r.status_code == 404, url
        assert "detail" in r.json()
    assert client.get("/api/runs/run/dates/x/image.jpg").status_code == 422
    assert client.get("/api/runs/run/dates/1/score.png?threshold=nan").status_code == 422


def test_run_without_its_input_has_no_imagery_but_works(runs: tuple[Path, Path], tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(runs[0], moved)
    info = json.loads((moved / "run.json").read_text())
    info["source"] = str(tmp_path / "gone")
    (moved / "run.json").write_text(json.dumps(info))
    c = TestClient(create_app([moved]))
    run = c.get("/api/runs").json()["runs"][0]
    assert run["has_imagery"] is False
    assert c.get("/api/runs/moved/dates/1/image.jpg").status_code == 404
    assert c.get("/api/runs/moved/dates/1/score.png").status_code == 200  # the score maps are in the run folder
    assert len(_items(c)) == run["n_events"]


def test_footprints_and_figures(client: TestClient, runs: tuple[Path, Path]) -> None:
    gj = client.get("/api/runs/run/events.geojson").json()
    changes, _ = _catalog(runs[0])
    assert len(gj["features"]) == len(changes)
    size = client.get("/api/runs").json()["runs"][0]["patch_size"]
    for f in gj["features"]:
        ring = np.asarray(f["geometry"]["coordinates"][0])
        row = changes.loc[changes["event_id"] == f["properties"]["event_id"]].iloc[0]
        assert ring[:, 0].min() == row["col"] * size and ring[:, 1].max() == -row["row"] * size
    listed = client.get("/api/runs").json()["runs"][0]["figures"]
    for name in listed:
        assert client.get(f"/api/runs/run/figures/{name}").content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/api/runs/run/figures/nothere.png").status_code == 404


# ---------------------------------------------------------------------------------------------------------------------
# the list and a change's page


@pytest.mark.parametrize("sort", ["rank", "rarity", "magnitude", "score", "date"])
def test_sorting(client: TestClient, sort: str) -> None:
    items = _items(client, sort=sort)
    key = {"rank": "feedback_rank", "date": "date"}.get(sort, sort)
    values = [it[key] for it in items if it[key] is not None]
    expected = sorted(values) if sort in ("rank", "date") else sorted(values, reverse=True)
    assert values == expected
    flipped = [it[key] for it in _items(client, sort=sort, order="asc" if sort not in ("rank", "date") else "desc")]
    assert [v for v in flipped if v is not None] == expected[::-1]


def test_filters_and_pages(client: TestClient) -> None:
    every = _items(client)
    assert {it["run"] for it in every} == {"run", "run2"}
    one = _items(client, run="run")
    assert one and all(it["run"] == "run" for it in one)
    cluster = one[0]["cluster"]
    assert {it["cluster"] for it in _items(client, run="run", cluster=cluster)} == {cluster}
    dates = sorted({it["date"] for it in one})
    mid = dates[len(dates) // 2]
    later = _items(client, run="run", date_from=mid)
    assert later and all(it["date"] >= mid for it in later)
    assert len(later) == sum(it["date"] >= mid for it in one)
    assert all(it["status"] == "confirmed" for it in _items(client, status="confirmed"))
    x0, y0, x1, y1 = one[0]["bbox"]
    boxed = _items(client, run="run", bbox=f"{x0},{y0},{x1},{y1}")
    assert one[0]["event_id"] in {it["event_id"] for it in boxed}
    for it in boxed:
        bx0, by0, bx1, by1 = it["bbox"]
        assert bx1 >= x0 and bx0 <= x1 and by1 >= y0 and by0 <= y1
    page = client.get("/api/changes", params={"run": "run", "limit": 3, "offset": 2}).json()
    assert page["total"] == len(one)
    assert [it["event_id"] for it in page["items"]] == [it["event_id"] for it in one[2:5]]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"sort": "colour"}, 422),
        ({"limit": 0}, 422),
        ({"limit": 10_000}, 422),
        ({"bbox": "0,0,1,1"}, 400),
        ({"run": "run", "bbox": "0,0,1"}, 400),
        ({"run": "run", "date_from": "last tuesday"}, 400),
        ({"run": "../run"}, 404),
        ({"status": "maybe"}, 422),
    ],
)
def test_list_rejects_bad_parameters(client: TestClient, params: dict, status: int) -> None:
    r = client.get("/api/changes", params=params)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_change_detail(client: TestClient, runs: tuple[Path, Path]) -> None:
    top = _items(client, run="run")[0]
    d = client.get(f"/api/changes/run/{top['event_id']}").json()
    assert d["item"]["event_id"] == top["event_id"]
    scores = PatchScores.read(runs[0])
    series = d["series"]
    assert len(series["scores"]) == len(series["dates"]) == len(scores.times)
    expected = scores.score[:, top["row"], top["col"]]
    got = np.array([np.nan if v is None else v for v in series["scores"]])
    np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)
    clear = d["clear"]
    vf = scores.valid_fraction[:, top["row"], top["col"]]
    assert clear == [i for i, v in enumerate(vf) if v >= 0.9]
    t = series["dates"].index(top["date"])
    if top["before"] is not None:
        assert top["before"] < t and top["before"] in clear
        assert not any(top["before"] < i < t for i in clear)  # the nearest clear date
    if top["after"] is not None:
        assert top["after"] >= t and top["after"] in clear
    assert d["cluster"]["cluster"] == top["cluster"]
    # the score its own patch needed, as the catalog records it (the chart draws it)
    catalog = pd.read_parquet(runs[0] / "changes.parquet", columns=["event_id", "score_threshold"])
    need = float(catalog.set_index("event_id").loc[top["event_id"], "score_threshold"])
    assert d["item"]["score_threshold"] == pytest.approx(need) and np.isfinite(need)
    thumb = client.get(f"/api/changes/run/{top['event_id']}/thumb/{clear[0]}.png")
    assert Image.open(io.BytesIO(thumb.content)).format == "PNG"


def test_unknown_changes_are_404(client: TestClient) -> None:
    top = _items(client, run="run")[0]
    for url in (
        "/api/changes/run/aoi:2000-01-01:r0c0",
        f"/api/changes/run2/{top['event_id']}",  # right id, wrong run
        f"/api/changes/nope/{top['event_id']}",
        f"/api/changes/run/{top['event_id']}/thumb/999.png",
    ):
        assert client.get(url).status_code == 404, url
    r = client.post("/api/similar", json={"run": "run", "event_id": "x:y"})
    assert r.status_code == 404


# ---------------------------------------------------------------------------------------------------------------------
# search and labels


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_similar_searches_every_run_by_cosine(client: TestClient, runs: tuple[Path, Path]) -> None:
    top = _items(client, run="run")[0]
    res = client.post("/api/similar", json={"run": "run", "event_id": top["event_id"], "k": 10}).json()
    items = res["items"]
    assert len(items) == 10 and res["used"] == {"relevant": 0, "irrelevant": 0}
    sims = [it["similarity"] for it in items]
    assert sims == sorted(sims, reverse=True)
    assert top["event_id"] not in {it["event_id"] for it in items if it["run"] == "run"}
    assert not any(it["run"] == "run" and (it["row"], it["col"]) == (top["row"], top["col"]) for it in items)
    # the similarities are the cosines against the query's change vector, in either run
    frames = {rid: _catalog(root) for rid, root in zip(("run", "run2"), runs, strict=True)}
    q = frames["run"][1][frames["run"][0]["event_id"].tolist().index(top["event_id"])]
    for it in items:
        frame, vecs = frames[it["run"]]
        v = vecs[frame["event_id"].tolist().index(it["event_id"])]
        assert it["similarity"] == pytest.approx(float(_unit(q) @ _unit(v)), abs=1e-4)
    # nothing better was left out: every other event scores at most the last result
    allv = np.vstack([_unit(frames[r][1]) for r in ("run", "run2")])
    cos = allv @ _unit(q)
    assert np.sort(cos)[::-1][1 + 10 + 5] <= sims[-1] + 1e-4 or len(cos) < 20
    only = client.post("/api/similar", json={"run": "run", "event_id": top["event_id"], "runs": ["run2"]}).json()
    assert only["items"] and {it["run"] for it in only["items"]} == {"run2"}


def test_feedback_moves_the_query_and_drops_irrelevant(client: TestClient, runs: tuple[Path, Path]) -> None:
    top = _items(client, run="run")[0]
    plain = client.post("/api/similar", json={"run": "run", "event_id": top["event_id"], "k": 15}).json()["items"]
    rel, irr = plain[3], plain[0]
    _label(client, rel["run"], "relevant", event_id=rel["event_id"])
    _label(client, irr["run"], "irrelevant", event_id=irr["event_id"])
    steered = client.post("/api/similar", json={"run": "run", "event_id": top["event_id"], "k": 15}).json()
    assert steered["used"] == {"relevant": 1, "irrelevant": 1}
    ids = [(it["run"], it["event_id"]) for it in steered["items"]]
    assert (irr["run"], irr["event_id"]) not in ids
    frames = {rid: _catalog(root) for rid, root in zip(("run", "run2"), runs, strict=True)}

    def vec(run: str, eid: str) -> np.ndarray:
        frame, vecs = frames[run]
        return _unit(vecs[frame["event_id"].tolist().index(eid)])

    query = (
        vec("run", top["event_id"])
        + RELEVANT_WEIGHT * vec(rel["run"], rel["event_id"])
        - IRRELEVANT_WEIGHT * vec(irr["run"], irr["event_id"])
    )
    for it in steered["items"]:
        assert it["similarity"] == pytest.approx(float(_unit(query) @ vec(it["run"], it["event_id"])), abs=1e-4)
    unsteered = client.post(
        "/api/similar", json={"run": "run", "event_id": top["event_id"], "k": 15, "use_feedback": False}
    ).json()
    assert [(it["run"], it["event_id"]) for it in unsteered["items"]] == [(it["run"], it["event_id"]) for it in plain]


def test_labels_reorder_the_ranking(client: TestClient) -> None:
    before = _items(client, run="run")
    last = before[-1]
    _label(client, "run", "relevant", event_id=last["event_id"])
    first = _items(client, run="run")[0]
    assert first["event_id"] == last["event_id"] and first["label"] == "relevant" and first["label_source"] == "event"
    victim = before[0]["cluster"]
    _label(client, "run", "irrelevant", cluster=victim)
    after = _items(client, run="run")
    tail = [it for it in after if it["cluster"] == victim and it["event_id"] != last["event_id"]]
    head = [it for it in after if it["cluster"] != victim]
    assert tail and max(it["feedback_rank"] for it in head) < min(it["feedback_rank"] for it in tail)
    assert all(it["label"] == "irrelevant" and it["label_source"] == "type" for it in tail)
    # within a tier the run's own order is kept
    assert [it["rank"] for it in head[1:]] == sorted(it["rank"] for it in head[1:])
    assert {it["event_id"] for it in _items(client, run="run", label="irrelevant")} == {it["event_id"] for it in tail}
    _label(client, "run", "none", cluster=victim)
    assert [it["event_id"] for it in _items(client, run="run")][1:] == [
        it["event_id"] for it in before if it["event_id"] != last["event_id"]
    ]


def test_labels_survive_a_restart_and_export(runs: tuple[Path, Path]) -> None:
    import geopandas as gpd

    c = TestClient(create_app(list(runs)))
    items = _items(c, run="run")
    _label(c, "run", "relevant", event_id=items[0]["event_id"])
    _label(c, "run", "irrelevant", event_id=items[1]["event_id"])
    _label(c, "run", "relevant", cluster=items[2]["cluster"])
    assert (runs[0] / "feedback.sqlite").is_file()
    again = TestClient(create_app(list(runs)))
    labels = again.get("/api/feedback", params={"run": "run"}).json()["labels"]
    assert {(lab["event_id"], lab["cluster"], lab["label"]) for lab in labels} == {
        (items[0]["event_id"], None, "relevant"),
        (items[1]["event_id"], None, "irrelevant"),
        (None, items[2]["cluster"], "relevant"),
    }
    r = again.get("/api/feedback/export.parquet", params={"run": "run"})
    assert r.status_code == 200
    path = runs[0].parent / "labels.parquet"
    path.write_bytes(r.content)
    gdf = gpd.read_parquet(path)
    changes = gpd.read_parquet(runs[0] / "changes.parquet")
    assert gdf.crs == changes.crs
    typed = set(changes.loc[changes["cluster"] == items[2]["cluster"], "event_id"])
    assert set(gdf["event_id"]) == typed | {items[0]["event_id"], items[1]["event_id"]}
    assert gdf.set_index("event_id").loc[items[1]["event_id"], "label"] == "irrelevant"
    assert again.get("/api/feedback/export.parquet", params={"run": "nope"}).status_code == 404


def test_concurrent_label_writes_lose_nothing(client: TestClient) -> None:
    items = _items(client)
    errors: list[str] = []

    def mark(it: dict, label: str) -> None:
        r = client.post("/api/feedback", json={"run": it["run"], "event_id": it["event_id"], "label": label})
        if r.status_code != 200:
            errors.append(r.text)

    threads = [
        threading.Thread(target=mark, args=(it, "relevant" if i % 2 else "irrelevant"))
        for i, it in enumerate(items[:24])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stored = {(lab["run"], lab["event_id"]): lab["label"] for lab in client.get("/api/feedback").json()["labels"]}
    assert stored == {
        (it["run"], it["event_id"]): "relevant" if i % 2 else "irrelevant" for i, it in enumerate(items[:24])
    }


@pytest.mark.parametrize(
    "body",
    [
        {"run": "run", "label": "relevant"},  # neither an event nor a type
        {"run": "run", "event_id": "a", "cluster": 0, "label": "relevant"},
        {"run": "run", "cluster": 999, "label": "relevant"},
        {"run": "run", "event_id": "not:an:event", "label": "relevant"},
        {"run": "run", "event_id": "a", "label": "maybe"},
        {"run": "run", "event_id": "a", "label": "relevant", "extra": 1},
        {"run": "nope", "event_id": "a", "label": "relevant"},
    ],
)
def test_bad_feedback_is_refused_and_stores_nothing(client: TestClient, runs: tuple[Path, Path], body: dict) -> None:
    r = client.post("/api/feedback", json=body)
    assert r.status_code in (400, 404, 422), r.text
    assert client.get("/api/feedback").json()["labels"] == []


def test_type_tree(client: TestClient) -> None:
    trees = client.get("/api/types").json()["runs"]
    assert [t["run"] for t in trees] == ["run", "run2"]

    def leaves_of(node: dict) -> list[dict]:
        if not node["children"]:
            return [node]
        assert node["size"] == sum(ch["size"] for ch in node["children"])
        return [leaf for ch in node["children"] for leaf in leaves_of(ch)]

    for t in trees:
        leaves = leaves_of(t["tree"])
        items = _items(client, run=t["run"])
        assert sorted(leaf["cluster"] for leaf in leaves) == sorted({it["cluster"] for it in items})
        for leaf in leaves:
            assert leaf["size"] == sum(it["cluster"] == leaf["cluster"] for it in items)
            assert set(leaf["examples"]) <= {it["event_id"] for it in items if it["cluster"] == leaf["cluster"]}


# ---------------------------------------------------------------------------------------------------------------------
# what the app refuses


@pytest.mark.parametrize(
    "url",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/api/runs/run/figures/..%2f..%2frun.json",
        "/api/runs/run/figures/%2fetc%2fpasswd",
        "/api/runs/run/figures/....%2f%2frun.json",
        "/api/runs/..%2frun/events.geojson",
        "/api/runs/%2e%2e/dates/0/image.jpg",
        "/api/changes/run/..%2f..%2fetc%2fpasswd",
        "/api/changes/run/%2fetc%2fpasswd/thumb/0.png",
        "/api/feedback/export.parquet?run=../run",
        "/run.json",
        "/manifest.json",
    ],
)
def test_path_traversal_is_refused(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code in (400, 404, 422), (url, r.status_code)
    assert b"root:" not in r.content and b"changescope_run" not in r.content


def test_symlinked_figure_out_of_the_run_is_not_served(runs: tuple[Path, Path], tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    (runs[0] / "figures").mkdir(exist_ok=True)
    (runs[0] / "figures" / "leak.png").symlink_to(secret)
    c = TestClient(create_app(list(runs)))
    assert "leak.png" not in c.get("/api/runs").json()["runs"][0]["figures"]
    r = c.get("/api/runs/run/figures/leak.png")
    assert r.status_code == 404 and b"secret" not in r.content


def test_oversized_requests_are_refused(client: TestClient) -> None:
    big = {"run": "run", "event_id": "x" * (MAX_BODY + 10), "label": "relevant"}
    r = client.post("/api/feedback", json=big)
    assert r.status_code == 413 and "KiB" in r.json()["detail"]

    def chunks():  # no Content-Length: the body streams in
        for _ in range(80):
            yield b"x" * 1024

    r = client.post("/api/similar", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/api/feedback").json()["labels"] == []


def test_foreign_hosts_and_headers(client: TestClient) -> None:
    assert client.get("/api/runs", headers={"host": "evil.example"}).status_code == 400
    r = client.get("/api/runs")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/").status_code == 200


def test_serve_refuses_bad_run_folders(tmp_path: Path) -> None:
    from changescope.errors import ParameterError

    with pytest.raises(ParameterError, match="no finished run"):
        create_app([tmp_path])
    with pytest.raises(ParameterError, match="at least one RUN_DIR"):
        create_app([])
