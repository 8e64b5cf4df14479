import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio

import changescope
from changescope.embed import open_embeddings
from changescope.errors import ParameterError
from changescope.report import build_report
from changescope.run import RunConfig, load_run, run_pipeline
from changescope.synthetic import make_aoi
from changescope.testing import shared_sample


@pytest.fixture(scope="module")
def small_aoi(tmp_path_factory):
    root = tmp_path_factory.mktemp("aoi")
    make_aoi(root, seed=5, size=192, months=8)
    return root


@pytest.mark.parametrize("method", ["distance", "lof"])
def test_run_writes_every_output(small_aoi, tmp_path, method):
    out = tmp_path / "run"
    res = run_pipeline(small_aoi, out, RunConfig(method=method, patch_size=32), progress=False)
    ds = changescope.open(small_aoi)
    n_t = ds.sizes["time"]
    scores = pd.read_parquet(out / "patch_scores.parquet")
    assert list(scores.columns[:8]) == ["row", "col", "y0", "x0", "size", "time", "score", "raw_score"]
    assert len(scores) == n_t * 6 * 6
    assert (scores.y0 == scores.row * 32).all() and (scores["size"] == 32).all()
    # invalid observations never get a score
    assert scores.loc[scores.valid_fraction < 0.5, "score"].isna().all()
    changes = gpd.read_parquet(out / "changes.parquet")
    assert changes.crs == ds.rio.crs
    assert {"event_id", "row", "col", "time", "score", "magnitude", "cluster", "rarity", "rank", "geometry"} <= set(
        changes.columns
    )
    assert len(changes) == res.n_events
    vectors = np.load(out / "change_vectors.npy")
    assert vectors.shape[0] == len(changes)
    if len(changes):
        assert sorted(changes["rank"]) == list(range(1, len(changes) + 1))
        first = changes.iloc[0]
        assert first.geometry.area == pytest.approx((32 * 3) ** 2)
    maps = sorted((out / "maps").glob("score_*.tif"))
    assert len(maps) == n_t
    with rasterio.open(maps[-1]) as src:
        assert src.crs == ds.rio.crs and src.shape == (6, 6)
        assert src.transform.a == pytest.approx(96.0)
        on_disk = src.read(1)
    last = scores[scores.time == scores.time.max()].sort_values(["row", "col"]).score.to_numpy().reshape(6, 6)
    np.testing.assert_allclose(on_disk, last, equal_nan=True)
    run = load_run(out)
    assert run["config"]["method"] == method and run["n_events"] == len(changes)
    assert set(run["timings_s"]) == {"open", "embed", "score", "events", "discover"}
    assert not (out / "report.html").exists()  # the run itself never builds the report
    html = build_report(out).read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    clusters = json.loads((out / "clusters.json").read_text())
    assert clusters["n_events"] == len(changes)
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(out / "changes.parquet").metadata[b"changescope"])
    assert meta["config"]["method"] == method and meta["config"]["patch_size"] == 32 and "numpy" in meta["versions"]
    assert b"geo" in pq.read_schema(out / "changes.parquet").metadata  # still GeoParquet


