"""One task of the embedding run: read a block of one date, run the encoder on its tiles, pool, write.

A task is three steps: :func:`load_block` (read, then :func:`~changescope.embed.blocks.prepare_block`: tile,
normalise, no encoder needed), :func:`~changescope.embed.blocks.encode_block` (forward passes, pooling) and
:func:`write_task` (chunks, then flags). :func:`run_task` runs them in turn; in-process runs
load the next task and write the previous one in other threads (:mod:`changescope.embed.overlap`).

Everything here runs where the task runs (the calling process, or a dask worker), so the pieces are picklable
descriptions (:class:`EncoderSpec`, :class:`TaskPlan`, :class:`SeriesSource`) and each process builds its encoder
once (:func:`get_encoder`).

``TaskPlan.before_flag``, when set, is called with the number of tasks this process has finished, after a task's
data chunks are written and before its completion flag: the worst moment for a kill. The resume tests pass a
callback that kills the process there (``embed_series(..., before_flag=...)``).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import xarray as xr
from dask.base import compute, is_dask_collection
from dask.base import optimize as dask_optimize
from numpy.typing import NDArray

from changescope.cores import usable_cores
from changescope.embed.blocks import (
    BlockPatches,
    Outputs,
    PreparedBlock,
    TileBatch,
    can_share_tiles,
    embed_block,
    encode_block,
    prepare_block,
)
from changescope.embed.layout import BlockLayout
from changescope.embed.store import write_block
from changescope.encoders.base import Encoder, Normalization
from changescope.encoders.registry import create_encoder
from changescope.errors import ParameterError
from changescope.heap import release
from changescope.io.handles import GDAL_CACHE_BYTES, bounded_block_cache
from changescope.series import reflectance_values
from changescope.storepath import StorePath

__all__ = [
    "BlockPatches",
    "BlockSource",
    "Companion",
    "GDAL_CACHE_BYTES",
    "EncoderSpec",
    "Outputs",
    "SeriesSource",
    "TaskPlan",
    "PreparedBlock",
    "TileBatch",
    "build_encoder",
    "can_share_tiles",
    "embed_block",
    "encode_block",
    "get_encoder",
    "load_block",
    "prepare_block",
    "run_task",
    "write_task",
]


READ_THREADS = min(2, usable_cores())
"""Threads that read a block's chunks (band files and windows of a lazy series) at once: GDAL releases the GIL, so
they decode in parallel while the encoder waits for the block (two halve a Sentinel-2 block's read on 2 cores;
three did no better)."""


@dataclass(frozen=True)
class EncoderSpec:
    """What a process needs to build the run's encoder.

    Attributes:
        name: Registry name.
        weights: Weights argument of :func:`~changescope.encoders.create_encoder`.
        kwargs: Family options, as sorted ``(key, value)`` pairs.
        module: Module defining the encoder class; imported first so that encoders registered outside the
            built-in families (plugins, tests) exist in fresh worker processes too.
        device: Torch device to run on.
        threads: ``torch.set_num_threads`` for the process (``None`` leaves torch's default).
    """

    name: str
    weights: str | None
    kwargs: tuple[tuple[str, Any], ...]
    module: str
    device: str
    threads: int | None = None


_CACHE: dict[str, Encoder] = {}
_CACHE_LOCK = threading.Lock()
_TASKS_DONE = [0]


def build_encoder(spec: EncoderSpec) -> Encoder:
    """Build the encoder of ``spec`` on its device.

    Randomly initialised weights (``weights="random"``) come from a fixed seed (torch's global generator is forked,
    so the caller's random state is untouched): every process of a run, and every run, builds the same encoder.
    """
    importlib.import_module(spec.module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = create_encoder(spec.name, spec.weights, **dict(spec.kwargs))
    return encoder.to(spec.device)


def _weights_stamp(weights: str | None) -> tuple[tuple[str, int, int], ...]:
    """Size and modification time of local weights, so that a rewritten checkpoint is not served from the cache."""
    if not weights:
        return ()
    path = Path(weights)
    try:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    except OSError:
        return ()


def _cache_key(spec: EncoderSpec) -> str:
    return repr((spec.name, spec.weights, spec.kwargs, spec.device, spec.threads, _weights_stamp(spec.weights)))


def get_encoder(spec: EncoderSpec) -> Encoder:
    """The process' encoder for ``spec``, built on first use and kept (one encoder per process).

    A dask worker builds its encoder once for all its tasks, and repeated runs in one process (notebooks,
    benchmarks) reuse it; local weights that changed on disk since are reloaded.
    """
    key = _cache_key(spec)
    with _CACHE_LOCK:
        if key not in _CACHE:
            if spec.threads is not None:
                torch.set_num_threads(spec.threads)
            encoder = build_encoder(spec)
            _CACHE.clear()
            _CACHE[key] = encoder
        return _CACHE[key]


class SeriesSource:
    """The part of a series the tasks read: the encoder's bands of ``image`` and ``valid``, lazy if the series is.

    Picklable, so that dask ships it to workers; a task reads only its block of one date.

    Args:
        ds: The series.
        band_idx: Series band indices in the encoder's order.
    """

    def __init__(self, ds: xr.Dataset, band_idx: list[int]) -> None:
        self.ds = ds[["image", "valid"]].isel(band=band_idx)
        self._dates: dict[int, xr.Dataset] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"ds": self.ds}  # the per-date graphs are rebuilt where the source is used

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.ds = state["ds"]
        self._dates = {}

    def date(self, t: int) -> xr.Dataset:
        """Date ``t`` of the series; lazy variables carry only that date's graph, culled once.

        A lazy series (COGs read through dask) has one graph for every date and band. Computing a window of it
        culls that whole graph first, so each block's read would cost time in proportion to the whole series'
        graph (on a whole Sentinel-2 tile, a quarter of the reader's time at 2 dates, and growing with the dates).
        Culled to one date once, the graph a block's read culls is that date's. The last date used is kept.
        """
        if t not in self._dates:
            sub = self.ds.isel(time=t)
            if any(is_dask_collection(v.data) for v in sub.data_vars.values()):
                (sub,) = dask_optimize(sub)
            self._dates = {t: sub}
        return self._dates[t]

    def read(self, t: int, ys: slice, xs: slice) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Reflectance ``(C, h, w)`` (NaN where invalid) and validity ``(h, w)`` of a window of date ``t``."""
        sub = self.date(t).isel(y=ys, x=xs)
        # one graph for both (shared reads), its chunks (band files, windows) read by a few threads: GDAL decodes
        # and warps without the GIL (a 1024 px block of 12 Sentinel-2 bands: 0.85 s in one thread, 0.46 s in two)
        with bounded_block_cache():
            image, valid = compute(sub["image"].data, sub["valid"].data, scheduler="threads", num_workers=READ_THREADS)
        mask = np.asarray(valid, dtype=bool)
        return reflectance_values(image, mask, sub["scale"].values, sub["offset"].values), mask

    def load(self, plan: TaskPlan, t: int, br: int, bc: int) -> PreparedBlock:
        """Block ``(br, bc)`` of date ``t`` read and prepared now (:func:`load_block`)."""
        return load_block(plan, self, t, br, bc)


@dataclass(frozen=True)
class Companion:
    """A second patch grid pooled from the same forward passes as the plan's own (the sub-patch store).

    Its layout has the plan layout's token, tile step, tile extent and blocks, so the encoder's tiles of a block
    serve both grids: the block is read and encoded once and pooled twice (:func:`can_share_tiles`).

    Attributes:
        store: Its embeddings store.
        layout: Its blocks and tiles.
    """

    store: str | StorePath
    layout: BlockLayout


@dataclass(frozen=True)
class TaskPlan:
    """Everything a task needs besides its (date, block) and the series.

    Attributes:
        store: Path of the embeddings store (a :class:`~changescope.storepath.StorePath` in an object store).
        layout: Blocks and tiles.
        encoder: How to build the encoder.
        normalization: Input normalisation of the encoder.
        min_valid: Patches with a smaller valid fraction (or none valid) get NaN embeddings.
        batch_size: Tiles per encoder forward pass.
        before_flag: Called with the tasks finished so far between a task's chunks and its flag (module
            docstring); must be picklable to run on dask workers.
        writer: Takes ``(t, br, bc, outputs)`` of a finished task (:data:`Outputs`) and writes it later
            (:class:`~changescope.embed.overlap.BlockWriter`, in-process runs only); ``None``: the task writes itself.
        companions: Other patch grids pooled from the same tiles, each into its own store (:class:`Companion`).
    """

    store: str | StorePath
    layout: BlockLayout
    encoder: EncoderSpec
    normalization: Normalization
    min_valid: float
    batch_size: int
    before_flag: Callable[[int], None] | None = None
    writer: Callable[[int, int, int, Outputs], None] | None = None
    companions: tuple[Companion, ...] = ()

    @property
    def layouts(self) -> tuple[BlockLayout, ...]:
        """The plan's layout, then its companions'."""
        return (self.layout, *(c.layout for c in self.companions))

    @property
    def stores(self) -> tuple[str | StorePath, ...]:
        """The plan's store, then its companions'."""
        return (self.store, *(c.store for c in self.companions))


def _hook(plan: TaskPlan) -> Callable[[], None] | None:
    if plan.before_flag is None:
        return None
    callback, done = plan.before_flag, _TASKS_DONE[0]
    return lambda: callback(done)


def load_block(plan: TaskPlan, source: SeriesSource, t: int, br: int, bc: int) -> PreparedBlock:
    """Read block ``(br, bc)`` of date ``t`` and prepare its tile batches (the part of a task before the encoder)."""
    layout = plan.layout
    encoder = get_encoder(plan.encoder)
    r0, r1, c0, c1 = layout.block_patches(br, bc)
    y0, x0 = r0 * layout.stride, c0 * layout.stride
    ys = slice(y0, min(layout.height, y0 + layout.block_extent(r1 - r0)))
    xs = slice(x0, min(layout.width, x0 + layout.block_extent(c1 - c0)))
    companions = []
    for lay in plan.layouts[1:]:  # the same block of each companion grid; it may need more tiles at the edges
        q0, q1, p0, p1 = lay.block_patches(br, bc)
        companions.append((lay, q1 - q0, p1 - p0))
        ys = slice(y0, min(layout.height, max(ys.stop, y0 + lay.block_extent(q1 - q0))))
        xs = slice(x0, min(layout.width, max(xs.stop, x0 + lay.block_extent(p1 - p0))))
    refl, valid = source.read(t, ys, xs)
    return prepare_block(
        refl,
        valid,
        layout=layout,
        n_rows=r1 - r0,
        n_cols=c1 - c0,
        normalization=plan.normalization,
        min_valid=plan.min_valid,
        batch_size=plan.batch_size,
        device=encoder.device,
        keep_nan=encoder.meta.accepts_nan,
        companions=companions,
    )


def write_task(plan: TaskPlan, t: int, br: int, bc: int, outputs: Outputs) -> int:
    """Write a task's chunks, then its flag, in each of its stores in turn (the part of a task after the encoder).

    Args:
        plan: The run's plan.
        t: Date index.
        br: Block row.
        bc: Block column.
        outputs: ``(embedding, valid_fraction)`` per store (:data:`Outputs`).

    Returns:
        The number of patches written to the plan's own store.

    Raises:
        ParameterError: ``outputs`` does not have one entry per store.
    """
    if len(outputs) != len(plan.stores):
        raise ParameterError(f"a task of {len(plan.stores)} stores gave {len(outputs)} outputs")
    hook = _hook(plan)
    for store, lay, (embedding, valid_fraction) in zip(plan.stores, plan.layouts, outputs, strict=True):
        write_block(store, t, br, bc, layout=lay, embedding=embedding, valid_fraction=valid_fraction, before_flag=hook)
        hook = None  # the resume tests' kill comes before the first flag
    _TASKS_DONE[0] += 1
    r0, r1, c0, c1 = plan.layout.block_patches(br, bc)
    return (r1 - r0) * (c1 - c0)


class BlockSource(Protocol):
    """Where :func:`run_task` gets its block: a :class:`SeriesSource`, or a prefetcher reading ahead."""

    def load(self, plan: TaskPlan, t: int, br: int, bc: int) -> PreparedBlock:
        """Block ``(br, bc)`` of date ``t``, read and prepared."""
        ...


def run_task(plan: TaskPlan, source: BlockSource, t: int, br: int, bc: int) -> int:
    """Embed block ``(br, bc)`` of date ``t`` and write its chunks, then its flag.

    ``source`` may be a :class:`~changescope.embed.overlap.BlockPrefetcher` (the block was read ahead) and
    ``plan.writer`` may take the write (it then happens behind the next task's compute).

    Returns:
        The number of patches of the block.
    """
    encoder = get_encoder(plan.encoder)
    block = source.load(plan, t, br, bc)
    outputs = encode_block(encoder, block, plan.layout, plan.layouts[1:])
    n_patches = block.n_rows * block.n_cols
    del block
    if plan.writer is not None:
        plan.writer(t, br, bc, outputs)
    else:
        n_patches = write_task(plan, t, br, bc, outputs)
    release()  # the reader's, encoder's and writer's freed blocks go back to the system (changescope.heap)
    return n_patches
