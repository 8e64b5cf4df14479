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
from collections.abc import Callable, Sequence
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
from changescope.heap import release
from changescope.series import reflectance
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


Outputs = tuple[tuple[NDArray[np.float32], NDArray[np.float32]], ...]
"""A task's ``(embedding, valid_fraction)`` per grid: the plan's own, then its companions'."""


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


def can_share_tiles(layout: BlockLayout, other: BlockLayout) -> bool:
    """Whether ``other``'s patches can be pooled from ``layout``'s encoder tiles (:class:`Companion`).

    True when both cut the raster into the same blocks and the same tiles of the same tokens, so a tile's feature
    map is the one a run of ``other`` alone would compute.
    """
    same = ("token", "height", "width", "tile", "block", "tile_extent", "n_block_rows", "n_block_cols")
    return all(getattr(layout, name) == getattr(other, name) for name in same)


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
class BlockPatches:
    """The patches of one grid in a block.

    Attributes:
        n_rows: Patch rows in the block.
        n_cols: Patch columns in the block.
        valid_fraction: ``(n_rows, n_cols)`` valid fraction of each patch.
        keep: ``(n_rows, n_cols)`` patches to embed (the others get NaN).
    """

    n_rows: int
    n_cols: int
    valid_fraction: NDArray[np.float32]
    keep: NDArray[np.bool_]


@dataclass(frozen=True)
class PreparedBlock:
    """A block of one date read, tiled and normalised: what is left to do is the forward passes and the pooling.

    Attributes:
        n_rows: Patch rows in the block.
        n_cols: Patch columns in the block.
        valid_fraction: ``(n_rows, n_cols)`` valid fraction of each patch.
        keep: ``(n_rows, n_cols)`` patches to embed (the others get NaN).
        batches: The tiles holding a kept patch (of any grid), in forward passes of at most ``batch_size``.
        companions: The patches of the companion grids (:class:`Companion`), in the plan's order.
    """

    n_rows: int
    n_cols: int
    valid_fraction: NDArray[np.float32]
    keep: NDArray[np.bool_]
    batches: tuple[TileBatch, ...]
    companions: tuple[BlockPatches, ...] = ()

    @property
    def grids(self) -> tuple[BlockPatches, ...]:
        """The block's patches of every grid: its own, then its companions'."""
        return (BlockPatches(self.n_rows, self.n_cols, self.valid_fraction, self.keep), *self.companions)


