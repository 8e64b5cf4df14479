"""The embedding in a child process: same stores, a torch-free run process, errors and deaths handled."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import xarray as xr
from embed_helpers import assert_same_store

from changescope.config import ISOLATE_PIXEL_DATES, EmbedConfig, RunConfig
from changescope.embed.isolate import call_in_child
from changescope.errors import ChangescopeError
from changescope.stages import isolates
from changescope.testing import make_test_series, write_dated_folder


def test_call_returns_the_childs_result_and_raises_its_errors() -> None:
    assert call_in_child(int, "ff", base=16) == 255
    assert call_in_child(os.getpid) != os.getpid()
    with pytest.raises(ValueError, match="invalid literal"):
        call_in_child(int, "not a number")


def test_a_child_that_dies_raises_one_line_naming_the_signal() -> None:
    with pytest.raises(ChangescopeError, match=r"signal 6.*rerun the same command to resume") as info:
        call_in_child(os.abort)
    assert "\n" not in str(info.value)


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    # A killed run must leave no embedding process behind to race the rerun's writes.
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import os, pathlib
        from changescope.embed.isolate import call_in_child
        call_in_child(exec, "import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()));"
                      " time.sleep(120)")
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.1)
        child = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.1)
    finally:
        parent.kill()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def test_auto_isolates_only_large_lazy_series_without_a_cluster() -> None:
    small = make_test_series(seed=0, n_time=2, height=8, width=8)
    assert not isolates(small, EmbedConfig())
    assert isolates(small, EmbedConfig(isolate=True))
    side = math.isqrt(ISOLATE_PIXEL_DATES // 2) + 1
    big = xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), _lazy_zeros((2, 1, side, side)))},
    )
    assert isolates(big, EmbedConfig())
    assert not isolates(big, EmbedConfig(isolate=False))
    assert not isolates(big, EmbedConfig(workers=2))
    assert not isolates(big.isel(x=slice(0, side // 2)), EmbedConfig())  # below the threshold


def _lazy_zeros(shape: tuple[int, ...]):
    import dask.array as da

    return da.zeros(shape, chunks=(1, 1, 1024, 1024), dtype="float32")


def test_isolated_run_writes_the_same_files_and_never_imports_torch(tmp_path: Path) -> None:
    series = make_test_series(seed=5, n_time=4, height=48, width=48, cloud_fraction=0.2)
    folder = write_dated_folder(tmp_path / "series", series)
    script = textwrap.dedent(
        """
        import json, sys
        from changescope.config import RunConfig
        from changescope.run import run_pipeline
        isolate = {"true": True, "false": False}[sys.argv[3]]
        run_pipeline(sys.argv[1], sys.argv[2], RunConfig(patch_size=16, isolate=isolate), progress=False)
        print(json.dumps({"torch": "torch" in sys.modules}))
        """
    )
    seen = {}
    for isolate in ("true", "false"):
        out = tmp_path / f"run_{isolate}"
        proc = subprocess.run(
            [sys.executable, "-c", script, str(folder), str(out), isolate], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        seen[isolate] = json.loads(proc.stdout.strip().splitlines()[-1])["torch"]
    assert seen == {"true": False, "false": True}
    for store in ("embeddings.zarr", "subpatches.zarr"):
        assert_same_store(tmp_path / "run_true" / store, tmp_path / "run_false" / store)
    a = (tmp_path / "run_true" / "patch_scores.parquet").read_bytes()
    b = (tmp_path / "run_false" / "patch_scores.parquet").read_bytes()
    assert a == b


def test_isolation_is_not_part_of_the_stage_key(tmp_path: Path) -> None:
    # A run embedded in a child resumes in-process (and back) without embedding again.
    from changescope.run import run_pipeline

    series = make_test_series(seed=6, n_time=3, height=64, width=64)
    out = tmp_path / "run"
    run_pipeline(series, out, RunConfig(patch_size=16, isolate=True), progress=False)
    before = (out / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns
    run_pipeline(series, out, RunConfig(patch_size=16, isolate=False), progress=False)
    assert (out / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns == before
