"""The score stage as a dask graph of dates: the same scores whatever runs it (this thread, threads, a cluster)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from dask.delayed import delayed

import changescope.change.schedule as schedule_module
from changescope.change.context import peer_scores
from changescope.change.schedule import compute_dates, score_scheduler
from changescope.change.source import StoreSource
from changescope.config import RunConfig
from changescope.errors import ParameterError
from changescope.run import run_pipeline
from changescope.testing import make_test_series


def _store(tmp_path: Path, side: int = 14, n_t: int = 8, dim: int = 5, seed: int = 0) -> xr.Dataset:
    """A Zarr store of a landscape with seasons, clouds and a block that changes, reopened lazily."""
    rng = np.random.default_rng(seed)
    n = side * side
    kind = rng.integers(0, 5, size=n)
    X = rng.normal(size=(5, dim))[kind] + 0.3 * rng.normal(size=(n, dim))
    X = (
        X[None]
        + rng.normal(scale=0.3, size=(n_t, 5, dim)).cumsum(axis=0)[:, kind]
        + 0.1 * rng.normal(size=(n_t, n, dim))
    )
    X[n_t // 2 :, : 3 * side] += 2.0
    vf = np.where(rng.random((n_t, n)) < 0.25, 0.0, 1.0)
    ds = xr.Dataset(
        {
            "embedding": (("time", "row", "col", "dim"), X.reshape(n_t, side, side, dim).astype(np.float32)),
            "valid_fraction": (("time", "row", "col"), vf.reshape(n_t, side, side).astype(np.float32)),
        },
        coords={"time": pd.date_range("2021-01-01", periods=n_t, freq="MS").as_unit("ns")},
    )
    ds.to_zarr(tmp_path / "emb.zarr", mode="w", zarr_format=2, consolidated=True)
    return xr.open_zarr(tmp_path / "emb.zarr", consolidated=True)


def _scores(emb: xr.Dataset, reference: str = "first", null: bool = True) -> np.ndarray:
    side = emb.sizes["row"]
    src = StoreSource.open(
        emb["embedding"], emb["valid_fraction"].values.reshape(emb.sizes["time"], -1), 0.5, standardize=True
    )
    rr, cc = np.divmod(np.arange(side * side), side)
    return peer_scores(
        src, src.valid, emb["time"].values, np.stack([rr, cc], axis=1), reference=reference, n_peers=30, null=null
    )


@pytest.mark.parametrize("reference", ["first", "rolling"])
def test_threads_give_the_scores_of_one_date_at_a_time(tmp_path: Path, reference: str) -> None:
    emb = _store(tmp_path)
    with score_scheduler() as runner:
        one = _scores(emb, reference)
    assert runner == "synchronous"
    with score_scheduler(workers=2) as runner:
        two = _scores(emb, reference)
    assert runner == "threads:2"
    assert np.isfinite(one).sum() > emb.sizes["row"] ** 2  # most observations after the reference are scored
    np.testing.assert_array_equal(one, two)


@pytest.mark.slow
def test_a_cluster_of_processes_gives_the_same_scores(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    emb = _store(tmp_path, seed=1)
    alone = _scores(emb)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        score_scheduler(scheduler=cluster.scheduler_address) as runner,
        distributed.get_task_stream() as stream,
    ):
        spread = _scores(emb)
    ran = [t for t in stream.data if "peer-date" in str(t["key"])]
    assert len(ran) >= emb.sizes["time"] - 2  # the date tasks ran on the cluster's workers, not here
    assert runner.startswith("distributed:")
    np.testing.assert_array_equal(alone, spread)


def test_without_a_scheduler_the_dates_run_one_at_a_time_in_this_thread() -> None:
    where: list[str] = []

    def task(i: int) -> int:
        where.append(threading.current_thread().name)
        return i * i

    assert compute_dates([delayed(task)(i) for i in range(6)]) == (0, 1, 4, 9, 16, 25)
    assert set(where) == {threading.current_thread().name}
    where.clear()
    with score_scheduler(workers=3):
        assert compute_dates([delayed(task, pure=False)(i) for i in range(12)]) == tuple(i * i for i in range(12))
    assert threading.current_thread().name not in where  # the pool's threads ran them
    assert compute_dates([]) == ()


def test_bad_scheduler_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ParameterError, match="not both"), score_scheduler(2, "tcp://127.0.0.1:9"):
        pass
    with pytest.raises(ParameterError, match="workers=0"), score_scheduler(0):
        pass
    monkeypatch.setattr(schedule_module, "SCHEDULER_TIMEOUT_S", 1)
    with pytest.raises(ParameterError, match="unreachable"), score_scheduler(scheduler="tcp://127.0.0.1:9"):
        pass


@pytest.mark.slow
def test_a_run_with_workers_writes_the_scores_of_a_run_without(tmp_path: Path) -> None:
    series = make_test_series(4, n_time=6, height=96, width=96)
    a = run_pipeline(series, tmp_path / "a", RunConfig(patch_size=8, encoder="spectral"), progress=False)
    b = run_pipeline(series, tmp_path / "b", RunConfig(patch_size=8, encoder="spectral", workers=2), progress=False)
    sa, sb = (pd.read_parquet(tmp_path / r / "patch_scores.parquet") for r in ("a", "b"))
    assert len(sa) and sa["score"].notna().sum() > 0
    pd.testing.assert_frame_equal(sa, sb)
    ca, cb = (pd.read_parquet(tmp_path / r / "changes.parquet").drop(columns="geometry") for r in ("a", "b"))
    pd.testing.assert_frame_equal(ca, cb)
    assert a.n_events == b.n_events
