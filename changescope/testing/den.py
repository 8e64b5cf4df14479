"""Write a tiny seeded dataset in the DynamicEarthNet layout (real GeoTIFFs), for tests and examples.

The files follow :mod:`changescope.io.dynamicearthnet`: daily 4-band uint16 images with ``.mask.tif`` sidecars in
``planet/<zone>/<tile>/<aoi>/PF-SR`` and monthly 7-band one-hot labels in
``labels/<aoi>_<zone>/Labels/Raster/<zone>-<aoi>/<zone>-<aoi>-YYYY_MM_01.tif``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from changescope.io.writers import write_geotiff
from changescope.testing import TEST_CRS, utm_transform

__all__ = ["DEFAULT_DAYS", "den_image_dir", "den_label_path", "one_hot", "write_den_root"]

DEFAULT_DAYS: dict[str, tuple[int, ...]] = {
    "2020-01": (1, 11, 21),
    "2020-02": (3, 14, 26),
    "2020-03": (1, 9, 30),
}
"""Daily image days per month; February has no image on its label day (the nearest is the 3rd)."""


def den_image_dir(root: Path | str, aoi: str, *, zone: str = "synth", tile: str | None = "0000") -> Path:
    """The ``PF-SR`` folder of an AOI."""
    base = Path(root) / "planet" / zone
    return (base / tile if tile else base) / aoi / "PF-SR"


def den_label_path(root: Path | str, aoi: str, month: str, *, zone: str = "synth") -> Path:
    """The label file of ``aoi`` for ``month`` (``"YYYY-MM"``)."""
    stamp = pd.Timestamp(month).strftime("%Y_%m_01")
    folder = Path(root) / "labels" / f"{aoi}_{zone}" / "Labels" / "Raster" / f"{zone}-{aoi}"
    return folder / f"{zone}-{aoi}-{stamp}.tif"


def _class_map(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blocky class ids 0..6 with an unlabelled (-1) top-left corner."""
    cells = rng.integers(0, 7, size=(4, 4))
    ids = np.kron(cells, np.ones((size // 4, size // 4), dtype=np.int64)).astype(np.int16)
    ids[: size // 8, : size // 8] = -1
    return ids


def one_hot(ids: np.ndarray, n_classes: int = 7) -> np.ndarray:
    """Encode class ids ``(h, w)`` as ``n_classes`` uint8 bands with 255 at the class (none for ``-1``)."""
    out = np.zeros((n_classes, *ids.shape), dtype=np.uint8)
    for c in range(n_classes):
        out[c][ids == c] = 255
    return out


def write_den_root(
    root: Path | str,
    seed: int = 0,
    *,
    aois: Sequence[str] = ("aoi_0000", "aoi_0001"),
    zone: str = "synth",
    tile: str | None = "0000",
    days: Mapping[str, Sequence[int]] | None = None,
    size: int = 64,
    with_labels: bool = True,
    with_masks: bool = True,
) -> Path:
    """Write a small DynamicEarthNet-layout dataset and return its root.

    Each daily image is 4 bands of uint16 values in ``[100, 5000)``, with a few nodata (0) pixels in one band and,
    when ``with_masks``, a sidecar mask flagging a random square. AOI ``i`` sits ``i * size * 10`` metres east of
    the first one (UTM 33N, 10 m pixels).

    Args:
        root: Folder to write into (created).
        seed: Random seed.
        aois: AOI ids.
        zone: Zone folder name.
        tile: Tile folder name, or ``None`` for the layout without a tile level.
        days: Days with an image, per ``"YYYY-MM"`` month (default :data:`DEFAULT_DAYS`).
        size: Image side in pixels (a multiple of 8).
        with_labels: Write one label file per month.
        with_masks: Write ``.mask.tif`` sidecars.
    """
    rng = np.random.default_rng(seed)
    base = Path(root)
    months = dict(days or DEFAULT_DAYS)
    for a, aoi in enumerate(aois):
        transform = utm_transform(x0=500_000.0 + a * size * 10.0)
        folder = den_image_dir(base, aoi, zone=zone, tile=tile)
        for month, month_days in months.items():
            start = pd.Timestamp(month)
            for day in month_days:
                stem = start.replace(day=day).strftime("%Y-%m-%d")
                img = rng.integers(100, 5000, size=(4, size, size)).astype(np.uint16)
                r, c = rng.integers(0, size, size=2)
                img[int(rng.integers(0, 4)), r, c] = 0
                write_geotiff(folder / f"{stem}.tif", img, crs=TEST_CRS, transform=transform)
                if with_masks:
                    mask = np.zeros((size, size), dtype=np.uint8)
                    r0, c0 = rng.integers(0, size - 8, size=2)
                    mask[r0 : r0 + 8, c0 : c0 + 8] = 1
                    write_geotiff(folder / f"{stem}.mask.tif", mask, crs=TEST_CRS, transform=transform)
            if with_labels:
                write_geotiff(
                    den_label_path(base, aoi, month, zone=zone),
                    one_hot(_class_map(rng, size)),
                    crs=TEST_CRS,
                    transform=transform,
                )
    return base
