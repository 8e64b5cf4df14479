"""Images the web app serves: per-date RGB quicklooks, valid masks, score overlays and patch thumbnails.

Everything is drawn from the run's own files and input series, in the run's pixel space (``docs/webapp.md``): a
quicklook covers the whole image, downsampled by an integer factor so that its long side is at most
:data:`QUICKLOOK_PX`; a score overlay is drawn on the same pixels, so the two line up on the map. The stretch
(2-98 % per band over clear pixels of up to six dates spread over the series) is shared by every image of a
run, so dates compare by eye. Encoded images are kept in a bounded LRU cache.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from changescope.errors import NotFoundError
from changescope.report.images import outline, overlay, png_bytes, read_rgb, rgb_indices, stretch_limits, to_uint8

__all__ = ["QUICKLOOK_PX", "THUMB_PX", "PngCache", "RunImagery", "jpeg_bytes", "score_colors"]

QUICKLOOK_PX = 1024
THUMB_PX = 160
STRETCH_PX = 256
STRETCH_DATES = 6
_INVALID_RGBA = (128, 128, 128, 200)
_OUTLINE = (255, 230, 0)


def jpeg_bytes(img: NDArray[np.uint8], quality: int = 88) -> bytes:
    """Encode an ``(h, w, 3)`` RGB image as JPEG (quicklooks: ~10x faster and ~3x smaller than a palette PNG)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class PngCache:
    """A thread-safe LRU of encoded PNGs, bounded by total bytes."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], make: Callable[[], bytes]) -> bytes:
        """The cached bytes for ``key``, made (outside the lock) when missing."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make()
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._size += len(data)
            while self._size > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)
        return data

    def __len__(self) -> int:
        return len(self._items)


