import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from changescope.discover import ChangeClusterer, centroid_hierarchy
from changescope.errors import EmptySeriesError, ParameterError
from changescope.testing.catalog import planted_vectors


@pytest.mark.parametrize("dim", [16, 64])
def test_hdbscan_recovers_planted_types(dim):
    vectors, types, _ = planted_vectors(0, (80, 60, 40, 30), dim, spread=0.3)
    clus = ChangeClusterer().fit(vectors)
    assert adjusted_rand_score(types, clus.labels_) > 0.9
    assert clus.n_clusters_ == 4
    # renumbered by decreasing size
    assert list(clus.sizes_) == sorted(clus.sizes_, reverse=True)
    assert clus.min_cluster_size_ == 5


def test_kmeans_option_and_centroids_in_original_space():
    vectors, types, _ = planted_vectors(1, (50, 50, 50), 24, spread=0.3)
    clus = ChangeClusterer("kmeans", n_clusters=3, random_state=0).fit(vectors)
    assert adjusted_rand_score(types, clus.labels_) > 0.95
    assert (clus.labels_ >= 0).all()
    for c in range(3):
        np.testing.assert_allclose(clus.centroids_[c], vectors[clus.labels_ == c].mean(axis=0), rtol=1e-5)
    assert clus.hierarchy_["tree"]["size"] == 150


def test_seeded_and_deterministic():
    vectors, _, _ = planted_vectors(2, (40, 30, 20), 48, spread=0.4)
    for method in ("hdbscan", "kmeans"):
        a = ChangeClusterer(method, random_state=3).fit_predict(vectors)
        b = ChangeClusterer(method, random_state=3).fit_predict(vectors)
        np.testing.assert_array_equal(a, b)


def test_subsampled_fit_labels_everyone():
    vectors, types, _ = planted_vectors(3, (300, 200, 100), 16, spread=0.3)
    clus = ChangeClusterer(max_fit_samples=200, min_cluster_size=10).fit(vectors)
    assert clus.labels_.shape == (600,)
    assert adjusted_rand_score(types, clus.labels_) > 0.9


def test_hierarchy_merges_similar_types_first():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 32))
    # four types: a, a', b, b' (primes are small rotations of their partner)
    dirs = np.stack([a, a + 0.25 * rng.normal(size=32), b, b + 0.25 * rng.normal(size=32)])
    vectors = np.concatenate([d + 0.05 * rng.normal(size=(40, 32)) for d in dirs]).astype(np.float32)
    types = np.repeat(np.arange(4), 40)
    clus = ChangeClusterer("kmeans", n_clusters=4).fit(vectors)
    # map clusters to planted types
    to_type = {c: int(np.bincount(types[clus.labels_ == c]).argmax()) for c in range(4)}
    merges = clus.hierarchy_["merges"]
    assert len(merges) == 3
    first_two = [{to_type[c] for c in m["clusters"]} for m in merges[:2]]
    assert sorted(map(sorted, first_two)) == [[0, 1], [2, 3]]
    assert merges[0]["distance"] <= merges[1]["distance"] <= merges[2]["distance"]
    root = clus.hierarchy_["tree"]
    assert root["id"] == 6 and sorted(root["clusters"]) == [0, 1, 2, 3] and len(root["children"]) == 2


def test_centroid_hierarchy_small_cases():
    assert centroid_hierarchy(np.zeros((0, 3)), np.zeros(0, dtype=int))["tree"] is None
    one = centroid_hierarchy(np.ones((1, 3)), np.array([7]))
    assert one["merges"] == [] and one["tree"] == {"id": 0, "cluster": 0, "size": 7}
    # a zero centroid does not produce NaN distances
    two = centroid_hierarchy(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([1, 2]))
    assert np.isfinite(two["merges"][0]["distance"])


def test_empty_catalog_is_a_clear_error():
    with pytest.raises(EmptySeriesError, match="catalog is empty"):
        ChangeClusterer().fit(np.zeros((0, 8), dtype=np.float32))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_few_events_do_not_crash(n):
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    clus = ChangeClusterer().fit(vectors)
    assert (clus.labels_ == -1).all()
    assert clus.centroids_.shape == (0, 8)
    km = ChangeClusterer("kmeans", n_clusters=8).fit(vectors)
    assert km.n_clusters_ == n
    assert km.hierarchy_["tree"]["size"] == n


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "dbscan"}, "method='dbscan'"),
        ({"n_clusters": 0}, "n_clusters=0"),
        ({"min_cluster_size": 1}, "min_cluster_size=1"),
        ({"max_dims": 0}, "max_dims=0"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        ChangeClusterer(**kwargs).fit(np.ones((10, 4), dtype=np.float32))


def test_non_finite_vectors_rejected():
    v = np.ones((10, 4), dtype=np.float32)
    v[3, 1] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        ChangeClusterer().fit(v)
