"""Helpers shared by the readers of one-file-per-band layouts (``perband``, ``oscd``).

- :class:`MaskRule` / :data:`MASK_RULES`: which values of a cloud/quality mask file mark invalid pixels.
- :class:`SensorSpec` / :data:`KNOWN_SENSORS`: band tokens of known sensors mapped to band names and scales.
- :class:`Grid`: a pixel grid (CRS, transform, shape) read from file metadata.
- :func:`read_band_lazy`: a band as a lazy dask array, optionally resampled onto another grid, and
  :func:`footprint_invalid`: the pixels of a target grid that a source grid does not cover.

Reads and resampling (:mod:`changescope.io.resample` onto grids that refine the file's, else GDAL warped VRTs)
happen inside dask tasks, one per chunk, so opening a series reads metadata only. Each task opens its own file
handle, which keeps them safe under dask's threaded scheduler.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as transform_coords
from rasterio.windows import Window

from changescope.errors import BandMismatchError, ParameterError
from changescope.io.handles import cached_raster
from changescope.io.raster import DEFAULT_CHUNK, RasterMeta, damaged, lazy_blocks
from changescope.io.resample import read_refined, refines
from changescope.series import BandInfo
from changescope.storepath import AnyPath

__all__ = [
    "KNOWN_SENSORS",
    "MASK_RULES",
    "SENTINEL2_TOKENS",
    "Grid",
    "MaskRule",
    "SensorSpec",
    "band_sort_key",
    "any_of",
    "footprint_invalid",
    "grid_array",
    "mask_rule",
    "nodata_invalid",
    "read_band_lazy",
    "select_bands",
]


@dataclass(frozen=True)
class MaskRule:
    """How to turn a mask file into invalid pixels.

    Attributes:
        token: Band token of the mask files (``"CMASK"``, ``"SCL"``, ...).
        invalid_values: Stored values that mark a pixel invalid.
        invalid_bits: Bit positions that mark a pixel invalid when set (bit-packed QA bands).
        nonzero_invalid: Every nonzero value marks a pixel invalid.
        description: The encoding, for ``attrs`` and docs.
    """

    token: str
    invalid_values: tuple[int, ...] = ()
    invalid_bits: tuple[int, ...] = ()
    nonzero_invalid: bool = False
    description: str = ""

    def invalid(self, data: Any) -> Any:
        """Return a lazy (dask) bool array of the shape of ``data``, ``True`` where the pixel is invalid."""
        parts = [data != 0] if self.nonzero_invalid else []
        if self.invalid_values:
            parts.append(da.isin(data, list(self.invalid_values)))
        if self.invalid_bits:
            bits = sum(1 << b for b in self.invalid_bits)
            parts.append((data.astype(np.int64) & bits) != 0)
        return any_of(parts, data.shape)


_FMASK = (2, 3, 4, 255)
MASK_RULES: dict[str, MaskRule] = {
    "CMASK": MaskRule(
        "CMASK",
        invalid_values=_FMASK,
        description=(
            "CBERS / Brazil Data Cube cloud mask in Fmask classes: 0 clear, 1 clear water, 2 cloud shadow, "
            "3 snow, 4 cloud, 255 no data; 2, 3, 4 and 255 are invalid"
        ),
    ),
    "FMASK": MaskRule(
        "FMASK",
        invalid_values=_FMASK,
        description="Fmask classes: 0 clear, 1 water, 2 cloud shadow, 3 snow, 4 cloud, 255 no data; 2-4, 255 invalid",
    ),
    "SCL": MaskRule(
        "SCL",
        invalid_values=(0, 1, 3, 8, 9, 10),
        description=(
            "Sentinel-2 L2A scene classification; invalid: 0 no data, 1 saturated/defective, 3 cloud shadow, "
            "8-9 cloud, 10 thin cirrus"
        ),
    ),
    "QA": MaskRule(
        "QA",
        invalid_bits=(0, 1, 2, 3, 4),
        description="Landsat Collection 2 QA_PIXEL bits; invalid: fill, dilated cloud, cirrus, cloud, cloud shadow",
    ),
    "MASK": MaskRule("MASK", nonzero_invalid=True, description="generic mask: nonzero = invalid"),
    "CLM": MaskRule("CLM", nonzero_invalid=True, description="cloud mask: nonzero = cloud"),
}
"""Mask band tokens (case-insensitive) and what their values mean. Files with these tokens are masks, not bands."""


def mask_rule(token: str, invalid_values: Sequence[int] | None = None) -> MaskRule | None:
    """The rule for a mask token (``None`` when the token is a band), with optional overriding invalid values."""
    rule = MASK_RULES.get(token.upper())
    if rule is None or invalid_values is None:
        return rule
    values = tuple(int(v) for v in invalid_values)
    return MaskRule(rule.token, invalid_values=values, description=f"invalid values {list(values)!r} (mask_values=)")


SENTINEL2_TOKENS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
"""Sentinel-2 MSI band tokens; they keep their names (wavelengths from ``KNOWN_WAVELENGTHS``)."""


@dataclass(frozen=True)
class SensorSpec:
    """Band tokens of one sensor.

    Attributes:
        name: Sensor name for ``attrs["sensor"]``.
        prefix: Pattern searched (case-insensitive) in the file-name prefix to recognise the sensor; empty = match
            by tokens only.
        bands: Band token to band name (names get wavelengths from ``KNOWN_WAVELENGTHS``).
        scale: Reflectance scale of the stored values.
        offset: Reflectance offset.
    """

    name: str
    prefix: str
    bands: dict[str, str]
    scale: float = 1.0
    offset: float = 0.0

    def band_info(self, token: str) -> BandInfo | None:
        """The band described by ``token`` (case-insensitive), or ``None`` when the sensor has no such band."""
        upper = {k.upper(): v for k, v in self.bands.items()}
        name = upper.get(token.upper())
        return None if name is None else BandInfo.from_name(name, scale=self.scale, offset=self.offset)


# Brazil Data Cube spells the tokens BAND13 / BAND5 as well.
_AWFI = {"B13": "blue", "B14": "green", "B15": "red", "B16": "nir", "BAND13": "blue", "BAND14": "green"}
_AWFI |= {"BAND15": "red", "BAND16": "nir"}
_MUX = {"B05": "blue", "B06": "green", "B07": "red", "B08": "nir", "BAND5": "blue", "BAND6": "green"}
_MUX |= {"BAND7": "red", "BAND8": "nir"}
KNOWN_SENSORS: tuple[SensorSpec, ...] = (
    # Surface reflectance scaled by 1e-4 (Brazil Data Cube / sits: 0..10000, nodata -9999).
    SensorSpec("CBERS-4 AWFI", r"AWFI", _AWFI, 1e-4),
    # CBERS-4A WFI has the same four bands (Brazil Data Cube merges both in its CBERS-WFI collections).
    SensorSpec("CBERS-4A WFI", r"WFI", _AWFI, 1e-4),
    SensorSpec("CBERS-4 MUX", r"MUX", _MUX, 1e-4),
    # L1C / L2A digital numbers are reflectance * 1e4 (before processing baseline 04.00, which adds an offset).
    SensorSpec("Sentinel-2", r"S2[AB]?|SENTINEL.?2", {t: t for t in SENTINEL2_TOKENS}, 1e-4),
)
"""Sensors whose band tokens changescope maps to names and scales, tried in order."""


def band_sort_key(info: BandInfo, token: str) -> tuple[bool, float, tuple[Any, ...]]:
    """Sort key: bands with a known wavelength first (ascending), then the others in natural token order."""
    natural = tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", token) if p)
    wavelength = info.wavelength if info.wavelength is not None else 0.0
    return (info.wavelength is None, wavelength, natural)


def select_bands(infos: dict[str, BandInfo], bands: Sequence[str] | None, *, where: str) -> list[str]:
    """Band tokens to read, in output order.

    Args:
        infos: Band token to band metadata, for every band available.
        bands: Wanted bands by name or token (case-insensitive), in the order wanted; ``None`` = all, sorted with
            :func:`band_sort_key`.
        where: The folder, named in errors.

    Raises:
        ParameterError: ``bands`` is a single string.
        BandMismatchError: A wanted band is not available.
    """
    if bands is None:
        return sorted(infos, key=lambda t: band_sort_key(infos[t], t))
    if isinstance(bands, str):
        raise ParameterError(f"bands={bands!r} must be a list of band names, e.g. bands=[{bands!r}]")
    lookup = {t.upper(): t for t in infos} | {info.name.upper(): t for t, info in infos.items()}
    unknown = [b for b in bands if str(b).upper() not in lookup]
    if unknown:
        choices = [f"{info.name} ({t})" if info.name != t else t for t, info in infos.items()]
        raise BandMismatchError(f"bands={list(bands)!r}: no band {unknown!r} in {where!r}; choose from {choices!r}")
    chosen = [lookup[str(b).upper()] for b in bands]
    if len(set(chosen)) != len(chosen):
        raise ParameterError(f"bands={list(bands)!r} names a band twice; list each band once")
    return chosen


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid.

    Attributes:
        crs: CRS (rasterio or pyproj object).
        transform: Affine transform of the pixel corners.
        height: Rows.
        width: Columns.
    """

    crs: Any
    transform: Affine
    height: int
    width: int

    @classmethod
    def from_meta(cls, meta: RasterMeta) -> Grid:
        """The grid of a raster file."""
        return cls(meta.crs, meta.transform, meta.height, meta.width)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in CRS units (smaller = finer)."""
        return abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)

    def same_as(self, other: Grid) -> bool:
        """Whether both grids have the same CRS, shape and transform (to 1e-9 of a pixel)."""
        if self.crs != other.crs or self.shape != other.shape:
            return False
        tol = 1e-9 * max(1.0, abs(self.transform.a))
        return bool(np.allclose(tuple(self.transform)[:6], tuple(other.transform)[:6], rtol=0, atol=tol))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre ``(y, x)`` coordinates."""
        t = self.transform
        xs = t.c + (np.arange(self.width) + 0.5) * t.a
        ys = t.f + (np.arange(self.height) + 0.5) * t.e
        return ys, xs


