"""Resuming: a killed or failed run leaves flags that say what is done; a rerun finishes it identically."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from embed_helpers import assert_same_store, load_store

import changescope
import changescope.embed.execute as execute
from changescope.embed import IncompleteStoreError, embed_series, open_embeddings
from changescope.embed.store import done_flags
from changescope.testing import write_dated_folder

ARGS = {"patch_size": 8, "stride": 4, "block": 32, "progress": False}


def test_failed_run_resumes_to_the_identical_store(
    cloudy_series: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = embed_series(cloudy_series, "test_conv", out=tmp_path / "ref.zarr", **ARGS)  # type: ignore[arg-type]
    calls: list[tuple[int, int, int]] = []
    real = execute.run_task

    def failing(plan: Any, source: Any, t: int, br: int, bc: int) -> int:
        if len(calls) == 5:
            raise RuntimeError("worker lost")
        calls.append((t, br, bc))
        return real(plan, source, t, br, bc)

    monkeypatch.setattr(execute, "run_task", failing)
    out = tmp_path / "e.zarr"
    with pytest.raises(RuntimeError, match="worker lost"):
        embed_series(cloudy_series, "test_conv", out=out, **ARGS)  # type: ignore[arg-type]
    assert int(done_flags(out).sum()) == 5
    with pytest.raises(IncompleteStoreError, match="7 of 12 tasks"):
        open_embeddings(out)
    first = set(calls)
    calls.clear()
    monkeypatch.setattr(execute, "run_task", lambda *a: calls.append(a[2:]) or real(*a))
    embed_series(cloudy_series, "test_conv", out=out, **ARGS)  # type: ignore[arg-type]
    assert len(calls) == 7 and not first & set(calls)
    assert_same_store(out, reference)


def _run_cli(series: Path, out: Path, kill_after: int | None) -> subprocess.CompletedProcess[str]:
    """``changescope embed`` in a subprocess; with ``kill_after`` the process dies between a task's chunks and its
    flag, after that many tasks (through the ``before_flag`` callback, as a kill at the worst moment would)."""
    hook = ""
    if kill_after is not None:
        hook = (
            "import os, functools, changescope.embed.execute as ex\n"
            "def die(done):\n"
            f"    if done >= {kill_after}: os._exit(75)\n"
            "ex.embed_series = functools.partial(ex.embed_series, before_flag=die)\n"
            "import changescope.embed; changescope.embed.embed_series = ex.embed_series\n"
        )
    code = hook + (
        "import changescope.testing.encoders; from changescope.cli.app import main\n"
        f"main(['embed', {str(series)!r}, '--encoder', 'test_conv', '--patch-size', '8', '--stride', '4', "
        f"'--block', '32', '--out', {str(out)!r}, '--quiet'])"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_killed_cli_run_resumes_and_recomputes_half_written_chunks(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    folder = write_dated_folder(tmp_path / "series", cloudy_series)
    series = changescope.open(folder)
    reference = embed_series(series, "test_conv", out=tmp_path / "ref.zarr", **ARGS)  # type: ignore[arg-type]
    out = tmp_path / "e.zarr"
    killed = _run_cli(folder, out, 3)
    assert killed.returncode == 75, killed.stderr
    flags = done_flags(out)
    assert int(flags.sum()) == 3
    # the task killed between its chunks and its flag left data behind: make it a torn, half-written chunk
    orphans = [
        out / "embedding" / f"{t}.{br}.{bc}.0"
        for t, br, bc in zip(*np.nonzero(~flags), strict=True)
        if (out / "embedding" / f"{t}.{br}.{bc}.0").exists()
    ]
    assert len(orphans) == 1
    orphans[0].write_bytes(orphans[0].read_bytes()[:20])
    partial = load_store(out, allow_incomplete=True)
    assert np.isnan(partial["embedding"][~partial["complete"]]).all()
    resumed = _run_cli(folder, out, None)
    assert resumed.returncode == 0, resumed.stderr
    assert done_flags(out).all()
    assert_same_store(out, reference)
