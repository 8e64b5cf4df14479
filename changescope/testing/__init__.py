"""Helpers for users' and our own tests: tiny seeded series and GeoTIFFs.

Everything here is deterministic for a given seed and writes real files (GeoTIFF via rasterio).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine

from changescope.io.writers import write_geotiff
from changescope.series import make_series

__all__ = ["TEST_CRS", "make_test_series", "shared_sample", "utm_transform", "write_dated_folder", "write_tiny_geotiff"]

TEST_CRS = "EPSG:32633"
"""CRS of the test rasters (UTM 33N)."""


def utm_transform(res: float = 10.0, x0: float = 500_000.0, y0: float = 5_000_000.0) -> Affine:
    """North-up transform with square ``res`` pixels and top-left corner ``(x0, y0)``."""
    return Affine(res, 0.0, x0, 0.0, -res, y0)


def make_test_series(
    seed: int = 0,
    *,
    n_time: int = 4,
    bands: Sequence[str] = ("blue", "green", "red", "nir"),
    height: int = 64,
    width: int = 64,
    cloud_fraction: float = 0.0,
    with_labels: bool = False,
    start: str = "2020-01-01",
    freq: str = "MS",
) -> xr.Dataset:
    """An in-memory uint16 reflectance series (scale 1e-4) of smooth random fields.

    Args:
        seed: Random seed.
        n_time: Number of dates.
        bands: Band names.
        height: Rows.
        width: Columns.
        cloud_fraction: Fraction of pixels per date marked invalid (random blobs).
        with_labels: Add a 3-class ``labels`` variable.
        start: First date.
        freq: pandas frequency of the dates.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.normal(size=(len(bands), height, width)), sigma=(0, 3, 3))
    base = (base - base.min()) / (np.ptp(base) + 1e-9)
    noise = rng.normal(scale=0.02, size=(n_time, len(bands), height, width))
    img = np.clip(1000 + 3000 * base[None] + 3000 * noise, 1, 10000).astype(np.uint16)
    valid = np.ones((n_time, height, width), dtype=bool)
    if cloud_fraction > 0:
        field = gaussian_filter(rng.normal(size=(n_time, height, width)), sigma=(0, 4, 4))
        for t in range(n_time):
            valid[t] = field[t] < np.quantile(field[t], 1 - cloud_fraction)
    labels = None
    classes = None
    if with_labels:
        cls_field = gaussian_filter(rng.normal(size=(height, width)), sigma=5)
        lab = np.digitize(cls_field, np.quantile(cls_field, [1 / 3, 2 / 3])).astype(np.int16)
        labels = np.repeat(lab[None], n_time, axis=0)
        classes = {0: "water", 1: "forest", 2: "urban"}
    return make_series(
        img,
        times=pd.date_range(start, periods=n_time, freq=freq),
        bands=[*bands],
        crs=TEST_CRS,
        transform=utm_transform(),
        valid=valid,
        labels=labels,
        classes=classes,
        sensor="test",
    ).assign_coords(scale=("band", [1e-4] * len(bands)))


def write_tiny_geotiff(
    path: Path | str,
    seed: int = 0,
    *,
    count: int = 3,
    height: int = 32,
    width: int = 32,
    dtype: str = "uint16",
    crs: str = TEST_CRS,
    transform: Affine | None = None,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
) -> Path:
    """Write a small random GeoTIFF and return its path."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(1, 4000, size=(count, height, width)).astype(dtype)
    return write_geotiff(
        path, arr, crs=crs, transform=transform or utm_transform(), nodata=nodata, descriptions=descriptions
    )


def write_dated_folder(folder: Path | str, ds: xr.Dataset) -> Path:
    """Write a series as a folder of dated GeoTIFFs (with mask sidecars and labels)."""
    from changescope.io.writers import write_series_folder

    return write_series_folder(ds, folder)


def shared_sample(root: Path, name: str) -> Path:
    """Path of a real sample under ``root`` (e.g. ``../shared/data``); skips the calling pytest test when absent."""
    path = Path(root) / name
    if not path.exists():
        import pytest

        pytest.skip(f"sample {name!r} not found in {root}")
    return path
