"""Write a whole synthetic Sentinel-2 L2A tile, block by block, as Cloud-Optimised GeoTIFFs at native grids.

On-disk layout under ``OUT`` (the ``perband`` reader's, :mod:`changescope.io.perband`)::

    OUT/S2_L2A_SYNTH_<BAND>_YYYY-MM-DD.tif   one COG per L2A band and date at its native grid (10, 20 or 60 m),
                                             uint16 reflectance x 10000, nodata 0, ZSTD + horizontal predictor
    OUT/S2_L2A_SYNTH_SCL_YYYY-MM-DD.tif      20 m scene classification (the reader's cloud mask: 0, 1, 3, 8, 9,
                                             10 are invalid), uint8, nodata 0
    OUT/synth_tile.json                      parameters, grids and the nuisances of every date
    OUT/truth/change_month.tif               10 m COG: 1 + the date index from which a pixel has changed, 0 = never
    OUT/truth/events.parquet                 GeoParquet of the change events (type, month, polygon, CRS)
    OUT/truth/events.geojson                 the same for human eyes

``changescope.open(OUT)`` (and ``changescope run OUT``) reads it as one series on the 10 m grid: the 20 m and 60 m
bands are resampled bilinearly, SCL by nearest neighbour. The grids and bands are described in
:mod:`~changescope.synthetic.tile_spec`, the pixels in :mod:`~changescope.synthetic.tile_scene` and the events in
:mod:`~changescope.synthetic.tile_events`.

Memory is bounded by the block size, not the tile: each band file is written window by window (``block`` px of its
grid at a time) into a tiled staging GeoTIFF, which GDAL's COG driver then copies into the final COG with
overviews (through GDAL's block cache, capped at ``cache_mb``). Every pixel is a function of the seed and its
position, so the files are byte-identical whatever the block size. The whole folder is written beside ``OUT`` and
renamed into place at the end: an interrupted run leaves nothing that looks complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from changescope.errors import ParameterError
from changescope.io.writers import atomic_path
from changescope.synthetic.tile_events import events_frame, place_events
from changescope.synthetic.tile_scene import TileScene
from changescope.synthetic.tile_spec import CRS, NODATA, PREFIX, RESOLUTIONS, SCALE, TileParams, band_path
from changescope.types import PathLike

__all__ = ["METADATA_FILE", "TileInfo", "write_s2_tile"]

METADATA_FILE = "synth_tile.json"
"""Parameters, grids and per-date nuisances of a tile, in ``OUT``."""
SCL_VALUES = (
    "0 no data, 3 cloud shadow, 4 vegetation, 5 not vegetated, 6 water, 8 cloud medium, 9 cloud high, 10 cirrus"
)
_STAGING_TILE = 256
_COG_BLOCK = 512


@dataclass(frozen=True)
class TileInfo:
    """What :func:`write_s2_tile` wrote.

    Attributes:
        root: The tile folder ``OUT``.
        params: The parameters.
        events: The change events (as in ``truth/events.parquet``).
        crs: CRS of every raster and polygon.
    """

    root: Path
    params: TileParams
    events: gpd.GeoDataFrame
    crs: str

    @property
    def dates(self) -> pd.DatetimeIndex:
        """The monthly dates."""
        return self.params.dates

    @property
    def truth_path(self) -> Path:
        """``OUT/truth/change_month.tif``."""
        return self.root / "truth" / "change_month.tif"

    @property
    def events_path(self) -> Path:
        """``OUT/truth/events.parquet``."""
        return self.root / "truth" / "events.parquet"

    def band_path(self, token: str, date: pd.Timestamp) -> Path:
        """The file of band ``token`` (or ``"SCL"``) at ``date``."""
        return band_path(self.root, token, date)


def _to_cog(src: Path, dst: Path, *, categorical: bool) -> None:
    """Copy a tiled GeoTIFF into a ZSTD-compressed COG with overviews (nearest for classes, average otherwise)."""
    rasterio.shutil.copy(
        src,
        dst,
        driver="COG",
        COMPRESS="ZSTD",
        LEVEL=6,
        PREDICTOR="NO" if categorical else "YES",
        BLOCKSIZE=_COG_BLOCK,
        OVERVIEW_RESAMPLING="NEAREST" if categorical else "AVERAGE",
        BIGTIFF="IF_SAFER",
    )
    src.unlink()


@dataclass(frozen=True)
class _Raster:
    """One single-band COG to write."""

    path: Path
    dtype: str
    tags: dict[str, str]
    nodata: int | None = NODATA
    scale: float | None = None
    categorical: bool = False


def _write_rasters(
    rasters: dict[str, _Raster],
    render: Callable[[tuple[int, int, int, int]], dict[str, np.ndarray]],
    params: TileParams,
    resolution: int,
) -> None:
    """Write one COG per raster on the ``resolution`` grid, block by block, from ``render(window)``."""
    grid = params.grid(resolution)
    staging = {name: r.path.with_name(f".{r.path.stem}.staging.tif") for name, r in rasters.items()}
    with ExitStack() as stack:
        files: dict[str, Any] = {}
        for name, spec in rasters.items():
            profile = {
                "driver": "GTiff",
                "width": grid.size,
                "height": grid.size,
                "count": 1,
                "dtype": spec.dtype,
                "crs": CRS,
                "transform": grid.transform,
                "nodata": spec.nodata,
                "tiled": True,
                "blockxsize": _STAGING_TILE,
                "blockysize": _STAGING_TILE,
                "compress": "zstd",
                "zstd_level": 1,
                "bigtiff": "if_safer",
            }
            dst = stack.enter_context(rasterio.open(staging[name], "w", **profile))
            dst.set_band_description(1, name)
            if spec.scale is not None:
                dst.scales = (spec.scale,)
            dst.update_tags(**spec.tags)
            files[name] = dst
        for window in grid.windows(params.block):
            arrays = render(window)
            row0, col0, height, width = window
            for name, dst in files.items():
                dst.write(arrays[name], 1, window=Window(col0, row0, width, height))
    for name, spec in rasters.items():
        _to_cog(staging[name], spec.path, categorical=spec.categorical)


def _metadata(params: TileParams, scene: TileScene) -> dict[str, Any]:
    from changescope import __version__

    return {
        "generator": "changescope.synthetic.write_s2_tile",
        "version": __version__,
        "seed": params.seed,
        "size": params.size,
        "months": params.months,
        "start": f"{params.start:%Y-%m-%d}",
        "bands": [b.token for b in params.bands],
        "events_per_km2": params.events_per_km2,
        "crs": CRS,
        "prefix": PREFIX,
        "scale": SCALE,
        "nodata": NODATA,
        "scl": SCL_VALUES,
        "grids": {
            f"{res}m": {"shape": list(params.grid(res).shape), "transform": list(params.grid(res).transform)[:6]}
            for res in RESOLUTIONS
        },
        "dates": [state.as_record() for state in scene.states],
    }


def write_s2_tile(
    out_dir: PathLike,
    seed: int = 0,
    size: int = 10980,
    months: int = 24,
    *,
    start: str | pd.Timestamp = "2018-01-01",
    bands: str = "s2",
    block: int = 1024,
    events_per_km2: float = 0.25,
    overwrite: bool = False,
    cache_mb: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> TileInfo:
    """Write a synthetic Sentinel-2 L2A tile (see the module docstring for the layout).

    Args:
        out_dir: The tile folder (created; must be missing or empty unless ``overwrite``).
        seed: Random seed; the same parameters give byte-identical files, whatever ``block``.
        size: Side of the 10 m grid in pixels, a multiple of 6 (10980 = a whole tile, 109.8 km).
        months: Number of monthly dates (>= 2).
        start: First date, the first day of a month.
        bands: ``"s2"`` (the 12 L2A bands), ``"s2-10m"`` (B02, B03, B04, B08) or comma-separated L2A tokens.
        block: Side of the windows generated and written at a time, pixels of each grid (a multiple of 256);
            memory grows with its square.
        events_per_km2: Density of change events.
        overwrite: Replace an existing non-empty ``out_dir``.
        cache_mb: GDAL block cache while writing, MB.
        progress: Called as ``progress(done, total)`` after each date is written.

    Returns:
        What was written: the folder, parameters and events.

    Raises:
        ParameterError: A parameter is out of range, ``out_dir`` is a file, or it is not empty and ``overwrite``
            is False.
    """
    params = TileParams.validate(
        seed, size, months, start=start, bands=bands, block=block, events_per_km2=events_per_km2
    )
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise ParameterError(f"out_dir={str(root)!r} (OUT) is a file; give a folder to write the tile into")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise ParameterError(
            f"out_dir={str(root)!r} (OUT) exists and is not empty; pick a new folder or pass --overwrite "
            "(overwrite=True)"
        )
    events = place_events(params)
    scene = TileScene(params, events)
    base = {"CHANGESCOPE_SYNTHETIC": "1", "SEED": str(params.seed)}
    with atomic_path(root) as tmp, rasterio.Env(GDAL_CACHEMAX=int(cache_mb)):
        tmp.mkdir(parents=True)
        for t, date in enumerate(params.dates):
            for res in RESOLUTIONS:
                tokens = params.tokens_at(res)
                if not tokens:
                    continue
                day = {**base, "DATE": f"{date:%Y-%m-%d}", "RESOLUTION": f"{res}m"}
                rasters = {
                    tok: _Raster(
                        band_path(tmp, tok, date), "uint8", {**day, "BAND": tok, "VALUES": SCL_VALUES}, categorical=True
                    )
                    if tok == "SCL"
                    else _Raster(band_path(tmp, tok, date), "uint16", {**day, "BAND": tok}, scale=SCALE)
                    for tok in tokens
                }

                def render(window: tuple[int, int, int, int], res: int = res, t: int = t) -> dict[str, np.ndarray]:
                    return dict(scene.render(params.grid(res), window, t, params.tokens_at(res)))

                _write_rasters(rasters, render, params, res)
            if progress is not None:
                progress(t + 1, params.months)
        truth_dir = tmp / "truth"
        truth_dir.mkdir()
        dtype = np.uint8 if params.months < 255 else np.uint16
        truth_tags = {
            **base,
            "VALUES": "0 no change, k: changed from date k (1-based, see DATES)",
            "DATES": ",".join(f"{d:%Y-%m-%d}" for d in params.dates),
        }
        change = _Raster(truth_dir / "change_month.tif", np.dtype(dtype).name, truth_tags, None, categorical=True)

        def truth(window: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
            return {"change_month": scene.change_month(params.grid(10), window, dtype)}

        _write_rasters({"change_month": change}, truth, params, 10)
        (tmp / METADATA_FILE).write_text(json.dumps(_metadata(params, scene), indent=1))
        frame = events_frame(events, params.dates)
        out = frame.copy()
        for col in ("month", "end_month"):
            out[col] = [None if pd.isna(d) else f"{d:%Y-%m-%d}" for d in out[col]]
        (truth_dir / "events.geojson").write_text(out.to_json(na="null", drop_id=True))
        frame.to_parquet(truth_dir / "events.parquet")
    return TileInfo(root=root, params=params, events=frame, crs=CRS)