def test_rerun_is_identical_and_resumes(small_aoi, tmp_path):
    out = tmp_path / "run"
    run_pipeline(small_aoi, out, RunConfig(method="distance"), progress=False)
    first = pd.read_parquet(out / "patch_scores.parquet")
    mtime = (out / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns
    run_pipeline(small_aoi, out, RunConfig(method="distance"), progress=False)
    pd.testing.assert_frame_equal(first, pd.read_parquet(out / "patch_scores.parquet"))
    assert (out / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns == mtime  # the store was reused


def test_lof_refuses_two_dates(small_aoi, tmp_path):
    ds = changescope.open(small_aoi).isel(time=[0, 5])
    with pytest.raises(ParameterError, match="--method distance"):
        run_pipeline(ds, tmp_path / "r", RunConfig(method="lof"), progress=False)
    res = run_pipeline(ds, tmp_path / "r", RunConfig(method="distance"), progress=False)
    assert res.out.joinpath("run.json").exists()


def test_load_run_without_run(tmp_path):
    with pytest.raises(ParameterError, match="no finished run"):
        load_run(tmp_path)


@pytest.mark.realdata
@pytest.mark.slow
def test_run_on_oscd_and_cbers(shared_data, tmp_path):
    city = shared_sample(shared_data, "oscd/images/bercy")
    with pytest.raises(ParameterError, match="two-date"):
        run_pipeline(city, tmp_path / "oscd_lof", RunConfig(method="lof"), progress=False)
    res = run_pipeline(city, tmp_path / "oscd", RunConfig(method="distance", patch_size=16), progress=False)
    assert (res.out / "changes.parquet").exists()
    cbers = shared_sample(shared_data, "cbers4_awfi_sits")
    res = run_pipeline(cbers, tmp_path / "cbers", RunConfig(method="lof", patch_size=5), progress=False)
    scores = pd.read_parquet(res.out / "patch_scores.parquet")
    assert scores.time.nunique() == 24 and scores.score.notna().any()


def test_multiscale_scores_are_at_least_the_patch_scores(small_aoi, tmp_path):
    single = run_pipeline(small_aoi, tmp_path / "one", RunConfig(method="distance", subdivide=1), progress=False)
    multi = run_pipeline(small_aoi, tmp_path / "two", RunConfig(method="distance"), progress=False)
    assert not (single.out / "subpatches.zarr").exists()
    sub = open_embeddings(multi.out / "subpatches.zarr")
    emb = open_embeddings(multi.out / "embeddings.zarr")
    assert (sub.sizes["row"], sub.sizes["col"]) == (2 * emb.sizes["row"], 2 * emb.sizes["col"])
    a = pd.read_parquet(single.out / "patch_scores.parquet")
    b = pd.read_parquet(multi.out / "patch_scores.parquet")
    np.testing.assert_array_equal(a["raw_score"], b["raw_score"])  # the patch scale itself is unchanged
    both = a["score"].notna() & b["score"].notna()
    assert (a["score"].isna() == b["score"].isna()).all()
    assert (b["score"][both] >= a["score"][both] - 1e-6).all()
    assert (b["score"][both] > a["score"][both] + 1e-3).any()  # some sub-patch stands out more than its patch
    assert load_run(multi.out)["config"]["subdivide"] is None


def test_subdivide_that_cannot_split_the_patch_is_refused(small_aoi, tmp_path):
    with pytest.raises(ParameterError, match="subdivide"):
        run_pipeline(small_aoi, tmp_path / "bad", RunConfig(method="distance", subdivide=3), progress=False)


def test_run_declares_changes_with_their_evidence_and_dates(tmp_path):
    root = tmp_path / "aoi"
    make_aoi(root, seed=8, size=256, months=10)
    out = tmp_path / "run"
    # a permissive user setting (50 expected false changes per 1000 patches) so that this small AOI has events
    res = run_pipeline(root, out, RunConfig(patch_size=16, false_alarms=50.0), progress=False)
    run = load_run(out)
    decision = run["decision"]
    assert decision["rule"] == "nfa" and decision["false_alarms_per_1000_patches"] == 50.0
    assert decision["null"]["kind"] == "reference" and decision["null"]["n_null"] >= 200
    changes = gpd.read_parquet(out / "changes.parquet")
    assert {"p_value", "nfa", "status", "date", "date_earliest", "date_latest"} <= set(changes.columns)
    assert res.n_confirmed == (changes["status"] == "confirmed").sum() == run["n_confirmed"] > 0
    epsilon = 50.0 * decision["n_patches"] / 1000
    assert (changes["nfa"] <= epsilon * (1 + 1e-9)).all()
    assert np.allclose(changes["nfa"], changes["p_value"] * decision["n_tests"])
    assert (changes["date"] == changes["date_latest"]).all() and (changes["date"] == changes["time"]).all()
    has_prior = changes["date_earliest"].notna()
    assert (changes.loc[has_prior, "date_earliest"] < changes.loc[has_prior, "date"]).all()
    assert (changes["confirmed"] == (changes["status"] == "confirmed")).all()
    with rasterio.open(out / "maps" / "change_date.tif") as src:
        assert src.count == 2 and src.nodata == 0 and src.crs == changescope.open(root).rio.crs
        codes = src.read(1)
    done = changes[changes["status"] == "confirmed"].sort_values("time").drop_duplicates(["row", "col"])
    for _, ev in done.iterrows():
        assert codes[ev["row"], ev["col"]] == int(ev["time"].strftime("%Y%m%d"))
    assert (codes > 0).sum() == len(done)
    assert res.top["confirmed"].iloc[0]  # confirmed changes come first
    assert res.headline.startswith(f"{res.n_confirmed} changes found")


def test_bad_decision_settings_are_refused_before_any_work(small_aoi, tmp_path):
    for bad in ({"false_alarms": 0.0}, {"threshold": "fdr", "fdr": 1.5}, {"threshold": "nope"}, {"cluster": "x"}):
        with pytest.raises(ParameterError, match="--"):
            run_pipeline(small_aoi, tmp_path / "run", RunConfig(**bad), progress=False)
    assert not (tmp_path / "run" / "embeddings.zarr").exists()
