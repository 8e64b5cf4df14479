"""In-process runs load and write blocks in threads (``changescope.embed.overlap``): same store, errors, resume."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
from embed_helpers import assert_same_store

import changescope.embed.execute as execute
import changescope.embed.overlap as overlap
from changescope.embed import IncompleteStoreError, embed_series, open_embeddings
from changescope.embed.pipeline import SeriesSource
from changescope.embed.store import done_flags

ARGS: dict[str, Any] = {"patch_size": 8, "stride": 4, "block": 32, "progress": False}  # 3 dates x 2 x 2 blocks


def _threads_of(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Record the thread that runs each call of ``overlap.<name>``."""
    seen: list[str] = []
    real = getattr(overlap, name)

    def recording(*args: Any) -> Any:
        seen.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(overlap, name, recording)
    return seen


def test_overlapped_run_gives_the_store_of_the_sequential_run(
    cloudy_series: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lazy = cloudy_series.chunk({"time": 1, "y": 16, "x": 16})
    loads, writes = _threads_of(monkeypatch, "load_block"), _threads_of(monkeypatch, "write_task")
    overlapped = embed_series(lazy, "test_conv", out=tmp_path / "a.zarr", **ARGS)
    assert len(loads) == len(writes) == 12
    assert all(n.startswith("changescope-embed-read") for n in loads)
    assert all(n.startswith("changescope-embed-write") for n in writes)
    monkeypatch.setattr(execute, "OVERLAP_IO", False)
    sequential = embed_series(lazy, "test_conv", out=tmp_path / "b.zarr", **ARGS)
    assert len(loads) == len(writes) == 12  # the sequential path loads and writes in the calling thread
    assert_same_store(overlapped, sequential)


def test_failed_write_is_raised_and_leaves_a_resumable_store(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    reference = embed_series(cloudy_series, "test_conv", out=tmp_path / "ref.zarr", **ARGS)

    calls: list[int] = []

    def disk_full(done: int) -> None:  # between the third task's chunks and its flag, in the writer thread
        calls.append(done)  # (``done`` counts the tasks this process ever finished)
        if len(calls) == 3:
            raise OSError("disk full")

    out = tmp_path / "e.zarr"
    with pytest.raises(OSError, match="disk full"):
        embed_series(cloudy_series, "test_conv", out=out, before_flag=disk_full, **ARGS)
    assert int(done_flags(out).sum()) == 2  # the run stopped at the failed write: no later task was flagged
    with pytest.raises(IncompleteStoreError, match="10 of 12 tasks"):
        open_embeddings(out)
    embed_series(cloudy_series, "test_conv", out=out, **ARGS)
    assert_same_store(out, reference)


def test_failed_read_is_raised_after_the_finished_tasks_are_written(
    cloudy_series: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = embed_series(cloudy_series, "test_conv", out=tmp_path / "ref.zarr", **ARGS)
    real = SeriesSource.read

    def flaky(self: SeriesSource, t: int, ys: slice, xs: slice) -> Any:
        if t == 1 and ys.start == 0 and xs.start == 0:  # the fifth task (date 1, block 0, 0)
            raise OSError("read failed")
        return real(self, t, ys, xs)

    monkeypatch.setattr(SeriesSource, "read", flaky)
    out = tmp_path / "e.zarr"
    with pytest.raises(OSError, match="read failed"):
        embed_series(cloudy_series, "test_conv", out=out, **ARGS)
    flags = done_flags(out)
    assert flags[0].all() and int(flags.sum()) == 4  # the four tasks before it, written, flagged
    monkeypatch.setattr(SeriesSource, "read", real)
    embed_series(cloudy_series, "test_conv", out=out, **ARGS)
    assert_same_store(out, reference)


def test_failed_store_creation_is_raised(
    cloudy_series: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("read-only bucket")

    monkeypatch.setattr(execute, "create_store", refuse)
    out = tmp_path / "e.zarr"
    with pytest.raises(PermissionError, match="read-only bucket"):
        embed_series(cloudy_series, "test_conv", out=out, **ARGS)
    assert not out.exists()


def test_a_date_of_a_lazy_series_is_read_from_its_own_culled_graph(cloudy_series: xr.Dataset) -> None:
    """Each block's read culls one date's graph, not the whole series' (whose size grows with the dates)."""
    import pickle

    import numpy as np
    from dask.base import collections_to_expr

    lazy = cloudy_series.chunk({"time": 1, "y": 16, "x": 16})
    source, plain = SeriesSource(lazy, [0, 1, 2]), SeriesSource(lazy, [0, 1, 2])

    def keys(array: Any) -> int:
        return len(collections_to_expr([array]).__dask_graph__())

    from changescope.testing import make_test_series

    short, long = (
        SeriesSource(make_test_series(1, n_time=n, height=48, width=48).chunk({"time": 1, "y": 16, "x": 16}), [0, 1])
        for n in (3, 9)
    )
    assert keys(long.ds["image"].data) > 2.5 * keys(short.ds["image"].data)  # the whole graph grows with the dates
    assert keys(long.date(1)["image"].data) == keys(short.date(1)["image"].data)  # one date's does not
    window = (slice(5, 29), slice(3, 21))
    for t in range(lazy.sizes["time"]):
        got, want = source.read(t, *window), plain.ds.isel(time=t, y=window[0], x=window[1])
        expected = SeriesSource.__new__(SeriesSource)  # reads through the whole graph, as before the cache
        expected.ds = plain.ds
        expected._dates = {t: plain.ds.isel(time=t)}
        ref = expected.read(t, *window)
        np.testing.assert_array_equal(got[0], ref[0])  # NaN where invalid, in both
        np.testing.assert_array_equal(got[1], ref[1])
        assert want["image"].shape[-2:] == got[0].shape[-2:]
    assert list(source._dates) == [lazy.sizes["time"] - 1]  # only the last date is kept
    shipped = pickle.loads(pickle.dumps(source))
    assert shipped._dates == {} and shipped.ds.identical(source.ds)
