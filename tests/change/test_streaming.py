"""Scoring one date at a time: the same scores as the whole cube in memory, in memory independent of the dates."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import changescope.change.context as context_module
import changescope.change.neighbours as neighbours_module
import changescope.change.source as source_module
from changescope.change.context import peer_scores
from changescope.change.events import extract_events
from changescope.change.score import ChangeScorer, standardize_embeddings
from changescope.change.source import ArraySource, StoreSource, streamed_stats
from changescope.change.store import score_events, score_store
from changescope.config import RunConfig


def _landscape(side: int, n_t: int, dim: int, seed: int, cloudy: float = 0.2):
    """``(X (T, N, D), vf (T, N), changed (N,))``: land covers with a seasonal swing, clouds, a block that changes."""
    rng = np.random.default_rng(seed)
    n = side * side
    kind = rng.integers(0, 6, size=n)
    base = rng.normal(size=(6, dim))[kind] + 0.3 * rng.normal(size=(n, dim))
    swing = rng.normal(scale=0.4, size=(n_t, 6, dim)).cumsum(axis=0)[:, kind]
    X = base[None] + swing + 0.1 * rng.normal(size=(n_t, n, dim))
    rows, cols = np.divmod(np.arange(n), side)
    changed = (rows >= side // 3) & (rows < side // 3 + 3) & (cols >= side // 3) & (cols < side // 3 + 3)
    X[n_t // 2 :, changed] += rng.normal(scale=2.0, size=dim)
    vf = np.where(rng.random((n_t, n)) < cloudy, 0.0, 1.0)
    X[rng.random((n_t, n)) < 0.02] = np.nan  # a few observations without an embedding
    return X, vf, changed


def _dataset(X: np.ndarray, vf: np.ndarray, side: int) -> xr.Dataset:
    n_t, _, dim = X.shape
    return xr.Dataset(
        {
            "embedding": (("time", "row", "col", "dim"), X.reshape(n_t, side, side, dim).astype(np.float32)),
            "valid_fraction": (("time", "row", "col"), vf.reshape(n_t, side, side).astype(np.float32)),
        },
        coords={"time": pd.date_range("2020-01-01", periods=n_t, freq="MS").as_unit("ns")},
        attrs={"patch_size": 16, "stride": 16, "min_valid": 0.5},
    )


def _on_disk(ds: xr.Dataset, path: Path, chunk: int) -> xr.Dataset:
    encoding = {"embedding": {"chunks": (1, chunk, chunk, ds.sizes["dim"])}}
    ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True, encoding=encoding)
    return xr.open_zarr(path, consolidated=True)


def test_a_store_on_disk_scores_like_the_whole_cube_in_memory(tmp_path: Path) -> None:
    side, n_t = 18, 12
    X, vf, _ = _landscape(side, n_t, 6, seed=3)
    emb = _on_disk(_dataset(X, vf, side), tmp_path / "emb.zarr", chunk=5)
    cfg = RunConfig(patch_size=16, subdivide=1).score
    got = score_store(emb, cfg)

    X32 = X.astype(np.float32)  # what the store holds
    valid = (vf >= 0.5) & np.isfinite(X32).all(axis=2)
    rr, cc = np.divmod(np.arange(side * side), side)
    scorer = ChangeScorer.from_config(cfg, normalize=False, exclusion=2, null=True)
    scorer.fit(X32, valid, emb["time"].values, positions=np.stack([rr, cc], axis=1))
    np.testing.assert_array_equal(got.used.reshape(n_t, -1), valid)
    np.testing.assert_allclose(got.raw.reshape(n_t, -1), scorer.raw_scores_, rtol=1e-9, atol=1e-12)
    null = np.isfinite(scorer.null_raw_)
    assert null.sum() > side * side  # the reference period is scored leave-one-out
    np.testing.assert_allclose(got.null_z.reshape(n_t, -1)[null].size, null.sum())


def test_events_from_a_store_on_disk_equal_those_of_the_same_store_in_memory(tmp_path: Path) -> None:
    side, n_t = 16, 10
    X, vf, changed = _landscape(side, n_t, 5, seed=4)
    mem = _dataset(X, vf, side)
    disk = _on_disk(mem, tmp_path / "emb.zarr", chunk=4)
    cfg = RunConfig(patch_size=16, subdivide=1, false_alarms=5.0)
    a = score_events(mem, None, cfg, 1)
    b = score_events(disk, None, cfg, 1)
    pd.testing.assert_frame_equal(a.events.frame, b.events.frame)
    np.testing.assert_array_equal(a.events.before, b.events.before)
    assert set(a.events.frame["patch"]) & set(np.nonzero(changed)[0])  # it does find the planted change


def test_events_from_a_source_equal_those_from_the_array() -> None:
    X, vf, _ = _landscape(12, 10, 4, seed=5)
    valid = (vf >= 0.5) & np.isfinite(X).all(axis=2)
    scores = np.where(valid, np.random.default_rng(0).gumbel(size=valid.shape), np.nan)
    times = pd.date_range("2020-01-01", periods=10, freq="MS")
    kw = {"threshold": 2.0, "persistence": 1}
    a = extract_events(X, valid, times, scores, **kw)
    b = extract_events(ArraySource(X, valid), valid, times, scores, **kw)
    assert len(a) > 3
    pd.testing.assert_frame_equal(a.frame, b.frame)
    np.testing.assert_array_equal(a.after, b.after)


def test_streamed_standardisation_is_exact_and_its_subsample_is_close(monkeypatch: pytest.MonkeyPatch) -> None:
    X, vf, _ = _landscape(20, 9, 7, seed=6)
    valid = (vf >= 0.5) & np.isfinite(X).all(axis=2)
    _, center, spread = standardize_embeddings(X, valid)
    c, s = streamed_stats(lambda t: X[t], valid)
    np.testing.assert_allclose(c, center, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s, spread, rtol=1e-12)
    monkeypatch.setattr(source_module, "MEDIAN_MIN_OBS", 0)
    c_sub, s_sub = streamed_stats(lambda t: X[t], valid, limit=7 * 500)  # every 6th observation of ~2900
    np.testing.assert_allclose(s_sub, spread, rtol=1e-12)  # the spread stays exact
    assert not np.allclose(c_sub, center, rtol=0, atol=1e-9)  # a real subsample ...
    assert (np.abs(c_sub - center) < 0.25 * spread).all()  # ... whose median is close (~500 of six land covers)


def test_faiss_peers_above_the_exact_limit_keep_the_scores() -> None:
    side, n_t = 50, 8
    X, vf, changed = _landscape(side, n_t, 6, seed=7)
    valid = (vf >= 0.5) & np.isfinite(X).all(axis=2)
    times = pd.date_range("2020-01-01", periods=n_t, freq="MS")
    rr, cc = np.divmod(np.arange(side * side), side)
    pos = np.stack([rr, cc], axis=1)
    exact = peer_scores(X, valid, times, pos, exact_limit=10**9)
    approx = peer_scores(X, valid, times, pos, exact_limit=100)  # 2500 states: an IVF index, 64 of 100 cells
    fin = np.isfinite(exact)
    np.testing.assert_array_equal(fin, np.isfinite(approx))
    assert np.corrcoef(exact[fin], approx[fin])[0, 1] > 0.99
    peak_exact, peak_approx = (np.where(np.isfinite(s), s, -np.inf).max(axis=0) for s in (exact, approx))
    top = np.argsort(-peak_approx)[: changed.sum()]
    assert set(top) == set(np.argsort(-peak_exact)[: changed.sum()]) == set(np.nonzero(changed)[0])


def test_a_cloudy_date_searches_its_scorable_patches_in_an_index_and_keeps_the_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    side, n_t = 50, 8
    X, vf, changed = _landscape(side, n_t, 6, seed=8)
    valid = (vf >= 0.5) & np.isfinite(X).all(axis=2)
    valid[5, : side * side * 3 // 5] = False  # most of one date clouded: many patches lack fetched candidates
    times = pd.date_range("2020-01-01", periods=n_t, freq="MS")
    rr, cc = np.divmod(np.arange(side * side), side)
    pos = np.stack([rr, cc], axis=1)
    built: list[tuple[bool, int]] = []
    original = neighbours_module.StateSearch.kneighbors

    def spy(self: object, query: np.ndarray, k: int, *, indexed: bool = True) -> np.ndarray:
        built.append((indexed, len(query)))
        return original(self, query, k, indexed=indexed)  # type: ignore[arg-type]

    exact = peer_scores(X, valid, times, pos, exact_limit=10**9)
    monkeypatch.setattr(neighbours_module.StateSearch, "kneighbors", spy)
    monkeypatch.setattr(context_module, "REDO_INDEXED", 10**9)
    flat = peer_scores(X, valid, times, pos, exact_limit=100)
    assert built and not any(ix for ix, _ in built[1:])  # the table's index, then exhaustive searches
    built.clear()
    monkeypatch.setattr(context_module, "REDO_INDEXED", 16)
    indexed = peer_scores(X, valid, times, pos, exact_limit=100)
    many = [ix for ix, n in built[1:] if n >= 16]  # the cloudy date's queries (a clear date may redo one or two)
    assert many and all(many)  # went to an index of its scorable patches
    fin = np.isfinite(exact)
    for approx in (flat, indexed):
        np.testing.assert_array_equal(fin, np.isfinite(approx))
        assert np.corrcoef(exact[fin], approx[fin])[0, 1] > 0.99
    assert np.corrcoef(exact[5][fin[5]], indexed[5][fin[5]])[0, 1] > 0.98
    peak = np.where(np.isfinite(indexed), indexed, -np.inf).max(axis=0)
    assert set(np.argsort(-peak)[: changed.sum()]) == set(np.nonzero(changed)[0])


class _CountingArray:
    """A ``(time, row, col, dim)`` variable that counts the dates read at once (the most a call asked for)."""

    def __init__(self, da: xr.DataArray) -> None:
        self.da = da
        self.sizes = da.sizes
        self.widest = 0

    def isel(self, **kw: object) -> xr.DataArray:
        out = self.da.isel(**kw)
        self.widest = max(self.widest, out.sizes.get("time", 1))
        return out


def _peak_scoring(n_t: int, side: int = 40, dim: int = 128) -> tuple[int, int, int]:
    """``(peak traced bytes, most dates read at once, scored observations)`` of peer scoring a store."""
    X, vf, _ = _landscape(side, n_t, dim, seed=8, cloudy=0.1)
    emb = _dataset(X, vf, side)
    del X
    counting = _CountingArray(emb["embedding"])
    source = StoreSource.open(counting, vf, 0.5, standardize=True)
    scorer = ChangeScorer.from_config(RunConfig(patch_size=16, subdivide=1).score, normalize=False, null=True)
    rr, cc = np.divmod(np.arange(side * side), side)
    tracemalloc.start()
    tracemalloc.reset_peak()
    scorer.fit_source(source, emb["time"].values, positions=np.stack([rr, cc], axis=1))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, counting.widest, int(np.isfinite(scorer.raw_scores_).sum())


def test_scoring_memory_does_not_grow_with_the_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context_module, "GATHER_BYTES", 2**20)  # peer changes gathered 1 MiB at a time
    monkeypatch.setattr(neighbours_module, "_WORKING_MB", 1)  # and the exact search's distances
    short, widest_short, scored_short = _peak_scoring(8)
    long, widest_long, scored_long = _peak_scoring(32)
    assert widest_short == widest_long == 1  # one date read at a time
    assert scored_long > 3 * scored_short  # four times the dates, all scored
    cube = 32 * 40 * 40 * 128 * 8  # the (T, N, D) float64 cube of the long series
    assert long < 1.5 * short, (short, long)  # memory O(N x D) + small (T, N) outputs, not O(T x N x D)
    assert long < cube / 2, (long, cube)


@pytest.mark.parametrize("exact_limit", [10**9, 100])  # exact searches; faiss IVF indexes (table and cloudy date)
def test_a_dates_chunks_in_threads_give_the_scores_of_one_pass(
    monkeypatch: pytest.MonkeyPatch, exact_limit: int
) -> None:
    side, n_t = 40, 7
    X, vf, _ = _landscape(side, n_t, 6, seed=11)
    valid = (vf >= 0.5) & np.isfinite(X).all(axis=2)
    valid[4, : side * side // 2] = False  # a cloudy date: many patches are searched again
    times = pd.date_range("2020-01-01", periods=n_t, freq="MS")
    rr, cc = np.divmod(np.arange(side * side), side)
    pos = np.stack([rr, cc], axis=1)
    threads_used: list[int] = []
    original = context_module._score_date

    def spy(*args: object) -> object:
        threads_used.append(args[-1].threads)  # type: ignore[attr-defined]
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(context_module, "_score_date", spy)
    monkeypatch.setattr(context_module, "usable_cores", lambda: 4)
    monkeypatch.setattr(context_module, "REDO_INDEXED", 64)
    monkeypatch.setattr(context_module, "DATE_THREADS", 1)
    one = peer_scores(X, valid, times, pos, exact_limit=exact_limit, null=True)
    assert set(threads_used) == {1}
    monkeypatch.setattr(context_module, "DATE_THREADS", 3)
    threads_used.clear()
    for chunk in (4096, 37, 16):  # one chunk, many chunks in three threads
        np.testing.assert_array_equal(
            peer_scores(X, valid, times, pos, exact_limit=exact_limit, null=True, chunk=chunk), one
        )
    assert set(threads_used) == {3}
    assert np.isfinite(one[4]).sum() > 100  # the cloudy date was scored


def test_dates_share_the_cores_only_when_they_run_one_at_a_time() -> None:
    import dask.config

    from changescope.change.schedule import runs_one_at_a_time, score_scheduler

    with score_scheduler():
        assert runs_one_at_a_time()
    with score_scheduler(workers=2):
        assert not runs_one_at_a_time()
    with dask.config.set(scheduler="threads"):
        assert not runs_one_at_a_time()
    with dask.config.set(scheduler="sync"):
        assert runs_one_at_a_time()
