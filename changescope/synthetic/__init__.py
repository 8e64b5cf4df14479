"""Synthetic AOIs in the DynamicEarthNet layout, with known change events and non-semantic nuisances.

:func:`make_aoi` writes an AOI to disk; :func:`generate_aoi` returns the same arrays in memory. The rules live in
the modules' docstrings:

- :mod:`~changescope.synthetic.landscape`: the land-cover map (parcels, stands, town, roads, water);
- :mod:`~changescope.synthetic.radiometry`: spectra, seasonal phenology and crop rotation (not a change);
- :mod:`~changescope.synthetic.events`: the semantic change events and what they do to the labels;
- :mod:`~changescope.synthetic.nuisance`: illumination, haze, clouds and shadows, misregistration, gap filling;
- :mod:`~changescope.synthetic.aoi`: the on-disk layout.

:func:`write_s2_tile` writes a whole synthetic Sentinel-2 L2A tile (12 bands at their native 10/20/60 m grids, an
SCL cloud mask, change events and their truth) as COGs, block by block in bounded memory
(:mod:`~changescope.synthetic.tile`; bands and grids in :mod:`~changescope.synthetic.tile_spec`, pixels in
:mod:`~changescope.synthetic.tile_scene`, events in :mod:`~changescope.synthetic.tile_events`).

:func:`series_from_pair` builds a labelled semi-real series from a real bi-temporal pair and its change mask
(:mod:`~changescope.synthetic.from_pair`; :func:`read_pair` reads the pair from files,
:mod:`~changescope.synthetic.pair_io`).
"""

from changescope.synthetic.aoi import TILE, ZONE, AoiInfo, AoiLayout, make_aoi
from changescope.synthetic.events import EVENT_TYPES, EventType
from changescope.synthetic.from_pair import PairNuisances, series_from_pair
from changescope.synthetic.generate import CRS, PIXEL_SIZE, AoiParams, Frame, SyntheticAoi, generate_aoi, iter_frames
from changescope.synthetic.landscape import CLASS_NAMES
from changescope.synthetic.pair_io import read_pair
from changescope.synthetic.radiometry import BANDS, CROP_NAMES
from changescope.synthetic.tile import TileInfo, write_s2_tile
from changescope.synthetic.tile_events import TILE_EVENT_TYPES
from changescope.synthetic.tile_spec import BAND_SETS, L2A_BANDS, TileParams

__all__ = [
    "BANDS",
    "BAND_SETS",
    "CLASS_NAMES",
    "CROP_NAMES",
    "CRS",
    "EVENT_TYPES",
    "L2A_BANDS",
    "PIXEL_SIZE",
    "TILE",
    "TILE_EVENT_TYPES",
    "ZONE",
    "AoiInfo",
    "AoiLayout",
    "AoiParams",
    "EventType",
    "Frame",
    "PairNuisances",
    "SyntheticAoi",
    "TileInfo",
    "TileParams",
    "generate_aoi",
    "iter_frames",
    "make_aoi",
    "read_pair",
    "series_from_pair",
    "write_s2_tile",
]
