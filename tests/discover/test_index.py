import json

import numpy as np
import pandas as pd
import pytest

from changescope.discover import Catalog, ChangeIndex, IndexParams, parse_bbox, parse_dates
from changescope.errors import EmptySeriesError, ParameterError
from changescope.testing.catalog import make_test_catalog, planted_vectors, write_test_catalog


def _brute(cat, qpos, k, allowed=None):
    u = cat.vectors / np.linalg.norm(cat.vectors, axis=1, keepdims=True)
    s = u @ u[qpos]
    s[qpos] = -np.inf
    if allowed is not None:
        s[~allowed] = -np.inf
    order = np.argsort(-s, kind="stable")[:k]
    return order[np.isfinite(s[order])]


@pytest.fixture(scope="module")
def big():
    """1500 events of 10 planted types in a 16x16 grid over 12 dates."""
    vectors, _, _ = planted_vectors(5, (400, 300, 200, 150, 120, 100, 90, 70, 40, 30), 24, spread=0.6)
    cat, _ = make_test_catalog(
        5, vectors=vectors, type_sizes=(len(vectors),), grid=(16, 16), n_dates=12, discover=False
    )
    return cat


def test_exact_index_returns_true_neighbours(big):
    index = ChangeIndex.build(big)
    assert index.params.kind == "flat"
    for qpos in (0, 500, 1499):
        qid = big.frame["event_id"].iloc[qpos]
        res = index.query(qid, k=15)
        assert qid not in set(res["event_id"])
        np.testing.assert_array_equal(res["event_id"], big.frame["event_id"].to_numpy()[_brute(big, qpos, 15)])
        assert res["similarity"].is_monotonic_decreasing
        assert res["similarity"].between(-1.0001, 1.0001).all()


