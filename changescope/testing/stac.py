"""Write a tiny seeded local STAC ItemCollection (COGs + JSON), for tests and offline examples.

Needs pystac (``pip install changescope[stac]``); it is imported when the writer is called.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pyproj import Transformer

from changescope.errors import MissingDependencyError
from changescope.io.writers import write_geotiff
from changescope.testing import TEST_CRS, utm_transform

__all__ = ["DEFAULT_STAC_DATES", "write_stac_collection"]

DEFAULT_STAC_DATES: tuple[str, ...] = ("2021-04-02T10:10:00", "2021-05-07T10:10:00", "2021-06-11T10:10:00")
"""Acquisition times (UTC) of the default items."""

SCL_CLASSES = 12


def write_stac_collection(
    folder: Path | str,
    seed: int = 0,
    *,
    dates: Sequence[str] = DEFAULT_STAC_DATES,
    bands: Sequence[str] = ("B02", "B03", "B04"),
    mask_asset: str | None = "SCL",
    size: int = 32,
    nodata: int = 0,
    relative_hrefs: bool = False,
    name: str = "items.json",
) -> Path:
    """Write one COG per date and asset plus an ItemCollection JSON whose assets point at them.

    Items carry the projection extension (code, shape, transform) and the raster extension (data type, nodata,
    scale 1e-4 for the bands) so odc-stac can load them without opening the files first. Band values are uint16
    in ``[1, 5000)`` with one nodata pixel per band; the mask asset holds random SCL classes ``0..11`` (uint8).

    Args:
        folder: Output folder (created).
        seed: Random seed.
        dates: One ISO datetime (UTC) per item.
        bands: Band asset names.
        mask_asset: Name of the SCL-like mask asset, or ``None`` for none.
        size: Raster side in pixels.
        nodata: Nodata value of the band assets.
        relative_hrefs: Write hrefs relative to the JSON file instead of absolute paths.
        name: JSON file name.

    Returns:
        The path of the JSON file.
    """
    try:
        import pystac
        from pystac.extensions.projection import ProjectionExtension
        from pystac.extensions.raster import DataType, RasterBand, RasterExtension
    except ImportError as err:
        raise MissingDependencyError("write_stac_collection needs pystac; pip install changescope[stac]") from err
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    transform = utm_transform()
    x0, y1 = transform.c, transform.f
    x1, y0 = x0 + size * transform.a, y1 + size * transform.e
    to_lonlat = Transformer.from_crs(TEST_CRS, "EPSG:4326", always_xy=True)
    lons, lats = to_lonlat.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
    ring = [[float(lo), float(la)] for lo, la in zip(lons, lats, strict=True)]
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    items = []
    for i, when in enumerate(dates):
        stamp = datetime.fromisoformat(when).replace(tzinfo=None)
        item = pystac.Item(
            id=f"item-{i:02d}-{stamp:%Y%m%d}",
            geometry={"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
            bbox=[float(v) for v in bbox],
            datetime=stamp.replace(tzinfo=UTC),
            properties={},
        )
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.code = TEST_CRS
        proj.shape = [size, size]
        proj.transform = list(transform)[:6]
        assets: list[tuple[str, np.ndarray, float | None, int | None]] = []
        for band in bands:
            arr = rng.integers(1, 5000, size=(size, size)).astype(np.uint16)
            r, c = rng.integers(0, size, size=2)
            arr[r, c] = nodata
            assets.append((band, arr, 1e-4, nodata))
        if mask_asset is not None:
            assets.append((mask_asset, rng.integers(0, SCL_CLASSES, size=(size, size)).astype(np.uint8), None, None))
        for key, arr, scale, nd in assets:
            file = out / f"{stamp:%Y-%m-%d}_{key}.tif"
            write_geotiff(file, arr, crs=TEST_CRS, transform=transform, nodata=nd, cog=True)
            href = file.name if relative_hrefs else str(file.resolve())
            asset = pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=["data"])
            item.add_asset(key, asset)
            RasterExtension.ext(asset, add_if_missing=True).bands = [
                RasterBand.create(data_type=DataType(arr.dtype.name), nodata=nd, scale=scale)
            ]
        items.append(item)
    path = out / name
    path.write_text(json.dumps(pystac.ItemCollection(items).to_dict(), indent=1))
    return path
