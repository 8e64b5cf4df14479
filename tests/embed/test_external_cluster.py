"""``--scheduler`` on an external dask.distributed cluster: a ``dask scheduler`` and two ``dask worker`` processes
started here on 127.0.0.1. The store is identical to an in-process run, also when a worker is killed mid-run, and
the run prints the cluster's dashboard link."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import xarray as xr
from embed_helpers import assert_same_store

from changescope.embed import embed_series
from changescope.embed.store import done_flags
from changescope.testing import make_test_series

pytestmark = pytest.mark.slow

distributed = pytest.importorskip("distributed")
KW = {"patch_size": 8, "stride": 8, "block": 32}


@dataclass
class Cluster:
    address: str
    workers: list[subprocess.Popen[bytes]]


def _spawn(module: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """A dask CLI process in its own session (so that killing it takes its nanny and worker together)."""
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", f"distributed.cli.{module}", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    info = tmp_path / "scheduler.json"
    procs = [
        _spawn(
            "dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(info),
            log=tmp_path / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not info.is_file():
            assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.2)
        time.sleep(0.5)  # the file is written whole, but give the scheduler a moment to listen
        address = json.loads(info.read_text())["address"]
        for i in range(2):
            procs.append(
                _spawn(
                    "dask_worker",
                    "--scheduler-file",
                    str(info),
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                    log=tmp_path / f"worker{i}.log",
                )
            )
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield Cluster(address, procs[1:])
    finally:
        for proc in reversed(procs):
            _kill(proc)


@pytest.fixture(scope="module")
def series() -> xr.Dataset:
    """6 dates of 96 x 96 px: 54 tasks of 32 px blocks."""
    return make_test_series(seed=5, n_time=6, height=96, width=96, cloud_fraction=0.2)


def test_external_cluster_gives_the_identical_store_and_prints_its_dashboard(
    cluster: Cluster, series: xr.Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = embed_series(series, "test_conv", out=tmp_path / "a.zarr", progress=False, **KW)  # type: ignore[arg-type]
    b = embed_series(
        series,
        "test_conv",
        out=tmp_path / "b.zarr",
        scheduler=cluster.address,
        progress=True,
        **KW,  # type: ignore[arg-type]
    )
    assert_same_store(a, b)
    err = capsys.readouterr().err
    assert "dask dashboard: http://127.0.0.1:" in err, err


def test_a_worker_killed_mid_run_changes_nothing(cluster: Cluster, series: xr.Dataset, tmp_path: Path) -> None:
    reference = embed_series(series, "test_conv", out=tmp_path / "ref.zarr", progress=False, **KW)  # type: ignore[arg-type]
    out = tmp_path / "b.zarr"
    failure: list[BaseException] = []

    def work() -> None:
        try:
            embed_series(
                series,
                "test_conv",
                out=out,
                scheduler=cluster.address,
                progress=False,
                before_flag=lambda done: time.sleep(0.2),  # slow tasks, so that the kill lands mid-run
                **KW,  # type: ignore[arg-type]
            )
        except BaseException as err:  # reported in the test's thread
            failure.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 120
    while not (out / "block_done").exists() or done_flags(out).sum() < 6:
        assert thread.is_alive() and time.monotonic() < deadline, failure or "the run ended before the kill"
        time.sleep(0.05)
    flags = done_flags(out)
    assert flags.sum() < flags.size, "the run finished before a worker could be killed"
    _kill(cluster.workers[0])
    thread.join(timeout=300)
    assert not thread.is_alive() and not failure, failure
    assert_same_store(reference, out)
