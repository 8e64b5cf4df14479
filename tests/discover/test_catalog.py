import numpy as np
import pandas as pd
import pytest

from changescope.change.events import Events
from changescope.discover import Catalog, catalog_frame, make_event_ids, read_clusters_json
from changescope.discover.pipeline import discover_events
from changescope.errors import CorruptFileError, EmptySeriesError, ParameterError
from changescope.grid import PatchGrid
from changescope.testing import TEST_CRS, utm_transform
from changescope.testing.catalog import make_test_catalog, planted_vectors, write_test_catalog


def _events(n_types=(30, 20, 4), dim=8, seed=0):
    vectors, _, _ = planted_vectors(seed, n_types, dim)
    n = len(vectors)
    rng = np.random.default_rng(seed)
    patch = rng.choice(64, n, replace=False)
    times = pd.date_range("2018-01-01", periods=n, freq="D")
    frame = pd.DataFrame(
        {
            "patch": patch,
            "t": np.arange(n),
            "time": times,
            "score": rng.uniform(3, 9, n),
            "confirmed": True,
            "n_after": 2,
            "magnitude": np.linalg.norm(vectors, axis=1),
        }
    )
    before = rng.normal(size=(n, dim)).astype(np.float32)
    return Events(frame=frame, before=before, after=before + vectors, threshold=3.0)


def _grid():
    return PatchGrid(size=8, height=64, width=64, transform=utm_transform(), crs=TEST_CRS)


def test_event_ids_are_readable():
    assert make_event_ids("x", pd.to_datetime(["2018-03-01"]), [2], [11]) == ["x:2018-03-01:r2c11"]


def test_catalog_frame_from_events():
    ev, grid = _events(), _grid()
    f = catalog_frame(ev, grid, "aoi-z")
    patch = ev.frame["patch"].to_numpy()
    np.testing.assert_array_equal(f["row"] * grid.n_cols + f["col"], patch)
    assert f.crs == TEST_CRS
    assert f.geometry.iloc[0].equals(grid.polygon(int(f["row"].iloc[0]), int(f["col"].iloc[0])))
    assert f["event_id"].iloc[0].startswith("aoi-z:2018-01-01:r")


def test_write_open_round_trip(tmp_path):
    cat, _ = make_test_catalog(0)
    path = cat.write(tmp_path / "run")
    assert path.name == "changes.parquet" and (tmp_path / "run" / "change_vectors.npy").is_file()
    back = Catalog.open(tmp_path / "run")
    again = Catalog.open(path)
    assert len(back) == len(cat) and back.dim == cat.dim
    np.testing.assert_array_equal(back.vectors, cat.vectors)
    assert back.crs == TEST_CRS and back.fingerprint == cat.fingerprint == again.fingerprint
    pd.testing.assert_series_equal(back.frame["time"], cat.frame["time"], check_dtype=False)
    assert back.source == path.resolve()
    assert not list((tmp_path / "run").glob(".*tmp*"))  # atomic writes leave nothing behind


def test_open_errors(tmp_path):
    with pytest.raises(ParameterError, match="not found"):
        Catalog.open(tmp_path / "nope")
    write_test_catalog(tmp_path / "run", discover=False)
    np.save(tmp_path / "run" / "change_vectors.npy", np.zeros((3, 16), dtype=np.float32))
    with pytest.raises(CorruptFileError, match="80 events"):
        Catalog.open(tmp_path / "run")
    (tmp_path / "run" / "change_vectors.npy").unlink()
    with pytest.raises(CorruptFileError, match="change_vectors.npy"):
        Catalog.open(tmp_path / "run")


def test_merge_checks_dims_and_ids():
    a, _ = make_test_catalog(0, aoi="a", discover=False)
    b, _ = make_test_catalog(1, aoi="b", discover=False, dim=8)
    with pytest.raises(ParameterError, match="different change-vector dimensions"):
        Catalog.merge([a, b])
    with pytest.raises(ParameterError, match="more than once"):
        Catalog.merge([a, a])
    with pytest.raises(ParameterError, match="at least one"):
        Catalog.merge([])
    c, _ = make_test_catalog(2, aoi="c", discover=False)
    m = Catalog.merge([a, c])
    assert len(m) == len(a) + len(c) and m.crs == TEST_CRS
    assert m.frame.crs == TEST_CRS