def grid_array(data: Any, grid: Grid, dims: tuple[str, ...] = ("band", "y", "x")) -> xr.DataArray:
    """Wrap a ``(..., y, x)`` array on ``grid`` as a DataArray carrying rioxarray CRS and transform."""
    ys, xs = grid.coords()
    arr = xr.DataArray(data, dims=dims, coords={"y": ys, "x": xs})
    arr = arr.rio.write_crs(grid.crs)
    out: xr.DataArray = arr.rio.write_transform(grid.transform)
    return out


def _read_block(
    window: Window,
    *,
    path: AnyPath,
    grid: Grid | None,
    resampling: Resampling,
    nodata: float | None,
    refined: bool = False,
) -> np.ndarray:
    with cached_raster(path) as src:
        try:
            if grid is None:
                out: np.ndarray = src.read(1, window=window)
                return out
            if refined:
                return read_refined(src, window, dst=grid, resampling=resampling, nodata=nodata)
            with WarpedVRT(
                src,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=resampling,
                src_nodata=nodata,
                nodata=nodata,
            ) as vrt:
                warped: np.ndarray = vrt.read(1, window=window)
                return warped
        except RasterioError as err:
            raise damaged(path, err) from err


def read_band_lazy(
    meta: RasterMeta,
    grid: Grid | None = None,
    *,
    resampling: Resampling = Resampling.nearest,
    nodata: float | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> Any:
    """The first band of a raster as a lazy dask ``(y, x)`` array, optionally resampled onto ``grid``.

    The graph is built from the metadata alone (no second open per file, which matters for folders of thousands of
    single-band files); each chunk is one windowed read. When ``grid`` differs from the file's grid, a grid that
    only refines it (same CRS, north-up, finer or equal pixels: Sentinel-2's 20 and 60 m bands on its 10 m grid) is
    resampled from the window's source pixels (:mod:`changescope.io.resample`, nearest or bilinear, as GDAL's
    warper does it, several times faster); any other grid or kernel goes through a GDAL warped VRT. Read errors
    surface as :class:`CorruptFileError` (or :class:`NoImagesFoundError` for a file removed since opening) when
    computing.

    Args:
        meta: Metadata of the file.
        grid: Target grid (any CRS); the file's own grid when omitted.
        resampling: Kernel when resampling: bilinear for reflectance, nearest for masks and classes.
        nodata: Nodata value: ignored by the kernel and written outside the file's footprint (0 when ``None``).
        chunk: Chunk side in pixels.
    """
    own = Grid.from_meta(meta)
    target = None if grid is None or own.same_as(grid) else grid
    shape = own.shape if target is None else target.shape
    refined = target is not None and resampling in (Resampling.nearest, Resampling.bilinear) and refines(own, target)
    block = partial(_read_block, path=meta.path, grid=target, resampling=resampling, nodata=nodata, refined=refined)
    return lazy_blocks(shape, chunk, meta.dtype, block)


def _outside_block(window: Window, *, src_grid: Grid, dst_grid: Grid) -> np.ndarray:
    ys, xs = dst_grid.coords()
    ys = ys[window.row_off : window.row_off + window.height]
    xs = xs[window.col_off : window.col_off + window.width]
    s = src_grid.transform
    if (
        src_grid.crs == dst_grid.crs
        and s.b == 0
        and s.d == 0
        and dst_grid.transform.b == 0
        and dst_grid.transform.d == 0
    ):
        # north-up grids of one CRS: columns depend on x only and rows on y only
        cols, rows = (xs - s.c) / s.a, (ys - s.f) / s.e
        inside_1d: np.ndarray = ((rows >= 0) & (rows < src_grid.height))[:, None] & (
            (cols >= 0) & (cols < src_grid.width)
        )[None, :]
        return ~inside_1d
    ys, xs = dst_grid.coords()
    x, y = np.meshgrid(
        xs[window.col_off : window.col_off + window.width], ys[window.row_off : window.row_off + window.height]
    )
    if src_grid.crs != dst_grid.crs:
        tx, ty = transform_coords(dst_grid.crs, src_grid.crs, x.ravel(), y.ravel())
        x, y = np.asarray(tx).reshape(x.shape), np.asarray(ty).reshape(y.shape)
    cols, rows = (np.asarray(v, dtype=float) for v in ~src_grid.transform * (x, y))
    inside = (cols >= 0) & (cols < src_grid.width) & (rows >= 0) & (rows < src_grid.height)
    outside: np.ndarray = ~inside
    return outside


def footprint_invalid(src_grid: Grid, dst_grid: Grid, chunk: int = DEFAULT_CHUNK) -> Any | None:
    """Lazy bool ``(y, x)`` array on ``dst_grid``: ``True`` where a pixel centre falls outside ``src_grid``.

    Returns ``None`` when the grids are the same (nothing is outside).
    """
    if src_grid.same_as(dst_grid):
        return None
    return lazy_blocks(dst_grid.shape, chunk, bool, partial(_outside_block, src_grid=src_grid, dst_grid=dst_grid))


def nodata_invalid(data: Any, nodata: float | None) -> Any | None:
    """Lazy bool array, ``True`` where ``data`` equals ``nodata`` or is not finite; ``None`` when neither can be."""
    parts = []
    if nodata is not None and np.isfinite(nodata):
        parts.append(data == nodata)
    if np.issubdtype(data.dtype, np.floating):
        parts.append(~da.isfinite(data))
    return any_of(parts, data.shape) if parts else None


def any_of(parts: Sequence[Any | None], shape: tuple[int, ...]) -> Any:
    """Element-wise OR of the bool arrays in ``parts`` (``None`` entries skipped); all ``False`` when empty."""
    arrays = [p for p in parts if p is not None]
    if not arrays:
        return da.zeros(shape, dtype=bool, chunks=-1)
    out = arrays[0]
    for arr in arrays[1:]:
        out = out | arr
    return out
