"""Read a real bi-temporal pair and its change mask from files, for :func:`~changescope.synthetic.series_from_pair`.

BEFORE and AFTER are each

- a raster file that rasterio opens (multi-band GeoTIFF, PNG, JPEG): band names from the band descriptions, else
  ``red, green, blue`` for 3- or 4-band PNG/JPEG (a 4th band is alpha: 0 = invalid, then dropped), else
  ``b1..bn``; or
- a folder of one file per band named ``*_B01.tif ... *_B8A.tif`` (Sentinel-2 tokens, any subset, like OSCD's
  ``imgs_1/``): every band is resampled (bilinear) onto the folder's finest band grid, scale 1e-4, value 0 = no data.

Reflectance scale of a raster file: its GDAL scale/offset when it records one, else 1/255 for 8-bit data, 1e-4 for
other integer data (Sentinel-2 / Landsat-style digital numbers) and 1 for floating-point data.

AFTER goes onto BEFORE's grid: the same grid, or the same CRS and pixel size (then AFTER is resampled onto BEFORE's
grid and pixels outside its footprint are invalid, as OSCD pairs need); anything else is refused. Rasters without a
CRS (PNG, JPEG) must have the same shape; they get a placeholder grid (EPSG:3857, 1 unit pixels at the origin) and
``attrs["georeferenced"] = "false"``. Nodata pixels are invalid.

The mask (values 0/1, 0/255 or OSCD's 1/2, see :func:`changescope.io.oscd.decode_change_mask`) must have BEFORE's
shape; it becomes ``change (y, x)``. When omitted and BEFORE is an OSCD ``imgs_1`` folder, the city's mask is
looked up. Dates come from an OSCD ``dates.txt`` beside the folders, else placeholders (2000-01-01, 2001-01-01).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from affine import Affine
from numpy.typing import NDArray
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from changescope.errors import BandMismatchError, CorruptFileError, GridMismatchError, NoImagesFoundError
from changescope.io.bandfiles import Grid, band_sort_key, footprint_invalid
from changescope.io.oscd import band_files, decode_change_mask, find_change_mask, read_dates_txt
from changescope.io.raster import RasterMeta, open_raster, raster_meta
from changescope.io.resample import read_refined, refines
from changescope.series import BandInfo, make_series
from changescope.types import PathLike

__all__ = ["PLACEHOLDER_CRS", "read_pair"]

PLACEHOLDER_CRS = "EPSG:3857"
"""CRS given to pairs without one (PNG, JPEG)."""

_RGB_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class _Side:
    image: NDArray[np.float32]
    invalid: NDArray[np.bool_]
    bands: list[BandInfo]
    grid: Grid


def _open_quietly(path: Path) -> RasterMeta:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return raster_meta(path)


def _read(meta: RasterMeta, grid: Grid, nodata: float | None) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """All bands of ``meta`` on ``grid`` (bilinear when resampled) and the pixels that are ``nodata`` or outside."""
    own = Grid.from_meta(meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(meta.path) as src:
            try:
                if grid.crs is None or own.same_as(grid):
                    data = src.read()
                elif refines(own, grid):  # the series readers' resampling, so both read the same pixels
                    full = Window(0, 0, grid.width, grid.height)
                    bands = range(1, src.count + 1)
                    kw = {"dst": grid, "resampling": Resampling.bilinear, "nodata": nodata}
                    data = np.stack([read_refined(src, full, band=b, **kw) for b in bands])
                else:
                    vrt_args = {"crs": grid.crs, "transform": grid.transform, "width": grid.width}
                    vrt_args |= {"height": grid.height, "src_nodata": nodata, "nodata": nodata}
                    with WarpedVRT(src, **vrt_args, resampling=Resampling.bilinear) as vrt:
                        data = vrt.read()
            except RasterioError as err:
                raise CorruptFileError(f"{str(meta.path)!r} could not be read ({err}); the file is damaged") from err
    invalid = np.zeros(grid.shape, dtype=bool)
    if nodata is not None and np.isfinite(nodata):
        invalid |= (data == nodata).any(axis=0)
    if grid.crs is not None and not own.same_as(grid):
        outside = footprint_invalid(own, grid)
        invalid |= np.asarray(outside.compute() if outside is not None else False, dtype=bool)
    return data.astype(np.float32), invalid


def _raster_bands(meta: RasterMeta) -> tuple[list[BandInfo], bool]:
    """Band metadata of a raster file and whether its last band is an alpha band."""
    names = [d or "" for d in meta.descriptions]
    alpha = False
    if not any(names) and meta.path.suffix.lower() in _RGB_SUFFIXES and meta.count in (3, 4):
        names, alpha = ["red", "green", "blue"], meta.count == 4
    elif not all(names) or len(set(names)) != len(names):
        names = [f"b{i}" for i in range(1, meta.count + 1)]
    recorded = any(s != 1 for s in meta.scales) or any(o != 0 for o in meta.offsets)
    dtype = np.dtype(meta.dtype)
    default = 1 / 255 if dtype.itemsize == 1 else 1e-4 if np.issubdtype(dtype, np.integer) else 1.0
    scales = list(meta.scales) if recorded else [default] * meta.count
    offsets = list(meta.offsets) if recorded else [0.0] * meta.count
    return [BandInfo.from_name(n, float(s), float(o)) for n, s, o in zip(names, scales, offsets, strict=False)], alpha


def _band_files(folder: Path) -> dict[str, RasterMeta]:
    found = {token: _open_quietly(f) for token, f in band_files(folder, require_all=False).items()}
    if not found:
        raise NoImagesFoundError(
            f"{str(folder)!r} holds no band files; a pair folder holds *_B01.tif ... *_B8A.tif (one band each)"
        )
    return found


def _own_grid(path: Path) -> tuple[Grid, list[RasterMeta]]:
    if not path.exists():
        raise NoImagesFoundError(f"{str(path)!r} does not exist; pass a raster file or a folder of band files")
    metas = list(_band_files(path).values()) if path.is_dir() else [_open_quietly(path)]
    return min((Grid.from_meta(m) for m in metas), key=lambda g: g.pixel_area), metas


def _read_side(path: Path, grid: Grid) -> _Side:
    if path.is_dir():
        files = _band_files(path)
        infos = {t: BandInfo.from_name(t, scale=1e-4) for t in files}
        order = sorted(files, key=lambda t: band_sort_key(infos[t], t))
        reads = [_read(files[t], grid, 0) for t in order]
        bands = [infos[t] for t in order]
        image = np.stack([r[0][0] for r in reads])
        invalid = np.any([r[1] for r in reads], axis=0)
        return _Side(image, invalid, bands, grid)
    meta = _open_quietly(path)
    bands, alpha = _raster_bands(meta)
    image, invalid = _read(meta, grid, meta.nodata)
    if alpha:
        invalid |= image[3] == 0
        image = image[:3]
    return _Side(image, invalid | ~np.isfinite(image).all(axis=0), bands, grid)


def _check_grids(before: Path, ref: Grid, after: Path, other: Grid) -> None:
    what = f"{str(after)!r} ({other.shape}, {other.crs}) does not fit {str(before)!r} ({ref.shape}, {ref.crs})"
    if ref.crs is None or other.crs is None:
        if ref.crs is not None or other.crs is not None or ref.shape != other.shape:
            raise GridMismatchError(f"{what}; without a CRS both images need the same shape")
        return
    if ref.crs != other.crs:
        raise GridMismatchError(f"{what}: other CRS; reproject AFTER onto BEFORE's grid first")
    size = (abs(ref.transform.a), abs(ref.transform.e))
    if not np.allclose(size, (abs(other.transform.a), abs(other.transform.e)), rtol=1e-6, atol=0):
        raise GridMismatchError(f"{what}: other pixel size; resample AFTER onto BEFORE's grid first")
    (x0, y0), (x1, y1) = ref.transform * (0, 0), ref.transform * (ref.width, ref.height)
    (u0, v0), (u1, v1) = other.transform * (0, 0), other.transform * (other.width, other.height)
    if min(x1, u1) <= max(x0, u0) or min(max(y0, y1), max(v0, v1)) <= max(min(y0, y1), min(v0, v1)):
        raise GridMismatchError(f"{what}: the images do not overlap; pass the two dates of one place")


def _read_mask(path: Path, shape: tuple[int, int], before: Path) -> NDArray[np.int8]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(path) as src:
            try:
                raw = src.read(1)
            except RasterioError as err:
                raise CorruptFileError(f"{str(path)!r} could not be read ({err}); the file is damaged") from err
    if raw.shape != shape:
        raise GridMismatchError(
            f"mask {str(path)!r} has shape {raw.shape!r} but {str(before)!r} is {shape!r}; use this pair's mask"
        )
    return decode_change_mask(raw, str(path))[0]


def read_pair(before: PathLike, after: PathLike, mask: PathLike | None = None) -> xr.Dataset:
    """Read a before/after pair and its change mask as a two-date series (rules in the module docstring).

    Args:
        before: Raster file or folder of band files of the earlier date.
        after: The same for the later date.
        mask: Change mask file; looked up for OSCD ``imgs_1`` folders when omitted.

    Returns:
        A two-date series with ``change (y, x)`` (1 change, 0 no change, -1 unknown) when a mask was found.

    Raises:
        NoImagesFoundError: A path does not exist or a folder holds no band files.
        GridMismatchError: AFTER or the mask does not fit BEFORE's grid.
        BandMismatchError: The two dates have different bands.
        CorruptFileError: A file is not a readable raster, or the mask holds unexpected values.
    """
    b_path, a_path = Path(before), Path(after)
    ref, _ = _own_grid(b_path)
    other, _ = _own_grid(a_path)
    _check_grids(b_path, ref, a_path, other)
    sides = [_read_side(b_path, ref), _read_side(a_path, ref if ref.crs is not None else other)]
    names = [[b.name for b in s.bands] for s in sides]
    if names[0] != names[1]:
        raise BandMismatchError(f"{str(a_path)!r} has bands {names[1]!r} but {str(b_path)!r} has {names[0]!r}")
    georeferenced = ref.crs is not None
    transform = ref.transform if georeferenced else Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    dates_txt = b_path.parent / "dates.txt"
    times = list(read_dates_txt(dates_txt)) if b_path.is_dir() and dates_txt.is_file() else ["2000-01-01", "2001-01-01"]
    ds = make_series(
        np.stack([s.image for s in sides]),
        times=times,
        bands=sides[0].bands,
        crs=ref.crs if georeferenced else PLACEHOLDER_CRS,
        transform=transform,
        valid=~np.stack([s.invalid for s in sides]),
        sensor="pair",
        attrs={"files": [str(b_path), str(a_path)], "georeferenced": str(georeferenced).lower()},
    )
    mask_path = Path(mask) if mask is not None else None
    if mask_path is None and b_path.is_dir() and b_path.name == "imgs_1":
        mask_path = find_change_mask(b_path.parent)
    if mask_path is not None:
        if not mask_path.exists():
            raise NoImagesFoundError(f"mask {str(mask_path)!r} does not exist; check the path")
        change = _read_mask(mask_path, ref.shape, b_path)
        ds["change"] = xr.DataArray(change, dims=("y", "x"), coords={"y": ds["y"], "x": ds["x"]})
        ds.attrs.update(truth="change_mask", mask_file=str(mask_path))
    return ds