def test_merge_different_crs(tmp_path):
    a, _ = make_test_catalog(0, aoi="a", discover=False)
    b, _ = make_test_catalog(1, aoi="b", discover=False, crs="EPSG:32634")
    m = Catalog.merge([a, b])
    assert m.crs is None and m.crs_names == ["EPSG:32633", "EPSG:32634"]
    np.testing.assert_array_equal(np.unique(m.event_crs()), [0, 1])
    with pytest.raises(ParameterError, match="several CRSs"):
        m.write(tmp_path / "x")


def test_unknown_event_id_suggests_close_ones():
    cat, _ = make_test_catalog(0)
    known = cat.frame["event_id"].iloc[5]
    with pytest.raises(ParameterError, match="did you mean") as err:
        cat.position(known[:-1] + "9")
    assert "changescope search" in str(err.value)
    assert cat.position(known) == 5


def test_empty_catalog():
    cat, _ = make_test_catalog(0, type_sizes=(), discover=False)
    assert len(cat) == 0
    with pytest.raises(EmptySeriesError, match="is empty"):
        cat.require_events()


def test_discover_events_writes_run_files(tmp_path):
    ev, grid = _events(), _grid()
    changes = discover_events(ev, grid, aoi="aoi-z", out=tmp_path, cluster="kmeans", n_clusters=3, rank_by="mix")
    assert list(changes.columns) == [
        "event_id", "aoi", "row", "col", "time", "score", "magnitude",
        "cluster", "rarity", "rank", "confirmed", "geometry",
    ]  # fmt: skip
    cat = Catalog.open(tmp_path)
    # the catalog holds from-to descriptors: [unit(after - before), 1.0 * unit(before)]
    delta = ev.after - ev.before
    want = np.hstack(
        [delta / np.linalg.norm(delta, axis=1)[:, None], ev.before / np.linalg.norm(ev.before, axis=1)[:, None]]
    )
    np.testing.assert_allclose(cat.vectors, want, rtol=1e-5)
    assert sorted(cat.frame["rank"]) == list(range(1, len(ev) + 1))
    assert cat.frame["cluster"].nunique() == 3
    data = read_clusters_json(tmp_path / "clusters.json")
    assert data["n_clusters"] == 3 and data["params"]["method"] == "kmeans"


def test_discover_events_from_weight(tmp_path):
    ev, grid = _events(), _grid()
    discover_events(ev, grid, aoi="a", out=tmp_path / "w0", cluster="kmeans", n_clusters=2, from_weight=0.0)
    np.testing.assert_allclose(Catalog.open(tmp_path / "w0").vectors, ev.after - ev.before, rtol=1e-6)
    discover_events(ev, grid, aoi="a", out=tmp_path / "w2", cluster="kmeans", n_clusters=2, from_weight=2.0)
    back = Catalog.open(tmp_path / "w2").vectors
    unit_before = ev.before / np.linalg.norm(ev.before, axis=1)[:, None]
    np.testing.assert_allclose(back[:, ev.before.shape[1] :], 2 * unit_before, rtol=1e-5)
    # cosine of two descriptors = (cos of the changes + w^2 cos of the before states) / (1 + w^2)
    a, b = back[0], back[1]
    d0, d1 = ev.after[:2] - ev.before[:2]
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    want = (cos(d0, d1) + 4 * cos(ev.before[0], ev.before[1])) / 5
    assert cos(a, b) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ParameterError, match="from_weight"):
        ev.descriptors(-1.0)


def test_discover_events_without_events(tmp_path):
    ev = _events()
    empty = Events(frame=ev.frame.iloc[:0], before=ev.before[:0], after=ev.after[:0], threshold=3.0)
    changes = discover_events(empty, _grid(), aoi="aoi-z", out=tmp_path)
    assert len(changes) == 0
    assert len(Catalog.open(tmp_path)) == 0
    assert read_clusters_json(tmp_path / "clusters.json")["n_events"] == 0