def _grid_patches(
    valid: NDArray[np.bool_], layout: BlockLayout, n_rows: int, n_cols: int, min_valid: float
) -> BlockPatches:
    """Valid fractions and kept patches of one grid in a block (``valid`` starts at the block's first origin)."""
    vf = patch_valid_fraction(valid, layout.size, layout.stride, n_rows, n_cols)
    return BlockPatches(n_rows, n_cols, vf, (vf >= min_valid) & (vf > 0))


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
    companions: Sequence[tuple[BlockLayout, int, int]] = (),
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
        companions: ``(layout, n_rows, n_cols)`` of each companion grid in the block (:class:`Companion`); a tile
            is encoded when it holds a kept patch of any grid.

    Returns:
        The block's tile batches and patch validity.

    Raises:
        ParameterError: A companion's tiles are not this layout's (:func:`can_share_tiles`).
    """
    own = _grid_patches(valid, layout, n_rows, n_cols, min_valid)
    others = []
    for other, rows, cols in companions:
        if not can_share_tiles(layout, other):
            raise ParameterError(f"patches of {other.size} px cannot be pooled from the tiles of {layout.size} px ones")
        others.append(_grid_patches(valid, other, rows, cols, min_valid))
    grids = ((layout, own), *zip((c[0] for c in companions), others, strict=True))
    if not any(g.keep.any() for _, g in grids):
        return PreparedBlock(n_rows, n_cols, own.valid_fraction, own.keep, (), tuple(others))
    n_ty = max(lay.n_tiles(g.n_rows) for lay, g in grids)
    n_tx = max(lay.n_tiles(g.n_cols) for lay, g in grids)
    step, extent = layout.tile, layout.tile_extent
    ext_y, ext_x = (n_ty - 1) * step + extent, (n_tx - 1) * step + extent
    pad = ((0, 0), (0, max(0, ext_y - refl.shape[1])), (0, max(0, ext_x - refl.shape[2])))
    pixels = np.pad(refl, pad, mode="reflect") if any(p[1] for p in pad) else refl
    mask = np.pad(valid, pad[1:], mode="reflect") if any(p[1] for p in pad) else valid
    token = layout.token
    n_tok = extent // token
    clear = bool(mask.all())

    def needed(ky: int, kx: int) -> bool:
        return any(
            g.keep[ky * lay.per_tile : (ky + 1) * lay.per_tile, kx * lay.per_tile : (kx + 1) * lay.per_tile].any()
            for lay, g in grids
        )

    tiles = [(ky, kx) for ky in range(n_ty) for kx in range(n_tx) if needed(ky, kx)]
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
    return PreparedBlock(n_rows, n_cols, own.valid_fraction, own.keep, tuple(batches), tuple(others))


def encode_block(
    encoder: Encoder, block: PreparedBlock, layout: BlockLayout, companions: Sequence[BlockLayout] = ()
) -> Outputs:
    """Run the encoder on a prepared block's tiles and pool its feature maps onto the block's patches.

    Args:
        encoder: The encoder (on the device the block was prepared for).
        block: The block (:func:`prepare_block`).
        layout: Blocks and tiles.
        companions: The layouts of the block's companion grids (as prepared), each pooled from the same features.

    Returns:
        Per grid (``layout``'s, then the companions'): ``embedding (n_rows, n_cols, D)`` (NaN where not embedded)
        and ``valid_fraction (n_rows, n_cols)``.

    Raises:
        ParameterError: The encoder's feature map does not have the shape its metadata promises, or the companions
            are not the block's.
    """
    grids = block.grids
    layouts = (layout, *companions)
    if len(layouts) != len(grids):
        raise ParameterError(f"{len(companions)} companion layouts given for a block of {len(grids) - 1} companions")
    n_tok = layout.tokens_per_tile
    embs = [np.full((g.n_rows, g.n_cols, encoder.embed_dim), np.nan, dtype=np.float32) for g in grids]
    if block.batches:
        pools = []
        for lay in layouts:  # each grid's patches over the same tokens of a tile
            weights = overlap_matrix(lay.per_tile, lay.size, lay.stride, n_tok, lay.token)
            pools.append(torch.from_numpy(weights).to(device=encoder.device, dtype=torch.float32))
        expected = (encoder.embed_dim, n_tok, n_tok)
        with torch.inference_mode():
            for batch in block.batches:
                features = encoder.feature_map(batch.x)
                if tuple(features.shape[1:]) != expected:
                    raise ParameterError(
                        f"encoder {encoder.meta.name!r} returned features {tuple(features.shape)!r} for tiles "
                        f"{tuple(batch.x.shape)!r}; expected (N, {expected[0]}, {expected[1]}, {expected[2]}) as its "
                        "meta says"
                    )
                for lay, g, a, emb in zip(layouts, grids, pools, embs, strict=True):
                    pooled = pool_feature_map(features.float(), a, a, batch.token_valid).permute(0, 2, 3, 1)
                    _place(emb, pooled.cpu().numpy(), batch.tiles, lay.per_tile, g)
    for g, emb in zip(grids, embs, strict=True):
        emb[~g.keep] = np.nan
    return tuple((emb, g.valid_fraction) for g, emb in zip(grids, embs, strict=True))


def _place(
    emb: NDArray[np.float32],
    pooled: NDArray[np.float32],
    tiles: Sequence[tuple[int, int]],
    per_tile: int,
    grid: BlockPatches,
) -> None:
    """Copy each tile's pooled patches into the block's ``emb`` (a tile past the grid's last patch adds none)."""
    for (ky, kx), values in zip(tiles, pooled, strict=True):
        rr, cc = min(per_tile, grid.n_rows - ky * per_tile), min(per_tile, grid.n_cols - kx * per_tile)
        if rr > 0 and cc > 0:
            emb[ky * per_tile : ky * per_tile + rr, kx * per_tile : kx * per_tile + cc] = values[:rr, :cc]


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
    return encode_block(encoder, block, layout)[0]


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
