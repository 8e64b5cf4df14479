"""``embed_series``: embed every patch of every date of a series into a resumable Zarr store.

The work is one task per (date, block) (see :mod:`changescope.embed.layout`). It runs in-process by default: one
task at a time in the calling thread, torch using every core, while a reader thread loads the next block and a
writer thread writes the previous one (:mod:`changescope.embed.overlap`; a new store is created in the writer thread
too, while the first block is encoded). With ``workers`` it is a dask graph run on a ``dask.distributed.LocalCluster``
of single-threaded processes, or on an existing cluster (``scheduler`` address). Memory is bounded by the block
size: each task reads only its block of one date from the (lazy) series.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from dask.delayed import delayed
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from changescope.embed.layout import BlockLayout
from changescope.embed.overlap import BlockPrefetcher, BlockWriter
from changescope.embed.pipeline import (
    Companion,
    EncoderSpec,
    SeriesSource,
    TaskPlan,
    build_encoder,
    can_share_tiles,
    get_encoder,
    run_task,
)
from changescope.embed.store import check_store, create_store, done_flags, is_store
from changescope.encoders.bands import band_indices
from changescope.encoders.registry import CHECKPOINT_PREFIX, get_meta
from changescope.errors import ParameterError
from changescope.grid import PatchGrid
from changescope.series import band_infos, series_crs, series_transform, validate_series
from changescope.storepath import AnyPath, StorePath, as_path
from changescope.types import Device, PathLike

__all__ = ["Device", "embed_series"]


SCHEDULER_TIMEOUT_S = 10
"""Seconds to wait for a dask scheduler given with ``--scheduler``."""

OVERLAP_IO = True
"""In-process runs load and write blocks in threads, behind the encoder (:mod:`changescope.embed.overlap`);
``False`` runs every step of every task in the calling thread (the reference the tests compare with)."""


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"device={device!r} but CUDA is not available here; use --device cpu (or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ParameterError(f"device={device!r} is not one of 'auto', 'cpu', 'cuda'")
    return device


def _check_args(patch_size: int, stride: int | None, batch_size: int, min_valid: float, workers: int | None) -> None:
    if patch_size < 1:
        raise ParameterError(f"patch_size={patch_size!r} must be a positive number of pixels (e.g. --patch-size 32)")
    if stride is not None and stride < 1:
        raise ParameterError(f"stride={stride!r} must be a positive number of pixels (default: the patch size)")
    if batch_size < 1:
        raise ParameterError(f"batch_size={batch_size!r} must be at least 1 tile per forward pass")
    if not 0.0 <= min_valid <= 1.0:
        raise ParameterError(f"min_valid={min_valid!r} must be a fraction between 0 and 1")
    if workers is not None and workers < 1:
        raise ParameterError(f"workers={workers!r} must be at least 1 (or omitted to run in-process)")


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "-/s", style="progress.data.speed")


class _Progress:
    """A rich progress bar over patches, or nothing when ``enabled`` is False."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self._bar: Progress | None = None
        if enabled:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} patches"),
                _SpeedColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task(label, total=total)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)


def _run_in_process(
    plan: TaskPlan,
    source: SeriesSource,
    todo: Sequence[tuple[int, int, int]],
    advance: Callable[[int], None],
    create: Callable[[], object] | None = None,
) -> None:
    """Run the tasks in this process, in order; ``create`` (the new store) runs before the first write."""
    if not OVERLAP_IO:
        if create is not None:
            create()
        for t, br, bc in todo:
            advance(run_task(plan, source, t, br, bc))
        return
    with BlockWriter(plan, advance, create) as writer, BlockPrefetcher(source, plan, todo) as prefetcher:
        overlapped = replace(plan, writer=writer.submit)
        for t, br, bc in todo:
            run_task(overlapped, prefetcher, t, br, bc)


