"""Array-level image helpers for the report: RGB band choice, downsampling, stretch, overlays and data URIs.

Everything here works on numpy arrays and returns ``uint8`` RGB images or ``data:image/png;base64,...`` strings.
PNGs are palette-quantised (256 colours, no dithering) so a report with dozens of thumbnails stays small, and
encoding is deterministic: the same array always gives the same bytes.
"""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from changescope.io.handles import bounded_block_cache

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "block_max",
    "block_mean",
    "date_rgb",
    "figure_uri",
    "outline",
    "overlay",
    "png_bytes",
    "png_uri",
    "read_rgb",
    "rgb_indices",
    "stretch_limits",
    "to_uint8",
]

_NAMES = (("red", "r", "b04", "b4"), ("green", "g", "b03", "b3"), ("blue", "b", "b02", "b2"))
_WAVELENGTHS_UM = (0.665, 0.56, 0.49)
MAGENTA = (255, 0, 255)


def rgb_indices(ds: xr.Dataset) -> list[int]:
    """Indices of the red, green and blue bands of a series.

    Bands are matched by name first (``red``/``B04`` ...), then by the nearest ``wavelength`` coordinate (micrometres,
    or nanometres when above 100), and otherwise the first three bands (the first band repeated for fewer).
    """
    names = [str(b).lower() for b in ds["band"].values]
    by_name = [next((names.index(a) for a in aliases if a in names), None) for aliases in _NAMES]
    if all(i is not None for i in by_name):
        return [int(i) for i in by_name if i is not None]
    if "wavelength" in ds.coords:
        wl = np.asarray(ds["wavelength"].values, dtype=np.float64)
        wl = np.where(wl > 100, wl / 1000.0, wl)
        if np.isfinite(wl).sum() >= 3:
            return [int(np.nanargmin(np.abs(wl - target))) for target in _WAVELENGTHS_UM]
    n = len(names)
    return [0, min(1, n - 1), min(2, n - 1)]


