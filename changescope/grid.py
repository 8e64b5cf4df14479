"""The patch grid: ``(row, col)`` <-> pixel window <-> polygon, and pixel <-> patch aggregation.

Patch ``(row, col)`` covers pixels ``[row*stride : row*stride+size, col*stride : col*stride+size]`` of the series
grid. Only whole patches exist: ``n_rows = (height - size) // stride + 1``; with ``stride == size`` the last
``height % size`` rows (and columns) of pixels belong to no patch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
import xarray as xr
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from changescope.errors import GridMismatchError, ParameterError
from changescope.types import Aggregation

__all__ = ["PatchGrid"]


@dataclass(frozen=True)
class PatchGrid:
    """A regular grid of square patches over a raster.

    Args:
        size: Patch side in pixels.
        stride: Step between patch origins in pixels (defaults to ``size``: no overlap).
        height: Raster height in pixels.
        width: Raster width in pixels.
        transform: Affine pixel-to-CRS transform of the raster.
        crs: CRS of the raster (any form pyproj accepts), kept for the polygons' users.
    """

    size: int
    stride: int = 0
    height: int = 0
    width: int = 0
    transform: Affine = field(default_factory=Affine.identity)
    crs: Any = None

    def __post_init__(self) -> None:
        if self.stride == 0:
            object.__setattr__(self, "stride", self.size)
        if self.size < 1:
            raise ParameterError(f"patch size={self.size!r} must be a positive number of pixels")
        if self.stride < 1:
            raise ParameterError(f"stride={self.stride!r} must be a positive number of pixels")
        if self.height < self.size or self.width < self.size:
            raise ParameterError(
                f"patch size={self.size!r} is larger than the raster ({self.height}x{self.width} px); "
                "use a smaller --patch-size"
            )

    @classmethod
    def for_series(cls, ds: xr.Dataset, size: int, stride: int | None = None) -> PatchGrid:
        """Build the grid of a series (its shape, transform and CRS)."""
        return cls(
            size=size,
            stride=stride or size,
            height=int(ds.sizes["y"]),
            width=int(ds.sizes["x"]),
            transform=Affine(*tuple(ds.rio.transform(recalc=True))[:6]),
            crs=ds.rio.crs,
        )

    @classmethod
    def for_store(cls, attrs: Mapping[str, Any]) -> PatchGrid:
        """The grid an embeddings store was made on (its attributes: patch size, stride, shape, transform, CRS)."""
        from rasterio.crs import CRS

        wkt = attrs.get("crs_wkt")
        return cls(
            size=int(attrs["patch_size"]),
            stride=int(attrs.get("stride") or attrs["patch_size"]),
            height=int(attrs["grid_height"]),
            width=int(attrs["grid_width"]),
            transform=Affine(*[float(v) for v in attrs["transform"]][:6]),
            crs=CRS.from_wkt(wkt) if wkt else None,
        )

    # ---------------------------------------------------------------- geometry
    @property
    def n_rows(self) -> int:
        """Number of patch rows."""
        return (self.height - self.size) // self.stride + 1

    @property
    def n_cols(self) -> int:
        """Number of patch columns."""
        return (self.width - self.size) // self.stride + 1

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, n_cols)``."""
        return self.n_rows, self.n_cols

    def _check(self, row: int, col: int) -> None:
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise ParameterError(f"patch (row={row!r}, col={col!r}) is outside the {self.n_rows}x{self.n_cols} grid")

    def origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left pixel ``(y0, x0)`` of a patch."""
        self._check(row, col)
        return row * self.stride, col * self.stride

    def window(self, row: int, col: int) -> tuple[slice, slice]:
        """Pixel slices ``(ys, xs)`` of a patch, usable as ``array[..., ys, xs]``."""
        y0, x0 = self.origin(row, col)
        return slice(y0, y0 + self.size), slice(x0, x0 + self.size)

    def patches_containing(self, y: int, x: int) -> list[tuple[int, int]]:
        """Every patch whose window contains pixel ``(y, x)`` (none for uncovered edge pixels)."""
        if not (0 <= y < self.height and 0 <= x < self.width):
            raise ParameterError(f"pixel (y={y!r}, x={x!r}) is outside the {self.height}x{self.width} raster")

        def span(p: int, n: int) -> range:
            lo = max(0, -((self.size - 1 - p) // self.stride))  # ceil((p - size + 1) / stride)
            return range(lo, min(n - 1, p // self.stride) + 1)

        return [(r, c) for r in span(y, self.n_rows) for c in span(x, self.n_cols)]

    def patch_at_xy(self, x: float, y: float) -> tuple[int, int] | None:
        """The patch whose origin is nearest below-left of map coordinate ``(x, y)``, or ``None`` outside."""
        col_f, row_f = ~self.transform @ (x, y)
        py, px = int(np.floor(row_f)), int(np.floor(col_f))
        if not (0 <= py < self.height and 0 <= px < self.width):
            return None
        found = self.patches_containing(py, px)
        return found[-1] if found else None

    def bounds(self, row: int, col: int) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` of a patch in the CRS."""
        y0, x0 = self.origin(row, col)
        xa, ya = self.transform @ (x0, y0)
        xb, yb = self.transform @ (x0 + self.size, y0 + self.size)
        return min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)

    def polygon(self, row: int, col: int) -> shapely.Polygon:
        """The patch footprint as a polygon in the CRS."""
        return shapely.box(*self.bounds(row, col))

    def polygons(self, rows: NDArray[np.integer[Any]], cols: NDArray[np.integer[Any]]) -> NDArray[np.object_]:
        """Vectorised :meth:`polygon` for arrays of rows and cols."""
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= self.n_rows or cols.max() >= self.n_cols):
            raise ParameterError(f"some patches are outside the {self.n_rows}x{self.n_cols} grid")
        y0 = rows * self.stride
        x0 = cols * self.stride
        t = self.transform
        xa, ya = t.c + x0 * t.a, t.f + y0 * t.e
        xb, yb = t.c + (x0 + self.size) * t.a, t.f + (y0 + self.size) * t.e
        out: NDArray[np.object_] = shapely.box(
            np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb)
        )
        return out

    def patch_transform(self) -> Affine:
        """Affine transform of the patch raster (one cell per patch, cell = stride pixels)."""
        return (
            self.transform
            * Affine.scale(self.stride)
            * Affine.translation(
                (self.size - self.stride) / (2 * self.stride), (self.size - self.stride) / (2 * self.stride)
            )
        )

    # ------------------------------------------------------------- aggregation
    def _windows(self, pixels: NDArray[Any]) -> NDArray[Any]:
        if pixels.shape[-2:] != (self.height, self.width):
            raise GridMismatchError(
                f"pixel map has shape {pixels.shape[-2:]!r}, the grid is {(self.height, self.width)!r}"
            )
        view = sliding_window_view(pixels, (self.size, self.size), axis=(-2, -1))
        return view[..., :: self.stride, :: self.stride, :, :][..., : self.n_rows, : self.n_cols, :, :]

    def aggregate(self, pixels: NDArray[Any], how: Aggregation = "mean") -> NDArray[Any]:
        """Reduce a pixel map ``(..., height, width)`` to patches ``(..., n_rows, n_cols)``.

        Args:
            pixels: The pixel map; leading dims (e.g. time) are kept.
            how: ``"fraction"`` of true (nonzero) pixels; ``"mean"`` of finite values (NaN when none);
                ``"majority"``: the most frequent non-negative integer (smallest on ties, ``-1`` when none).

        Returns:
            The patch map.
        """
        arr = np.asarray(pixels)
        win = self._windows(arr)
        if how == "fraction":
            return np.asarray((win != 0).mean(axis=(-2, -1)), dtype=np.float64)
        if how == "mean":
            vals = win.astype(np.float64)
            finite = np.isfinite(vals)
            total = np.where(finite, vals, 0.0).sum(axis=(-2, -1))
            count = finite.sum(axis=(-2, -1))
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(count > 0, total / np.maximum(count, 1), np.nan)
        if how == "majority":
            if not np.issubdtype(arr.dtype, np.integer):
                raise ParameterError(f"how='majority' needs an integer map, got dtype {arr.dtype}")
            classes = np.unique(arr[arr >= 0])
            best = np.full(win.shape[:-2], -1, dtype=np.int64)
            best_count = np.zeros(win.shape[:-2], dtype=np.int64)
            for k in classes:  # few classes; vectorised over all patches
                count = (win == k).sum(axis=(-2, -1))
                better = count > best_count
                best = np.where(better, int(k), best)
                best_count = np.where(better, count, best_count)
            return best
        raise ParameterError(f"how={how!r} is not one of 'fraction', 'mean', 'majority'")

    def paint(self, values: NDArray[Any], fill: float = np.nan, rows: slice | None = None) -> NDArray[np.float64]:
        """Paint patch values ``(..., n_rows, n_cols)`` back onto pixels ``(..., height, width)``.

        Overlapping patches (``stride < size``) are averaged; pixels in no patch get ``fill``.

        Args:
            values: Patch values.
            fill: Value of pixels in no patch.
            rows: Paint only these pixel rows (``(..., rows, width)``, the same values as those rows of the whole
                painting): a large raster can be painted a strip at a time.
        """
        vals = np.asarray(values, dtype=np.float64)
        if vals.shape[-2:] != self.shape:
            raise GridMismatchError(f"patch map has shape {vals.shape[-2:]!r}, the grid is {self.shape!r}")
        y0, y1, _ = (rows or slice(0, self.height)).indices(self.height)
        y1 = max(y0, y1)
        lead = vals.shape[:-2]
        total = np.zeros((*lead, y1 - y0, self.width))
        count = np.zeros((y1 - y0, self.width))
        if self.stride == self.size:
            r0, r1 = min(self.n_rows, y0 // self.size), min(self.n_rows, -(-y1 // self.size))
            block = np.repeat(np.repeat(vals[..., r0:r1, :], self.size, axis=-2), self.size, axis=-1)
            block = block[..., y0 - r0 * self.size : y1 - r0 * self.size, :]
            h, w = block.shape[-2:]
            total[..., :h, :w] = block
            count[:h, :w] = 1
        else:
            for r in range(self.n_rows):
                ys, _ = self.window(r, 0)
                lo, hi = max(ys.start, y0), min(ys.stop, y1)
                if lo >= hi:
                    continue
                for c in range(self.n_cols):
                    _, xs = self.window(r, c)
                    total[..., lo - y0 : hi - y0, xs] += vals[..., r, c, None, None]
                    count[lo - y0 : hi - y0, xs] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), fill)
