"""One task of the embedding run: read a block of one date, run the encoder on its tiles, pool, write.

A task is three steps: :func:`load_block` (read, tile, normalise: no encoder needed), :func:`encode_block` (forward
passes, pooling) and :func:`write_task` (chunks, then flag). :func:`run_task` runs them in turn; in-process runs
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
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import torch
import xarray as xr
from dask.base import compute, is_dask_collection
from dask.base import optimize as dask_optimize
from numpy.typing import NDArray

from changescope.embed.layout import BlockLayout
from changescope.embed.pooling import overlap_matrix, patch_valid_fraction, pool_feature_map
from changescope.embed.store import write_block
from changescope.encoders.bands import normalize
from changescope.encoders.base import Encoder, Normalization
from changescope.encoders.registry import create_encoder
from changescope.errors import ParameterError
from changescope.series import reflectance
from changescope.storepath import StorePath

__all__ = [
    "BlockSource",
    "GDAL_CACHE_BYTES",
    "EncoderSpec",
    "SeriesSource",
    "TaskPlan",
    "PreparedBlock",
    "TileBatch",
    "build_encoder",
    "embed_block",
    "encode_block",
    "get_encoder",
    "load_block",
    "prepare_block",
    "run_task",
    "write_task",
]


READ_THREADS = max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
"""Threads that read a block's chunks (band files and windows of a lazy series) at once: GDAL releases the GIL, so
they decode in parallel while the encoder waits for the block (two halve a Sentinel-2 block's read on 2 cores;
three did no better)."""

GDAL_CACHE_BYTES = 128 * 2**20
"""GDAL block cache while a task reads its block. GDAL's default (5 % of the machine's RAM) grows every process by
gigabytes on large stacks, while each task reads its pixels once."""


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
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            refl, valid = compute(
                reflectance(sub).data, sub["valid"].data, scheduler="threads", num_workers=READ_THREADS
            )
        return np.asarray(refl, dtype=np.float32), np.asarray(valid, dtype=bool)

    def load(self, plan: TaskPlan, t: int, br: int, bc: int) -> PreparedBlock:
        """Block ``(br, bc)`` of date ``t`` read and prepared now (:func:`load_block`)."""
        return load_block(plan, self, t, br, bc)


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
        writer: Takes ``(t, br, bc, embedding, valid_fraction)`` of a finished task and writes it later
            (:class:`~changescope.embed.overlap.BlockWriter`, in-process runs only); ``None``: the task writes itself.
    """

    store: str | StorePath
    layout: BlockLayout
    encoder: EncoderSpec
    normalization: Normalization
    min_valid: float
    batch_size: int
    before_flag: Callable[[int], None] | None = None
    writer: Callable[[int, int, int, NDArray[np.float32], NDArray[np.float32]], None] | None = None


@dataclass(frozen=True)
class TileBatch:
    """One forward pass worth of tiles of a block, ready for the encoder.

    Attributes:
        tiles: ``(ky, kx)`` tile positions in the block, in batch order.
        x: ``(N, C, H, W)`` normalised encoder input on the encoder's device.
        token_valid: ``(N, h, w)`` share of valid pixels under each token, on the same device.
    """

    tiles: tuple[tuple[int, int], ...]
    x: torch.Tensor
    token_valid: torch.Tensor


@dataclass(frozen=True)
class PreparedBlock:
    """A block of one date read, tiled and normalised: what is left to do is the forward passes and the pooling.

    Attributes:
        n_rows: Patch rows in the block.
        n_cols: Patch columns in the block.
        valid_fraction: ``(n_rows, n_cols)`` valid fraction of each patch.
        keep: ``(n_rows, n_cols)`` patches to embed (the others get NaN).
        batches: The tiles holding a kept patch, in forward passes of at most ``batch_size``.
    """

    n_rows: int
    n_cols: int
    valid_fraction: NDArray[np.float32]
    keep: NDArray[np.bool_]
    batches: tuple[TileBatch, ...]


def prepare_block(
    refl: NDArray[np.float32],
    valid: NDArray[np.bool_],
    *,
    layout: BlockLayout,
    n_rows: int,
    n_cols: int,
    normalization: Normalization,
    min_valid: float,
    batch_size: int,
    device: torch.device | str,
    keep_nan: bool,
) -> PreparedBlock:
    """Cut a block into the encoder's tile batches (no encoder needed: this runs ahead, in a reader thread).

    Args:
        refl: ``(C, h, w)`` reflectance of the block's pixels (NaN = invalid), starting at its first patch origin,
            clipped to the raster.
        valid: ``(h, w)`` pixel validity.
        layout: Blocks and tiles.
        n_rows: Patch rows in the block.
        n_cols: Patch columns in the block.
        normalization: The encoder's input normalisation.
        min_valid: Minimum valid fraction for a patch to be embedded.
        batch_size: Tiles per forward pass.
        device: The encoder's device.
        keep_nan: Leave invalid pixels NaN (encoders whose meta says ``accepts_nan``).

    Returns:
        The block's tile batches and patch validity.
    """
    vf = patch_valid_fraction(valid, layout.size, layout.stride, n_rows, n_cols)
    keep = (vf >= min_valid) & (vf > 0)
    if not keep.any():
        return PreparedBlock(n_rows, n_cols, vf, keep, ())
    ext_y, ext_x = layout.block_extent(n_rows), layout.block_extent(n_cols)
    pad = ((0, 0), (0, max(0, ext_y - refl.shape[1])), (0, max(0, ext_x - refl.shape[2])))
    pixels = np.pad(refl, pad, mode="reflect") if any(p[1] for p in pad) else refl
    mask = np.pad(valid, pad[1:], mode="reflect") if any(p[1] for p in pad) else valid
    token = layout.token
    pt, step, extent = layout.per_tile, layout.tile, layout.tile_extent
    n_tok = extent // token
    clear = bool(mask.all())
    tiles = [
        (ky, kx)
        for ky in range(layout.n_tiles(n_rows))
        for kx in range(layout.n_tiles(n_cols))
        if keep[ky * pt : (ky + 1) * pt, kx * pt : (kx + 1) * pt].any()
    ]
    batches = []
    with torch.inference_mode():
        for start in range(0, len(tiles), batch_size):
            batch = tuple(tiles[start : start + batch_size])
            stack = np.stack(
                [pixels[:, ky * step : ky * step + extent, kx * step : kx * step + extent] for ky, kx in batch]
            )
            x = normalize(torch.from_numpy(stack).to(device), normalization, keep_nan=keep_nan)
            if clear:  # every token fully valid (the mean of ones is exactly 1)
                token_valid = np.ones((len(batch), n_tok, n_tok), dtype=np.float32)
            else:
                vmask = np.stack(
                    [mask[ky * step : ky * step + extent, kx * step : kx * step + extent] for ky, kx in batch]
                ).astype(np.float32)
                token_valid = vmask.reshape(len(batch), n_tok, token, n_tok, token).mean(axis=(2, 4))
            batches.append(TileBatch(batch, x, torch.from_numpy(token_valid).to(device)))
    return PreparedBlock(n_rows, n_cols, vf, keep, tuple(batches))