def test_query_by_vector(big):
    index = ChangeIndex.build(big)
    res = index.query(big.vectors[7] * 3.0, k=1)  # scale does not matter: cosine
    assert res["event_id"].iloc[0] == big.frame["event_id"].iloc[7]
    assert res["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ParameterError, match="has 3 values"):
        index.query(np.ones(3), k=1)
    with pytest.raises(ParameterError, match="exclude_same_patch"):
        index.query(big.vectors[7], exclude_same_patch=True)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall(big, kind):
    params = IndexParams(exact_threshold=100, nprobe=6) if kind == "ivf" else IndexParams(kind="hnsw", ef_search=16)
    index = ChangeIndex.build(big, params)
    assert index.params.kind == kind
    if kind == "ivf":
        assert index.params.nlist == 38 and index.params.nprobe == 6
        assert IndexParams(exact_threshold=100).resolve(len(big)).nprobe == 38  # default: capped at nlist
    rng = np.random.default_rng(0)
    recalls = []
    for qpos in rng.choice(len(big), 60, replace=False):
        res = index.query(big.frame["event_id"].iloc[qpos], k=10)
        truth = set(big.frame["event_id"].to_numpy()[_brute(big, qpos, 10)])
        recalls.append(len(truth & set(res["event_id"])) / 10)
    assert np.mean(recalls) >= 0.9


@pytest.mark.parametrize("subset_exact", [20_000, 0])
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_filters(big, kind, subset_exact):
    index = ChangeIndex.build(big, IndexParams(kind=kind, nlist=16, nprobe=2))
    index.subset_exact = subset_exact  # 0: always over-fetch through the index
    f = big.frame
    qpos = 10
    qid = f["event_id"].iloc[qpos]
    t = pd.DatetimeIndex(f["time"])
    dates = (pd.Timestamp("2018-03-01"), pd.Timestamp("2018-05-01"))
    res = index.query(qid, k=25, dates=dates)
    assert len(res) == 25
    assert ((res["time"] >= dates[0]) & (res["time"] <= dates[1])).all()
    allowed = np.asarray((t >= dates[0]) & (t <= dates[1]))
    truth = f["event_id"].to_numpy()[_brute(big, qpos, 25, allowed)]
    if kind == "flat" or subset_exact:
        np.testing.assert_array_equal(res["event_id"], truth)  # exact index, or an exact scan of the allowed subset
    else:
        assert len(set(truth) & set(res["event_id"])) >= 20  # over-fetch through IVF with nprobe 2 of 16
    # bbox: the top-left quarter of the 16x16 grid of 80 m patches
    box = (500_000.0, 5_000_000.0 - 8 * 80 + 1, 500_000.0 + 8 * 80 - 1, 5_000_000.0)
    res = index.query(qid, k=30, bbox=box)
    assert len(res) == 30 and (res["row"] < 8).all() and (res["col"] < 8).all()
    # open-ended dates
    res = index.query(qid, k=5, dates=(None, "2018-01-31"))
    assert (res["time"] < pd.Timestamp("2018-02-01")).all()
    # filters that leave nothing
    assert len(index.query(qid, k=5, dates=("2030-01-01", None))) == 0


def test_exclude_same_patch_and_self():
    vectors, _, _ = planted_vectors(0, (30,), 8, spread=0.05)
    cat, _ = make_test_catalog(0, vectors=vectors, type_sizes=(30,), grid=(2, 3), n_dates=6, discover=False)
    index = ChangeIndex.build(cat)
    f = cat.frame
    qid = f["event_id"].iloc[0]
    same = (f["row"] == f["row"].iloc[0]) & (f["col"] == f["col"].iloc[0])
    res = index.query(qid, k=100)
    assert len(res) == len(cat) - 1 and qid not in set(res["event_id"])
    res = index.query(qid, k=100, exclude_same_patch=True)
    assert len(res) == len(cat) - int(same.sum())
    assert not (res["row"].eq(f["row"].iloc[0]) & res["col"].eq(f["col"].iloc[0])).any()


def test_bad_filters(big):
    index = ChangeIndex.build(big)
    qid = big.frame["event_id"].iloc[0]
    with pytest.raises(ParameterError, match="starts after"):
        index.query(qid, dates=("2019-01-01", "2018-01-01"))
    with pytest.raises(ParameterError, match="bbox"):
        index.query(qid, bbox=(1.0, 1.0, 0.0, 0.0))
    with pytest.raises(ParameterError, match="known AOIs"):
        index.query(qid, aois=["mars"])
    with pytest.raises(ParameterError, match="k=0"):
        index.query(qid, k=0)
    with pytest.raises(ParameterError, match="did you mean"):
        index.query(qid[:-1] + "x")


def test_parse_helpers():
    a, b = parse_dates("2018-03-01/2018-09-01")
    assert a == pd.Timestamp("2018-03-01") and b == pd.Timestamp("2018-09-01")
    assert parse_dates("/2018-09-01")[0] is None
    for bad in ("2018-03-01", "x/y", "2019-01-01/2018-01-01", "/"):
        with pytest.raises(ParameterError, match="--dates"):
            parse_dates(bad)
    assert parse_bbox("1,2,3,4") == (1.0, 2.0, 3.0, 4.0)
    for bad in ("1,2,3", "a,b,c,d", "3,2,1,4", "1,2,3,nan"):
        with pytest.raises(ParameterError, match="--bbox"):
            parse_bbox(bad)


def test_empty_catalog_search():
    cat, _ = make_test_catalog(0, type_sizes=(), discover=False)
    with pytest.raises(EmptySeriesError, match="empty"):
        ChangeIndex.build(cat).query(np.ones(16))


def test_persistence_and_stale_rebuild(tmp_path):
    run = write_test_catalog(tmp_path / "run", seed=0)
    cat = Catalog.open(run)
    first = ChangeIndex.open(cat)
    assert first.rebuilt and (run / "changes.faiss").is_file()
    meta = json.loads((run / "changes.faiss.json").read_text())
    assert meta["fingerprint"] == cat.fingerprint and meta["params"]["kind"] == "flat"
    again = ChangeIndex.open(Catalog.open(run))
    assert not again.rebuilt
    qid = cat.frame["event_id"].iloc[3]
    pd.testing.assert_frame_equal(first.query(qid, 5), again.query(qid, 5))
    # asking for other parameters rebuilds
    assert ChangeIndex.open(cat, IndexParams(kind="hnsw")).rebuilt
    assert not ChangeIndex.open(cat, IndexParams(kind="hnsw")).rebuilt
    assert not ChangeIndex.open(cat).rebuilt  # params=None accepts the saved index
    # the catalog changes: stale index rebuilt
    write_test_catalog(run, seed=1)
    changed = Catalog.open(run)
    stale = ChangeIndex.open(changed)
    assert stale.rebuilt
    assert json.loads((run / "changes.faiss.json").read_text())["fingerprint"] == changed.fingerprint
    # a missing or corrupt JSON rebuilds too
    (run / "changes.faiss.json").write_text("{not json")
    assert ChangeIndex.open(changed).rebuilt
    (run / "changes.faiss.json").unlink()
    assert ChangeIndex.open(changed).rebuilt
    assert not list(run.glob(".*tmp*"))


def test_merged_catalogs_search_across_aois(tmp_path):
    vectors, types, _ = planted_vectors(9, (40, 40), 16, spread=0.2)
    a, _ = make_test_catalog(1, aoi="aoi-a", vectors=vectors[types == 0][:20], type_sizes=(20,), discover=False)
    b, _ = make_test_catalog(
        2, aoi="aoi-b", vectors=vectors[types == 0][20:], type_sizes=(20,), discover=False, crs="EPSG:32634"
    )
    c, _ = make_test_catalog(3, aoi="aoi-c", vectors=vectors[types == 1], type_sizes=(40,), discover=False)
    merged = Catalog.merge([a, b, c])
    index = ChangeIndex.open(merged)
    assert index.path is None  # merged: in memory
    qid = a.frame["event_id"].iloc[0]
    res = index.query(qid, k=39)
    assert set(res["aoi"]) == {"aoi-a", "aoi-b"}  # the same change type, found in the other AOI
    assert set(index.query(qid, k=10, aois=["aoi-b"])["aoi"]) == {"aoi-b"}
    with pytest.raises(ParameterError, match="crs="):
        index.query(qid, bbox=(0, 0, 1, 1))
    # a box around aoi-b's grid, given in aoi-a's CRS (UTM 33N), selects aoi-b's patches
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:32634", "EPSG:32633", always_xy=True)
    box = tr.transform_bounds(500_000.0, 5_000_000.0 - 8 * 80, 500_000.0 + 8 * 80, 5_000_000.0)
    res = index.query(qid, k=50, bbox=box, crs="EPSG:32633")
    assert set(res["aoi"]) == {"aoi-b"} and len(res) == 20
