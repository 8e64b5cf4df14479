"""Tiny seeded change catalogs with planted change types, for tests and examples.

``make_test_catalog`` plants ``len(type_sizes)`` change types: each type is a random unit direction, and each of
its events a copy of that direction plus isotropic noise of relative size ``spread``, scaled by a log-normal
magnitude. Events sit at distinct ``(date, row, col)`` cells of a small patch grid in ``crs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.discover.catalog import CLUSTERS_FILE, Catalog, make_event_ids
from changescope.errors import ParameterError
from changescope.testing import TEST_CRS
from changescope.types import PathLike

__all__ = ["make_test_catalog", "planted_vectors", "write_test_catalog"]


def planted_vectors(
    seed: int, type_sizes: Sequence[int], dim: int, spread: float = 0.15
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
    """Change vectors of planted types.

    Args:
        seed: Random seed.
        type_sizes: Events per type.
        dim: Vector dimension.
        spread: Noise norm relative to the direction (0 = every event of a type points the same way).

    Returns:
        ``(vectors (E, dim), types (E,), directions (T, dim))``, events grouped by type.
    """
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(len(type_sizes), dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    types = np.repeat(np.arange(len(type_sizes)), np.asarray(type_sizes, dtype=np.int64))
    noise = rng.normal(size=(types.size, dim)) * (spread / np.sqrt(dim))
    mags = np.exp(rng.normal(np.log(2.0), 0.3, size=(types.size, 1)))
    vectors = (dirs[types] + noise) * mags
    return vectors.astype(np.float32), types.astype(np.int64), dirs.astype(np.float32)


def make_test_catalog(
    seed: int = 0,
    *,
    aoi: str = "aoi-a",
    type_sizes: Sequence[int] = (40, 25, 12, 3),
    dim: int = 16,
    spread: float = 0.15,
    n_dates: int = 6,
    start: str = "2018-01-01",
    grid: tuple[int, int] = (8, 8),
    patch_size: float = 80.0,
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    crs: Any = TEST_CRS,
    discover: bool = True,
    vectors: NDArray[np.floating[Any]] | None = None,
) -> tuple[Catalog, NDArray[np.int64]]:
    """An in-memory catalog of planted change types.

    Args:
        seed: Random seed.
        aoi: AOI name (prefix of the event ids).
        type_sizes: Events per planted type.
        dim: Change-vector dimension.
        spread: Within-type noise (:func:`planted_vectors`).
        n_dates: Monthly dates from ``start``.
        start: First date.
        grid: ``(n_rows, n_cols)`` of patches.
        patch_size: Patch side in CRS units.
        origin: Top-left corner ``(x, y)`` of the grid.
        crs: CRS of the polygons.
        discover: Fill ``cluster``, ``rarity`` and ``rank`` with :func:`~changescope.discover.discover_changes`.
        vectors: Use these change vectors instead of planted ones (``type_sizes`` then gives only the count).

    Returns:
        ``(catalog, planted types)``.
    """
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(seed + 1)
    if vectors is None:
        vecs, types, _ = planted_vectors(seed, type_sizes, dim, spread)
    else:
        vecs = np.asarray(vectors, dtype=np.float32)
        types = np.zeros(len(vecs), dtype=np.int64)
    n = len(vecs)
    cells = n_dates * grid[0] * grid[1]
    if n > cells:
        raise ParameterError(f"{n} events do not fit {n_dates} dates x {grid[0]}x{grid[1]} patches; enlarge grid=")
    flat = np.sort(rng.choice(cells, n, replace=False))
    t, rest = np.divmod(flat, grid[0] * grid[1])
    rows, cols = np.divmod(rest, grid[1])
    times = pd.date_range(start, periods=n_dates, freq="MS")[t]
    x0 = origin[0] + cols * patch_size
    y1 = origin[1] - rows * patch_size
    frame = pd.DataFrame(
        {
            "event_id": make_event_ids(aoi, times, rows, cols),
            "aoi": aoi,
            "row": rows.astype(np.int64),
            "col": cols.astype(np.int64),
            "time": times,
            "score": rng.uniform(3.0, 10.0, size=n),
            "magnitude": np.linalg.norm(vecs, axis=1).astype(np.float64),
            "confirmed": rng.uniform(size=n) < 0.9,
        }
    )
    gdf = gpd.GeoDataFrame(frame, geometry=shapely.box(x0, y1 - patch_size, x0 + patch_size, y1), crs=crs)
    if discover and n:
        from changescope.discover.summary import discover_changes

        gdf = discover_changes(gdf, vecs).frame
    return Catalog.from_frame(gdf, vecs), types


def write_test_catalog(run_dir: PathLike, seed: int = 0, **kwargs: Any) -> Path:
    """Write a :func:`make_test_catalog` run folder and return it.

    The folder gets ``changes.parquet``, ``change_vectors.npy`` and (unless ``discover=False``) ``clusters.json``.
    Keyword arguments go to :func:`make_test_catalog`.
    """
    from changescope.discover.summary import discover_changes, write_clusters_json

    discover = bool(kwargs.pop("discover", True))
    catalog, _ = make_test_catalog(seed, discover=False, **kwargs)
    out = Path(run_dir)
    if discover and len(catalog):
        found = discover_changes(catalog.frame, catalog.vectors)
        catalog = Catalog.from_frame(found.frame, catalog.vectors)
        write_clusters_json(out / CLUSTERS_FILE, found)
    catalog.write(out)
    return out
