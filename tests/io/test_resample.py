"""Resampling onto a refining grid without GDAL's warper gives the warper's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from changescope.io.bandfiles import Grid, footprint_invalid, read_band_lazy
from changescope.io.raster import raster_meta
from changescope.io.resample import read_refined, refines

CRS = "EPSG:32633"


def _write(path: Path, data: np.ndarray, transform: Affine, nodata: float | None) -> None:
    profile = {
        "driver": "GTiff",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": CRS,
        "transform": transform,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def _source(tmp_path: Path, k: int, dtype: str, holes: bool, seed: int) -> tuple[Path, Grid, float | None]:
    """A seeded ``k``-times coarser raster (with nodata holes if asked) and the 10 m target grid it covers."""
    rng = np.random.default_rng(seed)
    side = 60 // k * 3
    if dtype == "uint16":
        data = rng.integers(1, 10000, size=(side, side)).astype(np.uint16)
    else:
        data = rng.normal(0.2, 0.1, size=(side, side)).astype(np.float32)
    nodata = 0.0 if holes else None
    if holes:
        data[rng.random(data.shape) < 0.08] = 0
        data[side // 3 : side // 3 + 3, :4] = 0
    origin = (500000.0, 4200000.0)
    path = tmp_path / f"b{k}_{dtype}_{holes}_{seed}.tif"
    _write(path, data, Affine(10.0 * k, 0, origin[0], 0, -10.0 * k, origin[1]), nodata)
    target = Grid(rasterio.crs.CRS.from_string(CRS), Affine(10.0, 0, origin[0], 0, -10.0, origin[1]), 180, 180)
    return path, target, nodata


def _warped(path: Path, grid: Grid, window: Window, resampling: Resampling, nodata: float | None) -> np.ndarray:
    with (
        rasterio.open(path) as src,
        WarpedVRT(
            src,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=resampling,
            src_nodata=nodata,
            nodata=nodata,
        ) as vrt,
    ):
        out: np.ndarray = vrt.read(1, window=window)
        return out


WINDOWS = [
    Window(0, 0, 180, 180),
    Window(0, 0, 64, 64),
    Window(64, 64, 64, 64),
    Window(128, 128, 52, 52),
    Window(7, 131, 45, 49),
]


@pytest.mark.parametrize("k", [1, 2, 6])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.nearest])
def test_refined_reads_match_the_warper(
    tmp_path: Path, k: int, dtype: str, holes: bool, resampling: Resampling
) -> None:
    path, grid, nodata = _source(tmp_path, k, dtype, holes, seed=k * 10 + holes)
    with rasterio.open(path) as src:
        assert refines(Grid(src.crs, src.transform, src.height, src.width), grid)
        for window in WINDOWS:
            ours = read_refined(src, window, dst=grid, resampling=resampling, nodata=nodata)
            gdal = _warped(path, grid, window, resampling, nodata)
            assert ours.dtype == gdal.dtype and ours.shape == gdal.shape
            if nodata is not None:
                np.testing.assert_array_equal(ours == nodata, gdal == nodata)
            diff = np.abs(ours.astype(np.float64) - gdal.astype(np.float64))
            if dtype == "uint16":
                # an exact .5 tie (common with integer ratios) may round either way in GDAL's float arithmetic
                assert diff.max() <= 1 and (diff > 0).mean() < 0.03
            else:
                np.testing.assert_allclose(ours, gdal, rtol=1e-5, atol=1e-6)


def test_a_target_beyond_the_source_is_nodata_there(tmp_path: Path) -> None:
    path, grid, _ = _source(tmp_path, 2, "uint16", False, seed=3)
    wide = Grid(grid.crs, grid.transform * Affine.translation(-20, -20), 220, 220)
    with rasterio.open(path) as src:
        ours = read_refined(src, Window(0, 0, 220, 220), dst=wide, resampling=Resampling.bilinear, nodata=0)
    gdal = _warped(path, wide, Window(0, 0, 220, 220), Resampling.bilinear, 0)
    np.testing.assert_array_equal(ours == 0, gdal == 0)
    assert (ours[:20] == 0).all() and (ours[20:200, 20:200] > 0).all()
    assert np.abs(ours.astype(int) - gdal.astype(int)).max() <= 1


def test_refines_only_finer_grids_of_the_same_crs() -> None:
    crs = rasterio.crs.CRS.from_string(CRS)
    fine = Grid(crs, Affine(10.0, 0, 0, 0, -10.0, 0), 10, 10)
    coarse = Grid(crs, Affine(20.0, 0, 0, 0, -20.0, 0), 5, 5)
    assert refines(coarse, fine) and refines(fine, fine)
    assert not refines(fine, coarse)
    assert not refines(Grid(rasterio.crs.CRS.from_epsg(32634), coarse.transform, 5, 5), fine)
    assert not refines(Grid(crs, Affine(20.0, 0.5, 0, 0, -20.0, 0), 5, 5), fine)


def test_the_lazy_band_reader_takes_the_refined_path(tmp_path: Path) -> None:
    path, grid, nodata = _source(tmp_path, 2, "uint16", True, seed=5)
    lazy = np.asarray(read_band_lazy(raster_meta(path), grid, resampling=Resampling.bilinear, nodata=nodata, chunk=64))
    gdal = _warped(path, grid, Window(0, 0, 180, 180), Resampling.bilinear, nodata)
    np.testing.assert_array_equal(lazy == 0, gdal == 0)
    assert np.abs(lazy.astype(int) - gdal.astype(int)).max() <= 1


def test_the_footprint_of_a_same_crs_grid_is_each_centre_inside_the_source() -> None:
    crs = rasterio.crs.CRS.from_string(CRS)
    src = Grid(crs, Affine(20.0, 0, 500100.0, 0, -20.0, 4200300.0), 40, 30)
    dst = Grid(crs, Affine(10.0, 0, 500000.0, 0, -10.0, 4200400.0), 120, 100)
    window = Window(3, 5, 90, 100)
    got = np.asarray(footprint_invalid(src, dst, chunk=32))[5:105, 3:93]
    ys, xs = dst.coords()
    x, y = np.meshgrid(xs[3:93], ys[5:105])
    col, row = ~src.transform * (x, y)
    expected = ~((col >= 0) & (col < src.width) & (row >= 0) & (row < src.height))
    np.testing.assert_array_equal(got, expected)
    assert got.any() and not got.all()
    assert window.width == 90