def score_colors(values: NDArray[Any], lo: float, hi: float, threshold: float | None = None) -> NDArray[np.uint8]:
    """RGBA ``uint8`` of scores on matplotlib's ``inferno`` over ``[lo, hi]``; NaN and below ``threshold`` clear."""
    from matplotlib import colormaps

    v = np.asarray(values, dtype=np.float64)
    norm = np.clip((v - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    rgba = (colormaps["inferno"](np.nan_to_num(norm)) * 255 + 0.5).astype(np.uint8)
    hidden = ~np.isfinite(v)
    if threshold is not None:
        hidden |= np.nan_to_num(v, nan=-np.inf) < threshold
    rgba[..., 3] = np.where(hidden, 0, 255).astype(np.uint8)
    return rgba


class RunImagery:
    """The images of one run, read lazily from its input series and score maps.

    Args:
        ds: The input series (``None`` when it cannot be re-opened: image requests then give a 404).
        maps: The run's ``maps`` folder (``score_<YYYY-MM-DD>.tif``).
        dates: The run's dates as ISO strings (``YYYY-MM-DD``).
        shape: ``(height, width)`` of the image in pixels.
        stride: Patch step in pixels (one score-map cell per patch).
        cache: Where encoded PNGs are kept.
        key: This run's id, to keep cache keys apart.
    """

    def __init__(
        self,
        ds: xr.Dataset | None,
        maps: Path,
        dates: list[str],
        shape: tuple[int, int],
        stride: int,
        cache: PngCache,
        key: str,
    ) -> None:
        self.ds, self.maps, self.dates, self.shape, self.stride = ds, maps, dates, shape, stride
        self.cache, self.key = cache, key
        self.factor = max(1, math.ceil(max(shape) / QUICKLOOK_PX))
        self._limits: NDArray[np.float32] | None = None
        self._bands: list[int] = rgb_indices(ds) if ds is not None else [0, 1, 2]
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def _series(self) -> xr.Dataset:
        if self.ds is None:
            raise NotFoundError("this run's input series cannot be re-opened, so it has no imagery")
        return self.ds

    def _date(self, t: int) -> int:
        if not 0 <= t < len(self.dates):
            raise NotFoundError(f"date index {t} is outside 0..{len(self.dates) - 1}")
        return t

    @property
    def limits(self) -> NDArray[np.float32]:
        """The run's stretch: 2-98 % of clear pixels of every date, at a coarse resolution."""
        with self._lock:
            if self._limits is None:
                ds = self._series()
                f = max(1, math.ceil(max(self.shape) / STRETCH_PX))
                n = int(ds.sizes["time"])
                picks = sorted({round(float(i)) for i in np.linspace(0, n - 1, min(n, STRETCH_DATES))})
                pairs = [read_rgb(ds, t, self._bands, f) for t in picks]
                rgb = np.stack([np.where((inv < 0.5)[None], rgb, np.nan) for rgb, inv in pairs])
                self._limits = stretch_limits(rgb)
            return self._limits

    # ------------------------------------------------------------------ images
    def quicklook(self, t: int, kind: str = "jpeg") -> bytes:
        """The RGB of date ``t`` over the whole image (masked pixels shown as they are), as JPEG or PNG."""
        t = self._date(t)

        def make() -> bytes:
            rgb, _ = read_rgb(self._series(), t, self._bands, self.factor)
            img = to_uint8(rgb, self.limits)
            return png_bytes(img, compress_level=6) if kind == "png" else jpeg_bytes(img)

        return self.cache.get((self.key, "image", kind, t), make)

    def valid(self, t: int) -> bytes:
        """PNG (RGBA): invalid pixels (clouds, nodata) of date ``t`` in grey, valid ones transparent."""
        t = self._date(t)

        def make() -> bytes:
            _, invalid = read_rgb(self._series(), t, self._bands, self.factor)
            rgba = np.zeros((*invalid.shape, 4), dtype=np.uint8)
            rgba[invalid >= 0.5] = _INVALID_RGBA
            return png_bytes(rgba, compress_level=6)

        return self.cache.get((self.key, "valid", t), make)

    def score_cells(self, t: int) -> NDArray[np.float32]:
        """The score map of date ``t`` (one cell per patch), read from ``maps/score_<date>.tif``."""
        import rasterio

        path = self.maps / f"score_{self.dates[self._date(t)]}.tif"
        if not path.is_file():
            raise NotFoundError(f"the run has no score map for {self.dates[t]}")
        with rasterio.open(path) as src:
            return np.asarray(src.read(1, masked=True).filled(np.nan), dtype=np.float32)

    def score(self, t: int, lo: float, hi: float, threshold: float | None) -> bytes:
        """PNG (RGBA): the score of date ``t`` on the quicklook's pixels, clear below ``threshold``."""
        t = self._date(t)

        def make() -> bytes:
            cells = self.score_cells(t)
            h, w = (math.ceil(s / self.factor) for s in self.shape)
            rows = (np.arange(h) * self.factor) // self.stride
            cols = (np.arange(w) * self.factor) // self.stride
            inside = (rows[:, None] < cells.shape[0]) & (cols[None, :] < cells.shape[1])
            up = cells[np.minimum(rows, cells.shape[0] - 1)][:, np.minimum(cols, cells.shape[1] - 1)]
            up = np.where(inside, up, np.nan)
            return png_bytes(score_colors(up, lo, hi, threshold), compress_level=6)

        rounded = None if threshold is None else round(float(threshold), 3)
        return self.cache.get((self.key, "score", t, round(lo, 6), round(hi, 6), rounded), make)

    def thumb(self, t: int, y0: int, x0: int, size: int) -> bytes:
        """PNG: the patch at ``(y0, x0)`` with half a patch around it at date ``t``, outlined in yellow."""
        t = self._date(t)

        def make() -> bytes:
            h, w = self.shape
            context = max(size // 2, 4)
            ys = slice(max(0, y0 - context), min(h, y0 + size + context))
            xs = slice(max(0, x0 - context), min(w, x0 + size + context))
            f = max(1, math.ceil(max(ys.stop - ys.start, xs.stop - xs.start) / THUMB_PX))
            rgb, invalid = read_rgb(self._series(), t, self._bands, f, (ys, xs))
            img = overlay(to_uint8(rgb, self.limits), (255, 0, 255), invalid * 0.55)
            oy, ox = (y0 - ys.start) // f, (x0 - xs.start) // f
            outline(img, oy, ox, oy + max(1, size // f), ox + max(1, size // f), _OUTLINE)
            return png_bytes(img, compress_level=6)

        return self.cache.get((self.key, "thumb", t, y0, x0, size), make)
