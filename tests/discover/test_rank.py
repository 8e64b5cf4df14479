import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from changescope.discover import (
    ChangeClusterer,
    discover_changes,
    rank_events,
    rarity,
    read_clusters_json,
    summarize_clusters,
    write_clusters_json,
)
from changescope.discover.density import knn_mean_distance
from changescope.discover.index import IndexParams
from changescope.discover.rank import rank_normalize, size_rarity
from changescope.errors import CorruptFileError, ParameterError
from changescope.testing.catalog import make_test_catalog, planted_vectors


def test_planted_rare_type_is_rarer_than_common_type():
    vectors, types, _ = planted_vectors(0, (150, 100, 6), 16, spread=0.3)
    labels = ChangeClusterer().fit_predict(vectors)
    r = rarity(vectors, labels)
    assert r.min() >= 0 and r.max() <= 1
    assert r[types == 2].mean() > r[types == 0].mean() + 0.2
    assert r[types == 2].min() > np.median(r[types == 0])


def test_size_rarity_noise_is_rarest():
    labels = np.array([0] * 8 + [1] * 2 + [-1])
    s = size_rarity(labels)
    assert s[-1] == 1.0
    assert s[0] < s[8] < s[-1]
    assert size_rarity(np.zeros(5, dtype=int)).max() == 0.0
    np.testing.assert_array_equal(size_rarity(np.array([-1, -1])), [1.0, 1.0])


def test_knn_mean_distance_matches_brute_force():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(300, 8)).astype(np.float32)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    d = 1 - u @ u.T
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, :5].mean(axis=1)
    np.testing.assert_allclose(knn_mean_distance(v, 5), expected, atol=1e-5)
    approx = knn_mean_distance(v, 5, params=IndexParams(kind="ivf", nlist=4, nprobe=4))
    np.testing.assert_allclose(approx, expected, atol=1e-5)  # all lists probed: exact
    assert knn_mean_distance(v[:1], 5).tolist() == [0.0]


def test_rank_normalize():
    np.testing.assert_allclose(rank_normalize(np.array([3.0, 1.0, 2.0])), [1.0, 0.0, 0.5])
    assert rank_normalize(np.array([5.0])).tolist() == [1.0]


def _frame(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "event_id": [f"a:2018-01-01:r{i}c0" for i in range(n)],
            "rarity": rng.uniform(size=n),
            "magnitude": rng.uniform(0, 5, size=n),
        }
    )


def test_rank_by_magnitude_and_rarity():
    f = _frame()
    by_mag = rank_events(f, by="magnitude")
    assert sorted(by_mag["rank"]) == list(range(1, 51))
    np.testing.assert_array_equal(by_mag.sort_values("rank")["magnitude"], np.sort(f["magnitude"])[::-1])
    by_rar = rank_events(f, by="rarity")
    np.testing.assert_array_equal(by_rar.sort_values("rank")["rarity"], np.sort(f["rarity"])[::-1])
    assert "rank" not in f.columns  # input untouched


def test_mix_interpolates():
    f = _frame(200, seed=1)
    rar = rank_events(f, by="rarity")["rank"]
    mag = rank_events(f, by="magnitude")["rank"]
    np.testing.assert_array_equal(rank_events(f, by="mix", weight=1.0)["rank"], rar)
    np.testing.assert_array_equal(rank_events(f, by="mix", weight=0.0)["rank"], mag)
    corr_r, corr_m = [], []
    for w in (0.2, 0.5, 0.8):
        mix = rank_events(f, by="mix", weight=w)["rank"]
        corr_r.append(spearmanr(mix, rar).statistic)
        corr_m.append(spearmanr(mix, mag).statistic)
    assert corr_r == sorted(corr_r) and corr_m == sorted(corr_m, reverse=True)
    assert min(corr_r[1], corr_m[1]) > 0.5


def test_rank_errors_and_empty():
    f = _frame()
    with pytest.raises(ParameterError, match="by='size'"):
        rank_events(f, by="size")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="weight=1.5"):
        rank_events(f, by="mix", weight=1.5)
    with pytest.raises(ParameterError, match="magnitude"):
        rank_events(f.drop(columns="magnitude"), by="mix")
    assert rank_events(f.iloc[:0], by="rarity")["rank"].size == 0


def test_discovery_summaries_and_clusters_json(tmp_path):
    cat, _ = make_test_catalog(0, type_sizes=(40, 30, 20), discover=False, patch_size=80.0)
    found = discover_changes(cat.frame, cat.vectors, by="mix")
    frame = found.frame
    assert set(frame.columns) >= {"cluster", "rarity", "rank"}
    assert summarize_clusters(frame, cat.vectors) == found.clusters
    summaries = summarize_clusters(frame, cat.vectors, n_examples=3)
    assert all(len(s["examples"]) == min(3, s["size"]) for s in summaries)
    sizes = {s["cluster"]: s["size"] for s in summaries}
    assert sum(sizes.values()) == len(frame)
    for s in summaries:
        mask = frame["cluster"].to_numpy() == s["cluster"]
        assert sum(s["per_date"].values()) == s["size"]
        assert s["area"] == pytest.approx(80.0 * 80.0 * s["size"])
        assert s["first_date"] <= s["last_date"]
        ranks = frame.set_index("event_id").loc[s["examples"], "rank"].to_numpy()
        assert list(ranks) == sorted(ranks) and ranks[0] == frame["rank"].to_numpy()[mask].min()
        expected = np.linalg.norm(cat.vectors[mask].mean(axis=0))
        assert s["centroid_magnitude"] == pytest.approx(expected, rel=1e-5)
        assert s["aois"] == {"aoi-a": s["size"]}
    path = write_clusters_json(tmp_path / "clusters.json", found)
    data = read_clusters_json(path)
    assert data["n_events"] == 90 and data["n_clusters"] == found.clusterer.n_clusters_
    assert data["params"]["method"] == "hdbscan" and data["params"]["rank_by"] == "mix"
    assert data["hierarchy"]["metric"] == "cosine"
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(CorruptFileError):
        read_clusters_json(tmp_path / "bad.json")


def test_mix_ranking_favours_confident_detections_when_scores_are_known() -> None:
    import pandas as pd

    from changescope.discover.rank import rank_events

    frame = pd.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "rarity": [0.9, 0.9, 0.1],
            "magnitude": [5.0, 5.0, 1.0],
            "score": [3.0, 12.0, 20.0],
        }
    )
    ranked = rank_events(frame, "mix").set_index("event_id")["rank"]
    assert ranked["b"] < ranked["a"]  # same rarity and magnitude, detected more clearly
    without = rank_events(frame.drop(columns="score"), "mix").set_index("event_id")["rank"]
    assert without["a"] < without["b"]  # ties broken by event id when no score is known
    assert list(rank_events(frame, "rarity").sort_values("rank")["event_id"]) == ["a", "b", "c"]
