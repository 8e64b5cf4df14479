"""Patches and sub-patches from one read and one forward pass of each block (``embed_series(subpatches=...)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import xarray as xr
from embed_helpers import assert_same_store

import changescope.embed.execute as execute
import changescope.embed.pipeline as pipeline
from changescope.config import EmbedConfig, RunConfig
from changescope.embed import embed_series
from changescope.embed.layout import BlockLayout
from changescope.embed.pipeline import can_share_tiles
from changescope.embed.store import done_flags
from changescope.errors import ParameterError
from changescope.grid import PatchGrid
from changescope.testing import make_test_series

ARGS: dict[str, Any] = {"block": 32, "progress": False}


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, slice, slice]]:
    """Record every window a task reads from the series."""
    reads: list[tuple[int, slice, slice]] = []
    real = pipeline.SeriesSource.read

    def counted(self: pipeline.SeriesSource, t: int, ys: slice, xs: slice) -> Any:
        reads.append((t, ys, xs))
        return real(self, t, ys, xs)

    monkeypatch.setattr(pipeline.SeriesSource, "read", counted)
    return reads


def _separate(series: xr.Dataset, encoder: str, tmp_path: Path) -> tuple[Path, Path]:
    coarse = embed_series(series, encoder, patch_size=16, out=tmp_path / "coarse.zarr", **ARGS)
    fine = embed_series(series, encoder, patch_size=8, out=tmp_path / "fine.zarr", **ARGS)
    return Path(str(coarse)), Path(str(fine))


@pytest.mark.parametrize("encoder", ["test_conv", "spectral"])
def test_one_pass_gives_the_stores_of_two_runs_reading_each_block_once(
    cloudy_series: xr.Dataset, encoder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coarse, fine = _separate(cloudy_series, encoder, tmp_path)
    reads = _count_reads(monkeypatch)
    out, sub = tmp_path / "e.zarr", tmp_path / "s.zarr"
    embed_series(cloudy_series, encoder, patch_size=16, out=out, subpatches=sub, subpatch_size=8, **ARGS)
    assert_same_store(out, coarse)
    assert_same_store(sub, fine)
    n_blocks = done_flags(out)[0].size
    assert len(reads) == cloudy_series.sizes["time"] * n_blocks  # not twice
    assert len({(t, ys.start, xs.start) for t, ys, xs in reads}) == len(reads)


def test_grids_of_other_blocks_fall_back_to_a_second_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 72 px: 4 patch rows of 16 px (2 blocks of 32 px) but 9 rows of 8 px (a third block): no shared tiles
    series = make_test_series(seed=5, n_time=2, height=72, width=40, cloud_fraction=0.2)
    grid16, grid8 = PatchGrid.for_series(series, 16, 16), PatchGrid.for_series(series, 8, 8)
    assert not can_share_tiles(BlockLayout.plan(grid16, 4, 32, 32), BlockLayout.plan(grid8, 4, 32, 32))
    coarse, fine = _separate(series, "test_conv", tmp_path)
    reads = _count_reads(monkeypatch)
    out, sub = tmp_path / "e.zarr", tmp_path / "s.zarr"
    embed_series(series, "test_conv", patch_size=16, out=out, subpatches=sub, subpatch_size=8, **ARGS)
    assert_same_store(out, coarse)
    assert_same_store(sub, fine)
    assert len(reads) == done_flags(out).size + done_flags(sub).size


def test_a_run_stopped_between_the_two_stores_resumes_to_the_same_stores(
    cloudy_series: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coarse, fine = _separate(cloudy_series, "test_conv", tmp_path)
    out, sub = tmp_path / "e.zarr", tmp_path / "s.zarr"
    real = pipeline.write_block
    writes = {"fine": 0}

    def failing(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path) == str(sub):
            writes["fine"] += 1
            if writes["fine"] == 4:  # the 4th task's patches are flagged, its sub-patches never written
                raise OSError("disk full")
        real(path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "write_block", failing)
    with pytest.raises(OSError, match="disk full"):
        embed_series(cloudy_series, "test_conv", patch_size=16, out=out, subpatches=sub, subpatch_size=8, **ARGS)
    assert int(done_flags(out).sum()) == 4 and int(done_flags(sub).sum()) == 3
    monkeypatch.setattr(pipeline, "write_block", real)
    tasks: list[tuple[int, int, int]] = []
    run = execute.run_task
    monkeypatch.setattr(execute, "run_task", lambda *a: tasks.append(a[2:]) or run(*a))
    embed_series(cloudy_series, "test_conv", patch_size=16, out=out, subpatches=sub, subpatch_size=8, **ARGS)
    assert len(tasks) == done_flags(out).size - 3  # the task missing its sub-patches is redone, whole
    assert_same_store(out, coarse)
    assert_same_store(sub, fine)


def test_the_run_embeds_its_two_stores_in_one_pass(
    cloudy_series: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from changescope.run import run_pipeline

    coarse, fine = _separate(cloudy_series, "spectral", tmp_path)
    reads = _count_reads(monkeypatch)
    cfg = RunConfig(embed=EmbedConfig(encoder="spectral", patch_size=16, block=32))
    run_pipeline(cloudy_series, tmp_path / "run", cfg, progress=False)
    assert_same_store(tmp_path / "run" / "embeddings.zarr", coarse)
    assert_same_store(tmp_path / "run" / "subpatches.zarr", fine)
    assert len(reads) == done_flags(coarse).size


def test_subpatches_need_their_size(cloudy_series: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="subpatch_size"):
        embed_series(cloudy_series, "test_conv", patch_size=16, out=tmp_path / "e.zarr", subpatches=tmp_path / "s")
    assert not (tmp_path / "e.zarr").exists()