def _announce(client: Any, show: bool) -> None:
    """Print (on stderr) the cluster's dask dashboard link, or its scheduler address when it has no dashboard."""
    if not show:
        return
    services = client.scheduler_info().get("services", {})
    if "dashboard" in services:
        message = f"dask dashboard: {client.dashboard_link}"
    else:
        message = f"dask scheduler: {client.scheduler.address} (it serves no dashboard)"
    Console(stderr=True).print(message, highlight=False, soft_wrap=True)


def _run_distributed(tasks: Sequence[Any], advance: Callable[[int], None], client: Any) -> None:
    import distributed

    as_completed: Any = distributed.as_completed
    futures = client.compute(list(tasks))
    try:
        for future in as_completed(futures):
            advance(int(future.result()))
    except BaseException:
        client.cancel(futures)
        raise


def _grid_params(grid: PatchGrid, layout: BlockLayout) -> dict[str, Any]:
    """The store parameters that depend on its patch grid."""
    return {
        "patch_size": grid.size,
        "stride": grid.stride,
        "block": layout.block,
        "grid_height": grid.height,
        "grid_width": grid.width,
    }


def _open_store(
    path: AnyPath,
    params: dict[str, Any],
    attrs: dict[str, Any],
    layout: BlockLayout,
    times: pd.DatetimeIndex,
    embed_dim: int,
    *,
    overwrite: bool,
    defer: bool,
) -> tuple[Callable[[], object] | None, NDArray[np.bool_]]:
    """Check the store at ``path`` (resume) or prepare a new one; ``(create, flags)``.

    ``create`` makes the new store when called (``defer``: in the writer thread, while the first block is encoded),
    else ``None`` (the store exists, or was made now); ``flags`` are its completion flags ``(time, block_row,
    block_col)``.

    Raises:
        ParameterError: ``path`` holds something else than an embeddings store.
        StoreMismatchError: ``path`` holds a store of other parameters or dates (and not ``overwrite``).
    """
    shape = (len(times), layout.n_block_rows, layout.n_block_cols)
    if path.exists() and not overwrite:
        check_store(path, params, times)
        return None, done_flags(path)
    if path.exists() and not is_store(path) and (path.is_file() or any(path.iterdir())):
        raise ParameterError(
            f"out={str(path)!r} exists and is not an embeddings store; refusing to replace it even with "
            "--overwrite. Remove it yourself or choose another --out"
        )
    from changescope import __version__

    full = {
        **params,
        **attrs,
        "tile": layout.tile,
        "tile_extent": layout.tile_extent,
        "changescope_version": __version__,
    }

    def make_store() -> object:
        return create_store(path, layout=layout, times=times, embed_dim=embed_dim, attrs=full)

    if defer:
        return make_store, np.zeros(shape, dtype=bool)
    make_store()
    return None, np.zeros(shape, dtype=bool)


