"""A block of one date as the encoder sees it: tiles cut and normalised, then feature maps pooled onto patch grids.

:func:`prepare_block` cuts a block's pixels into the encoder's tiles (it needs no encoder, so a reader thread runs it
ahead); :func:`encode_block` runs the forward passes and pools each tile's feature map onto the block's patches,
for the plan's own grid and for its companion grids (:func:`can_share_tiles`: grids that cut the raster into the same
blocks and tiles, such as a run's sub-patches, are pooled from the same features). :func:`embed_block` does both.
The task around them (reading, writing, resuming) is :mod:`changescope.embed.pipeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from changescope.embed.layout import BlockLayout
from changescope.embed.pooling import overlap_matrix, patch_valid_fraction, pool_feature_map
from changescope.encoders.bands import normalize
from changescope.encoders.base import Encoder, Normalization
from changescope.errors import ParameterError

__all__ = [
    "BlockPatches",
    "Outputs",
    "PreparedBlock",
    "TileBatch",
    "can_share_tiles",
    "embed_block",
    "encode_block",
    "prepare_block",
]

Outputs = tuple[tuple[NDArray[np.float32], NDArray[np.float32]], ...]
"""A task's ``(embedding, valid_fraction)`` per grid: the plan's own, then its companions'."""


def can_share_tiles(layout: BlockLayout, other: BlockLayout) -> bool:
    """Whether ``other``'s patches can be pooled from ``layout``'s encoder tiles (:class:`Companion`).

    True when both cut the raster into the same blocks and the same tiles of the same tokens, so a tile's feature
    map is the one a run of ``other`` alone would compute.
    """
    same = ("token", "height", "width", "tile", "block", "tile_extent", "n_block_rows", "n_block_cols")
    return all(getattr(layout, name) == getattr(other, name) for name in same)


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