def encode_block(
    encoder: Encoder, block: PreparedBlock, layout: BlockLayout
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Run the encoder on a prepared block's tiles and pool its feature maps onto the block's patches.

    Args:
        encoder: The encoder (on the device the block was prepared for).
        block: The block (:func:`prepare_block`).
        layout: Blocks and tiles.

    Returns:
        ``embedding (n_rows, n_cols, D)`` (NaN where not embedded) and ``valid_fraction (n_rows, n_cols)``.

    Raises:
        ParameterError: The encoder's feature map does not have the shape its metadata promises.
    """
    n_rows, n_cols, pt = block.n_rows, block.n_cols, layout.per_tile
    emb = np.full((n_rows, n_cols, encoder.embed_dim), np.nan, dtype=np.float32)
    if not block.batches:
        return emb, block.valid_fraction
    weights = overlap_matrix(pt, layout.size, layout.stride, layout.tokens_per_tile, layout.token)
    a = torch.from_numpy(weights).to(device=encoder.device, dtype=torch.float32)
    expected = (encoder.embed_dim, layout.tokens_per_tile, layout.tokens_per_tile)
    with torch.inference_mode():
        for batch in block.batches:
            features = encoder.feature_map(batch.x)
            if tuple(features.shape[1:]) != expected:
                raise ParameterError(
                    f"encoder {encoder.meta.name!r} returned features {tuple(features.shape)!r} for tiles "
                    f"{tuple(batch.x.shape)!r}; expected (N, {expected[0]}, {expected[1]}, {expected[2]}) as its "
                    "meta says"
                )
            pooled = pool_feature_map(features.float(), a, a, batch.token_valid).permute(0, 2, 3, 1).cpu().numpy()
            for (ky, kx), values in zip(batch.tiles, pooled, strict=True):
                rr, cc = min(pt, n_rows - ky * pt), min(pt, n_cols - kx * pt)
                emb[ky * pt : ky * pt + rr, kx * pt : kx * pt + cc] = values[:rr, :cc]
    emb[~block.keep] = np.nan
    return emb, block.valid_fraction


def embed_block(
    encoder: Encoder,
    refl: NDArray[np.float32],
    valid: NDArray[np.bool_],
    *,
    layout: BlockLayout,
    n_rows: int,
    n_cols: int,
    normalization: Normalization,
    min_valid: float,
    batch_size: int,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Embed the patches of one block of one date (:func:`prepare_block`, then :func:`encode_block`).

    Args:
        encoder: The encoder (on its device).
        refl: ``(C, h, w)`` reflectance of the block's pixels (NaN = invalid), starting at its first patch origin,
            clipped to the raster.
        valid: ``(h, w)`` pixel validity.
        layout: Blocks and tiles.
        n_rows: Patch rows in the block.
        n_cols: Patch columns in the block.
        normalization: The encoder's input normalisation.
        min_valid: Minimum valid fraction for a patch to be embedded.
        batch_size: Tiles per forward pass.

    Returns:
        ``embedding (n_rows, n_cols, D)`` (NaN where not embedded) and ``valid_fraction (n_rows, n_cols)``.
    """
    block = prepare_block(
        refl,
        valid,
        layout=layout,
        n_rows=n_rows,
        n_cols=n_cols,
        normalization=normalization,
        min_valid=min_valid,
        batch_size=batch_size,
        device=encoder.device,
        keep_nan=encoder.meta.accepts_nan,
    )
    return encode_block(encoder, block, layout)


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
    )


def write_task(
    plan: TaskPlan, t: int, br: int, bc: int, embedding: NDArray[np.float32], valid_fraction: NDArray[np.float32]
) -> int:
    """Write a task's chunks, then its flag (the part of a task after the encoder).

    Returns:
        The number of patches written.
    """
    layout = plan.layout
    hook = _hook(plan)
    write_block(
        plan.store, t, br, bc, layout=layout, embedding=embedding, valid_fraction=valid_fraction, before_flag=hook
    )
    _TASKS_DONE[0] += 1
    r0, r1, c0, c1 = layout.block_patches(br, bc)
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
    emb, vf = encode_block(encoder, block, plan.layout)
    if plan.writer is not None:
        plan.writer(t, br, bc, emb, vf)
        return block.n_rows * block.n_cols
    return write_task(plan, t, br, bc, emb, vf)