def block_mean(a: NDArray[Any], factor: int) -> NDArray[np.float32]:
    """Mean over ``factor x factor`` blocks of the last two axes, ignoring NaN (a block of NaN stays NaN)."""
    arr = np.asarray(a, dtype=np.float32)
    if factor <= 1:
        return arr
    h, w = (arr.shape[-2] // factor) * factor, (arr.shape[-1] // factor) * factor
    lead = arr.shape[:-2]
    blocks = arr[..., :h, :w].reshape(*lead, h // factor, factor, w // factor, factor)
    finite = np.isfinite(blocks)
    total = np.where(finite, blocks, 0).sum(axis=(-3, -1))
    count = finite.sum(axis=(-3, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def block_max(a: NDArray[Any], factor: int) -> NDArray[np.float32]:
    """Maximum over ``factor x factor`` blocks of the last two axes, ignoring NaN (a block of NaN stays NaN)."""
    arr = np.asarray(a, dtype=np.float32)
    if factor <= 1:
        return arr
    h, w = (arr.shape[-2] // factor) * factor, (arr.shape[-1] // factor) * factor
    blocks = arr[..., :h, :w].reshape(*arr.shape[:-2], h // factor, factor, w // factor, factor)
    out: NDArray[np.float32] = np.fmax.reduce(np.fmax.reduce(blocks, axis=-1), axis=-2)
    return out


def painted_mean(
    grid: Any,
    values: NDArray[Any],
    factor: int,
    reduce: Callable[[NDArray[Any], int], NDArray[np.float32]] = block_mean,
) -> NDArray[np.float32]:
    """``reduce(grid.paint(values), factor)`` of a ``(n_rows, n_cols)`` patch map, painted a strip at a time.

    The full-resolution painting is float64: 0.96 GB per date on a whole Sentinel-2 tile, several times over in
    temporaries. Strips of whole ``factor``-row blocks, each within :data:`READ_BYTES`, give the same quicklook.
    ``reduce`` is :func:`block_mean` (default) or :func:`block_max`.
    """
    if factor <= 1:
        return reduce(grid.paint(values), factor)
    height = (int(grid.height) // factor) * factor
    blocks = max(1, READ_BYTES // (8 * 4 * factor * max(1, int(grid.width))))  # block rows per strip
    strips = [
        reduce(grid.paint(values, rows=slice(y, min(height, y + blocks * factor))), factor)
        for y in range(0, height, blocks * factor)
    ]
    if not strips:
        return reduce(grid.paint(values), factor)
    return np.concatenate(strips, axis=-2)


READ_BYTES = 64 * 2**20
"""Largest strip of full-resolution float32 RGB + mask converted at a time by :func:`read_rgb` (a whole Sentinel-2
tile date is 1.4 GB of RGB alone)."""


def _read_window(date: xr.Dataset, window: tuple[slice, slice]) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """The stored ``image (C, h, w)`` and ``valid (h, w)`` of a window of one date, read in one pass."""
    from dask.base import compute

    sub = date.isel(y=window[0], x=window[1])
    with bounded_block_cache():  # GDAL's default cache (5 % of RAM) took a whole tile's report past 2 GiB
        image, valid = compute(sub["image"].data, sub["valid"].data)  # one graph: chunks both need are read once
    return np.asarray(image), np.asarray(valid, dtype=bool)


def _rgb_blocks(
    image: NDArray[Any], valid: NDArray[np.bool_], scale: NDArray[np.float32], offset: NDArray[np.float32], factor: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Block means of the RGB reflectance and invalid fraction of read rows, converted within :data:`READ_BYTES`.

    Rows past the last whole ``factor``-row block are dropped, as :func:`block_mean` drops them.
    """
    per_row = 4 * (image.shape[0] + 2) * max(1, image.shape[-1])  # float32 RGB, the mask, block_mean's temporaries
    rows = factor * max(1, READ_BYTES // (per_row * factor))
    parts = []
    for r in range(0, max(1, image.shape[-2]), rows):
        rgb = np.asarray(image[..., r : r + rows, :], dtype=np.float32) * scale[:, None, None] + offset[:, None, None]
        invalid = ~valid[r : r + rows]
        parts.append((block_mean(rgb, factor), block_mean(invalid.astype(np.float32), factor)))
    return np.concatenate([p[0] for p in parts], axis=-2), np.concatenate([p[1] for p in parts], axis=-2)


def _read_rgb_window(
    date: xr.Dataset, scale: NDArray[np.float32], offset: NDArray[np.float32], factor: int, window: tuple[slice, slice]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Downsampled RGB and invalid fraction of a window of one date (``date``: its RGB ``image`` and ``valid``)."""
    image, valid = _read_window(date, window)
    return _rgb_blocks(image, valid, scale, offset, factor)


def date_rgb(ds: xr.Dataset, t: int, bands: list[int]) -> xr.Dataset:
    """Date ``t``'s RGB ``image`` and ``valid``, a lazy series' graph culled to that date once.

    Reads of its windows then cull one date's graph, not the whole series' (whose size grows with the dates).
    """
    from dask.base import is_dask_collection
    from dask.base import optimize as dask_optimize

    date = ds[["image", "valid"]].isel(time=t, band=bands)
    if any(is_dask_collection(v.data) for v in date.data_vars.values()):
        (date,) = dask_optimize(date)
    return date


def read_bounds(date: xr.Dataset, r0: int, r1: int, step: int) -> list[int]:
    """Row bounds of the reads of rows ``r0:r1`` of one date: ``step`` rows at a time, or whole chunk rows.

    A lazy series is read in whole rows of its chunks (as many as fit in ``step`` rows, at least one): a strip that
    cut a chunk row would make the next strip decode that row of chunks again (strips of 301 rows decoded a whole
    tile's 1024 px chunk rows 3-4 times each).
    """
    chunks = getattr(date["image"].data, "chunks", None)
    if not chunks:
        return [*range(r0, r1, max(1, step)), r1]
    edges = np.cumsum((0, *chunks[-2]))
    limit = max(step, int(max(chunks[-2])))
    bounds, last = [r0], r0
    for cut in [int(e) for e in edges if r0 < e < r1] + [r1]:
        if cut - bounds[-1] > limit and last > bounds[-1]:
            bounds.append(last)
        last = cut
    return [*bounds, r1]


def read_rgb(
    ds: xr.Dataset, t: int, bands: list[int], factor: int = 1, window: tuple[slice, slice] | None = None
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Read one date's RGB reflectance (``(3, h, w)``, masked pixels kept) and its invalid fraction ``(h, w)``.

    A large window is read in strips (:func:`read_bounds`: whole chunk rows of a lazy series), the rows of a
    ``factor``-row block cut by a strip's end carried over to the next, and converted within :data:`READ_BYTES`, so
    a whole tile is downsampled in bounded memory, each chunk decoded once (the result is that of one read).

    Args:
        ds: The series.
        t: Date index.
        bands: Band indices (see :func:`rgb_indices`).
        factor: Block-mean downsampling factor.
        window: Optional ``(rows, cols)`` pixel window (slices with integer bounds) instead of the whole image.
    """
    h, w = int(ds.sizes["y"]), int(ds.sizes["x"])
    rows, cols = window if window is not None else (slice(0, h), slice(0, w))
    r0, r1, _ = rows.indices(h)
    c0, c1, _ = cols.indices(w)
    f = max(1, int(factor))
    scale = np.asarray(ds["scale"].values if "scale" in ds else np.ones(ds.sizes["band"]), dtype=np.float32)[bands]
    offset = np.asarray(ds["offset"].values if "offset" in ds else np.zeros(ds.sizes["band"]), dtype=np.float32)[bands]
    per_row = 4 * (len(bands) + 2) * max(1, c1 - c0)  # float32 RGB, the mask and block_mean's temporaries
    step = f * max(1, READ_BYTES // (per_row * f))
    if r1 - r0 <= step:
        date = ds[["image", "valid"]].isel(time=t, band=bands)
        return _read_rgb_window(date, scale, offset, f, (slice(r0, r1), slice(c0, c1)))
    date = date_rgb(ds, t, bands)
    bounds = read_bounds(date, r0, r1, step)
    parts = []
    carry: tuple[NDArray[Any], NDArray[np.bool_]] | None = None
    for a, b in itertools.pairwise(bounds):
        image, valid = _read_window(date, (slice(a, b), slice(c0, c1)))
        if carry is not None:
            image, valid = np.concatenate([carry[0], image], axis=-2), np.concatenate([carry[1], valid], axis=-2)
        whole = (image.shape[-2] // f) * f
        if whole:
            parts.append(_rgb_blocks(image[..., :whole, :], valid[:whole], scale, offset, f))
        carry = (image[..., whole:, :], valid[whole:]) if whole < image.shape[-2] else None
    if not parts:  # fewer rows than one block
        return _read_rgb_window(date, scale, offset, f, (slice(r0, r1), slice(c0, c1)))
    return np.concatenate([p[0] for p in parts], axis=-2), np.concatenate([p[1] for p in parts], axis=-2)


def stretch_limits(samples: NDArray[Any], low: float = 2.0, high: float = 98.0) -> NDArray[np.float32]:
    """Per-band ``(2, 3)`` percentile limits of ``(..., 3, h, w)`` reflectances (finite values only)."""
    arr = np.moveaxis(np.asarray(samples, dtype=np.float32), -3, 0).reshape(3, -1)
    out = np.zeros((2, 3), dtype=np.float32)
    for b in range(3):
        v = arr[b][np.isfinite(arr[b])]
        lo, hi = np.percentile(v, [low, high]) if v.size else (0.0, 1.0)
        out[:, b] = (lo, hi if hi > lo else lo + 1e-6)
    return out


def to_uint8(rgb: NDArray[Any], limits: NDArray[Any]) -> NDArray[np.uint8]:
    """Stretch ``(3, h, w)`` reflectances to an ``(h, w, 3)`` ``uint8`` image (NaN shows black)."""
    lo, hi = limits[0][:, None, None], limits[1][:, None, None]
    scaled = np.clip((np.asarray(rgb, dtype=np.float32) - lo) / (hi - lo), 0, 1)
    out = (np.nan_to_num(scaled, nan=0.0) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def overlay(
    base: NDArray[np.uint8], color: NDArray[Any] | tuple[int, int, int], alpha: NDArray[Any]
) -> NDArray[np.uint8]:
    """Blend ``color`` (``(3,)`` or ``(h, w, 3)``, 0-255) over ``base`` with per-pixel ``alpha`` in [0, 1]."""
    a = np.clip(np.nan_to_num(np.asarray(alpha, dtype=np.float32)), 0, 1)[..., None]
    c = np.broadcast_to(np.asarray(color, dtype=np.float32), base.shape)
    return (base.astype(np.float32) * (1 - a) + c * a + 0.5).astype(np.uint8)


def outline(img: NDArray[np.uint8], y0: int, x0: int, y1: int, x1: int, color: tuple[int, int, int]) -> None:
    """Draw a one-pixel rectangle ``[y0, y1) x [x0, x1)`` into ``img`` in place (clipped to the image)."""
    h, w = img.shape[:2]
    y0, x0, y1, x1 = max(0, y0), max(0, x0), min(h, y1) - 1, min(w, x1) - 1
    if y1 < y0 or x1 < x0:
        return
    img[y0, x0 : x1 + 1] = color
    img[y1, x0 : x1 + 1] = color
    img[y0 : y1 + 1, x0] = color
    img[y0 : y1 + 1, x1] = color


def png_bytes(img: NDArray[np.uint8], compress_level: int = 9) -> bytes:
    """Encode an ``(h, w, 3)`` RGB image as a palette PNG, or an ``(h, w, 4)`` RGBA one as is (deterministic bytes)."""
    from PIL import Image

    arr = np.ascontiguousarray(img)
    buf = io.BytesIO()
    if arr.ndim == 3 and arr.shape[2] == 4:
        Image.fromarray(arr, mode="RGBA").save(buf, format="PNG", optimize=False, compress_level=compress_level)
    else:
        pil = Image.fromarray(arr, mode="RGB")
        pal = pil.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        pal.save(buf, format="PNG", optimize=False, compress_level=compress_level)
    return buf.getvalue()


def png_uri(img: NDArray[np.uint8]) -> str:
    """Encode an ``(h, w, 3)`` ``uint8`` image as a palette PNG ``data:`` URI (deterministic bytes)."""
    return bytes_uri(png_bytes(img))


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a matplotlib figure (object API, Agg canvas) to PNG bytes without varying metadata."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def figure_uri(fig: Figure, dpi: int = 100) -> str:
    """Render a matplotlib figure to a PNG ``data:`` URI."""
    return bytes_uri(figure_png(fig, dpi))


def bytes_uri(png: bytes) -> str:
    """Wrap PNG bytes in a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