def embed_series(
    ds: xr.Dataset,
    encoder_name: str,
    *,
    weights: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
    patch_size: int,
    stride: int | None = None,
    out: PathLike | StorePath,
    block: int | None = None,
    batch_size: int = 16,
    min_valid: float = 0.5,
    device: str = "auto",
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    before_flag: Callable[[int], None] | None = None,
    subpatches: PathLike | StorePath | None = None,
    subpatch_size: int | None = None,
) -> AnyPath:
    """Embed every patch of every date of a series into a Zarr store (see :mod:`changescope.embed.store`).

    The encoder runs on large tiles and its dense feature map is pooled onto the patch grid (area-weighted, see
    :mod:`changescope.embed.pooling`). Input is the series reflectance of the encoder's bands, normalised as its
    metadata says; band-adaptive encoders get ``bands=`` the series' bands. A patch whose valid fraction is below
    ``min_valid`` (or that has no valid pixel) gets a NaN embedding: it is never embedded as if it were clear. Its
    ``valid_fraction`` is always written.

    Rerunning with the same parameters resumes: tasks (date x block) whose completion flag is set are skipped.

    Args:
        ds: The series (lazy or in memory).
        encoder_name: A registered encoder (see :func:`changescope.encoders.list_encoders`).
        weights: Weights for :func:`~changescope.encoders.create_encoder` (``"random"`` for tests).
        encoder_kwargs: Extra family options for the encoder.
        patch_size: Patch side in pixels.
        stride: Step between patches (default ``patch_size``).
        out: The store to write (a local path, or an object-store location).
        block: Block side in pixels (one task and one chunk per block and date; default 1024, rounded to tiles).
        batch_size: Tiles per forward pass.
        min_valid: Minimum valid fraction for a patch to be embedded.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        workers: Run on a local cluster of this many single-threaded worker processes.
        scheduler: Address of an existing dask.distributed scheduler to run on.
        overwrite: Replace an existing store made with other parameters.
        progress: Show a progress bar (on stderr).
        before_flag: Called with the number of tasks finished, between each task's chunks and its completion flag
            (:mod:`changescope.embed.pipeline`; tests kill the process there).
        subpatches: Also embed the grid of ``subpatch_size`` px patches (stride: their size) into this store. When
            both grids cut the raster into the same blocks and encoder tiles (the usual case: sizes whose tiles the
            same token and input size fit), each block of each date is read and encoded once and pooled onto both
            grids (:class:`~changescope.embed.pipeline.Companion`), which gives the stores two separate runs would
            write in half the time; otherwise the sub-patches are a second run. Either store resumes on its own
            flags: a task is redone until both of its flags are set.
        subpatch_size: Side of the sub-patches (required with ``subpatches``).

    Returns:
        The store path.

    Raises:
        ParameterError: A parameter is invalid, the encoder is unknown, or ``out`` holds another run's store.
        BandMismatchError: The series lacks a band the encoder needs.
    """
    _check_args(patch_size, stride, batch_size, min_valid, workers)
    if subpatches is not None and (subpatch_size is None or subpatch_size < 1):
        raise ParameterError(f"subpatch_size={subpatch_size!r} must be a positive number of pixels with subpatches=")
    if workers is not None and scheduler is not None:
        raise ParameterError("give either workers= (--workers) or scheduler= (--scheduler), not both")
    validate_series(ds)
    grid = PatchGrid.for_series(ds, patch_size, stride)
    infos = band_infos(ds)
    kwargs = dict(encoder_kwargs or {})
    if not encoder_name.startswith(CHECKPOINT_PREFIX):
        registered = get_meta(encoder_name)
        if not registered.bands or registered.adaptive_bands:
            kwargs.setdefault("bands", infos)
    dev = _resolve_device(device)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers is not None else None
    spec = EncoderSpec(encoder_name, weights, tuple(sorted(kwargs.items())), "changescope.encoders", dev, threads)
    encoder = get_encoder(spec) if workers is None and scheduler is None else build_encoder(spec)
    spec = replace(spec, module=type(encoder).__module__)
    meta = encoder.meta
    band_idx = band_indices(infos, meta)
    layout = BlockLayout.plan(grid, meta.patch_size, meta.input_size, block)
    times = pd.DatetimeIndex(ds["time"].values)
    transform = series_transform(ds)
    params: dict[str, Any] = {
        "encoder": encoder_name,
        "weights_id": encoder.weights_id,
        "encoder_kwargs": json.dumps(kwargs, sort_keys=True, default=_jsonable),
        **_grid_params(grid, layout),
        "transform": [float(v) for v in tuple(transform)[:6]],
        "crs_wkt": series_crs(ds).to_wkt(),
        "bands": [infos[i].name for i in band_idx],
        "normalization": json.dumps(asdict(meta.normalization), sort_keys=True),
        "embed_dim": meta.embed_dim,
        "min_valid": float(min_valid),
    }
    in_process = workers is None and scheduler is None
    defer = in_process and OVERLAP_IO  # a new store is created in the writer thread, while the first block encodes
    attrs = {
        "encoder_patch_size": meta.patch_size,
        "series_bands": [b.name for b in infos],
        "source": str(ds.attrs.get("source", "")),
        "sensor": str(ds.attrs.get("sensor", "unknown")),
    }
    path = as_path(out)
    creates, flags = [], []
    create, done = _open_store(path, params, attrs, layout, times, meta.embed_dim, overwrite=overwrite, defer=defer)
    creates.append(create)
    flags.append(done)
    companions: list[Companion] = []
    if subpatches is not None:
        fine_grid = PatchGrid.for_series(ds, int(subpatch_size or 0), int(subpatch_size or 0))
        fine_layout = BlockLayout.plan(fine_grid, meta.patch_size, meta.input_size, block)
        if not can_share_tiles(layout, fine_layout):  # other blocks or tiles: a second run over the series
            embed_series(
                ds,
                encoder_name,
                weights=weights,
                encoder_kwargs=encoder_kwargs,
                patch_size=fine_grid.size,
                out=subpatches,
                block=block,
                batch_size=batch_size,
                min_valid=min_valid,
                device=device,
                workers=workers,
                scheduler=scheduler,
                overwrite=overwrite,
                progress=progress,
                before_flag=before_flag,
            )
        else:
            fine_path = as_path(subpatches)
            fine_params = {**params, **_grid_params(fine_grid, fine_layout)}
            create, done = _open_store(
                fine_path, fine_params, attrs, fine_layout, times, meta.embed_dim, overwrite=overwrite, defer=defer
            )
            creates.append(create)
            flags.append(done)
            companions.append(Companion(fine_path if isinstance(fine_path, StorePath) else str(fine_path), fine_layout))
    pending = [c for c in creates if c is not None]

    def create_stores() -> object:
        return [make() for make in pending]

    create = create_stores if pending else None
    unfinished = ~np.logical_and.reduce(flags)
    todo = [(int(t), int(br), int(bc)) for t, br, bc in zip(*np.nonzero(unfinished), strict=True)]
    if not todo:
        if create is not None:
            create()
        return path

    def patches(br: int, bc: int) -> int:
        r0, r1, c0, c1 = layout.block_patches(br, bc)
        return (r1 - r0) * (c1 - c0)

    total = sum(patches(br, bc) for _, br, bc in todo)
    plan = TaskPlan(
        path if isinstance(path, StorePath) else str(path),
        layout,
        spec,
        meta.normalization,
        float(min_valid),
        batch_size,
        before_flag,
        companions=tuple(companions),
    )
    grids = " + ".join(f"{lay.size} px" for lay in plan.layouts)
    label = f"embed {encoder_name}, {grids} ({len(todo)} tasks)"
    with _Progress(total, progress, label) as bar:
        if in_process:
            _run_in_process(plan, SeriesSource(ds, band_idx), todo, bar.advance, create)
        else:
            # named, so dask never hashes (pickles) an in-memory series to make its key
            source = delayed(SeriesSource(ds, band_idx), name=f"embed-source-{uuid.uuid4().hex}", traverse=False)
            run = delayed(run_task, pure=False)
            tasks = [run(plan, source, t, br, bc, dask_key_name=f"embed-task-{t}-{br}-{bc}") for t, br, bc in todo]
            import distributed

            Client: Any = distributed.Client
            LocalCluster: Any = distributed.LocalCluster

            if scheduler is not None:
                try:
                    client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
                except (OSError, TimeoutError) as err:
                    raise ParameterError(
                        f"--scheduler {scheduler!r} is unreachable ({type(err).__name__} after "
                        f"{SCHEDULER_TIMEOUT_S} s); start it, or drop --scheduler to run here (--workers N for "
                        "local processes)"
                    ) from None
                with client:
                    _announce(client, progress)
                    _run_distributed(tasks, bar.advance, client)
            else:
                n = int(workers or 1)
                with (
                    LocalCluster(
                        n_workers=n,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address="127.0.0.1:0" if progress else None,
                        silence_logs=40,
                    ) as cluster,
                    Client(cluster) as client,
                ):
                    _announce(client, progress)
                    _run_distributed(tasks, bar.advance, client)
    return path
