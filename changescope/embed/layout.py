"""How the patch grid is cut into blocks (one task and one Zarr chunk each) and encoder tiles.

Three sizes, all in pixels of the series grid, each a multiple of the one before:

- ``unit = lcm(stride, token)``: the smallest step that starts both a patch and an encoder token;
- the *tile step* (``tile``): a multiple of ``unit`` close to the encoder's preferred ``input_size``. Tile ``k``
  starts at ``k * tile`` and holds the patches whose origins fall in ``[k * tile, (k + 1) * tile)``; its pixel extent
  (``tile_extent``) adds the ``size - stride`` pixels the last patch reaches beyond, rounded up to whole tokens.
  Tiles of one block overlap by that margin; past the raster edge they are padded by reflection;
- the *block step* (``block``): a multiple of ``tile``. Block ``(br, bc)`` is the patches ``br * block / stride``
  onwards; one task embeds one block of one date and writes exactly one chunk of each output array.

Because every tile starts on a multiple of ``token`` pixels, tokens sit on one global grid whatever the block, and a
patch whose size and stride are multiples of the token size is pooled from exactly its own tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from changescope.errors import ParameterError
from changescope.grid import PatchGrid

__all__ = ["DEFAULT_BLOCK_PX", "BlockLayout"]

DEFAULT_BLOCK_PX = 1024
"""Default block side in pixels (rounded up to whole tiles): bounds a task's memory, not the AOI size."""


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class BlockLayout:
    """Blocks and tiles over a patch grid.

    Attributes:
        size: Patch side in pixels.
        stride: Step between patch origins.
        token: Encoder token side in pixels (its ``patch_size``).
        height: Raster height.
        width: Raster width.
        tile: Tile step in pixels (a multiple of ``lcm(stride, token)``).
        block: Block step in pixels (a multiple of ``tile``).
    """

    size: int
    stride: int
    token: int
    height: int
    width: int
    tile: int
    block: int

    @classmethod
    def plan(cls, grid: PatchGrid, token: int, input_size: int, block: int | None = None) -> BlockLayout:
        """Choose tile and block steps for a grid and an encoder.

        Args:
            grid: The patch grid.
            token: The encoder's token size (``meta.patch_size``).
            input_size: The encoder's preferred tile side; the tile step is the multiple of ``lcm(stride, token)``
                nearest below it (at least one).
            block: Wanted block side in pixels (default :data:`DEFAULT_BLOCK_PX`), rounded up to whole tiles and
                capped at what the raster needs.

        Raises:
            ParameterError: ``token``, ``input_size`` or ``block`` is not positive.
        """
        if token < 1:
            raise ParameterError(f"encoder patch_size={token!r} must be a positive number of pixels")
        if input_size < 1:
            raise ParameterError(f"encoder input_size={input_size!r} must be a positive number of pixels")
        if block is not None and block < 1:
            raise ParameterError(f"block={block!r} must be a positive number of pixels (e.g. --block 1024)")
        unit = math.lcm(grid.stride, token)
        tile = unit * max(1, input_size // unit)
        per_tile = tile // grid.stride
        tiles_needed = -(-max(grid.n_rows, grid.n_cols) // per_tile)
        n_tiles = min(max(1, -(-(block or DEFAULT_BLOCK_PX) // tile)), tiles_needed)
        return cls(grid.size, grid.stride, token, grid.height, grid.width, tile, tile * n_tiles)

    # ------------------------------------------------------------------ counts
    @property
    def n_rows(self) -> int:
        """Patch rows of the grid."""
        return (self.height - self.size) // self.stride + 1

    @property
    def n_cols(self) -> int:
        """Patch columns of the grid."""
        return (self.width - self.size) // self.stride + 1

    @property
    def per_tile(self) -> int:
        """Patches per tile side."""
        return self.tile // self.stride

    @property
    def per_block(self) -> int:
        """Patches per block side (the chunk side of the output arrays)."""
        return self.block // self.stride

    @property
    def tile_extent(self) -> int:
        """Tile side in pixels given to the encoder (a multiple of ``token``)."""
        return _round_up(self.tile - self.stride + self.size, self.token)

    @property
    def tokens_per_tile(self) -> int:
        """Tokens per tile side."""
        return self.tile_extent // self.token

    @property
    def n_block_rows(self) -> int:
        """Block rows."""
        return -(-self.n_rows // self.per_block)

    @property
    def n_block_cols(self) -> int:
        """Block columns."""
        return -(-self.n_cols // self.per_block)

    # ----------------------------------------------------------------- windows
    def block_patches(self, br: int, bc: int) -> tuple[int, int, int, int]:
        """Patch range ``(r0, r1, c0, c1)`` (end-exclusive) of block ``(br, bc)``."""
        if not (0 <= br < self.n_block_rows and 0 <= bc < self.n_block_cols):
            raise ParameterError(f"block ({br}, {bc}) is outside the {self.n_block_rows}x{self.n_block_cols} blocks")
        r0, c0 = br * self.per_block, bc * self.per_block
        return r0, min(self.n_rows, r0 + self.per_block), c0, min(self.n_cols, c0 + self.per_block)

    def n_tiles(self, n_patches: int) -> int:
        """Tiles needed along one axis for ``n_patches`` patches."""
        return -(-n_patches // self.per_tile)

    def block_extent(self, n_patches: int) -> int:
        """Pixels along one axis that the tiles of a block span (reflection-padded past the raster)."""
        return (self.n_tiles(n_patches) - 1) * self.tile + self.tile_extent
