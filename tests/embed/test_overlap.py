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
