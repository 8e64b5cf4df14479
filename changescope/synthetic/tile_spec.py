"""What a synthetic Sentinel-2 L2A tile holds: bands, native grids, parameters and file names.

Bands are those of a Level-2A product, 12 of the 13 MSI bands (L2A drops B10, the cirrus band, which only serves
the atmospheric correction), each on its native grid:

- 10 m: B02, B03, B04, B08, ``size`` px per side;
- 20 m: B05, B06, B07, B8A, B11, B12 and the ``SCL`` scene classification, ``size / 2`` px;
- 60 m: B01, B09, ``size / 6`` px.

``size`` must be a multiple of 6 so that the three grids cover exactly the same extent (a whole tile, 10980 px,
is 5490 px at 20 m and 1830 px at 60 m); rounding the coarser sides up instead would make their extent larger
than the 10 m grid's, so such sizes are refused. The grids share their top-left corner, in UTM zone 33N.

Every file is named ``<prefix>_<TOKEN>_<YYYY-MM-DD>.tif`` (prefix ``S2_L2A_SYNTH``), the layout that
:class:`changescope.io.perband.PerBandReader` opens: it resamples the 20 m and 60 m bands onto the 10 m grid and
reads ``SCL`` as the cloud mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from affine import Affine
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.synthetic.generate import CRS

__all__ = [
    "BAND_SETS",
    "CRS",
    "L2A_BANDS",
    "MIN_SIZE",
    "NODATA",
    "ORIGIN",
    "PREFIX",
    "RESOLUTIONS",
    "SCALE",
    "S2Band",
    "TileGrid",
    "TileParams",
    "band_path",
    "parse_bands",
]

PREFIX = "S2_L2A_SYNTH"
"""File-name prefix of every raster of a synthetic tile."""
ORIGIN = (399960.0, 5300040.0)
"""Top-left corner ``(x, y)`` of the tile in UTM 33N (metres), where Sentinel-2 tiles have theirs."""
NODATA = 0
"""Stored value of no-data pixels (bands and SCL), as in L2A products."""
SCALE = 1e-4
"""Reflectance = stored value * SCALE (L2A before processing baseline 04.00, without the -1000 offset)."""
MIN_SIZE = 60
"""Smallest tile side in pixels (10 px at 60 m)."""


@dataclass(frozen=True)
class S2Band:
    """One Sentinel-2 MSI band.

    Attributes:
        token: Band token (``"B8A"``).
        resolution: Native pixel side in metres (10, 20 or 60).
        wavelength: Central wavelength in nm (Sentinel-2A).
    """

    token: str
    resolution: int
    wavelength: float


L2A_BANDS: tuple[S2Band, ...] = (
    S2Band("B01", 60, 442.7),
    S2Band("B02", 10, 492.4),
    S2Band("B03", 10, 559.8),
    S2Band("B04", 10, 664.6),
    S2Band("B05", 20, 704.1),
    S2Band("B06", 20, 740.5),
    S2Band("B07", 20, 782.8),
    S2Band("B08", 10, 832.8),
    S2Band("B8A", 20, 864.7),
    S2Band("B09", 60, 945.1),
    S2Band("B11", 20, 1613.7),
    S2Band("B12", 20, 2202.4),
)
"""The 12 bands of a Level-2A product, in wavelength order."""

BAND_SETS: dict[str, tuple[str, ...]] = {
    "s2": tuple(b.token for b in L2A_BANDS),
    "s2-10m": ("B02", "B03", "B04", "B08"),
}
"""Named band selections for ``bands=`` / ``--bands``."""

RESOLUTIONS = (10, 20, 60)
"""The native grids, metres."""


def parse_bands(bands: str) -> tuple[S2Band, ...]:
    """The bands named by ``bands``: a set name (``"s2"``, ``"s2-10m"``) or comma-separated L2A tokens.

    Raises:
        ParameterError: A name or token is unknown (B10 included: L2A products have no B10).
    """
    name = bands.strip().lower()
    tokens = BAND_SETS.get(name) or tuple(t.strip().upper() for t in bands.split(",") if t.strip())
    by_token = {b.token: b for b in L2A_BANDS}
    unknown = [t for t in tokens if t not in by_token]
    if not tokens or unknown:
        hint = " (L2A products have no B10, the cirrus band)" if "B10" in unknown else ""
        raise ParameterError(
            f"bands={bands!r} (--bands) is unknown{hint}; pass one of {sorted(BAND_SETS)!r} or L2A tokens separated "
            f"by commas, e.g. 'B02,B03,B04,B08', from {list(by_token)!r}"
        )
    if len(set(tokens)) != len(tokens):
        raise ParameterError(f"bands={bands!r} (--bands) names a band twice; list each band once")
    return tuple(b for b in L2A_BANDS if b.token in tokens)


@dataclass(frozen=True)
class TileGrid:
    """One native grid of the tile.

    Attributes:
        resolution: Pixel side in metres.
        size: Pixels per side.
    """

    resolution: int
    size: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.size, self.size)

    @property
    def transform(self) -> Affine:
        """North-up affine transform; the top-left corner is :data:`ORIGIN` for every grid."""
        return Affine(float(self.resolution), 0.0, ORIGIN[0], 0.0, -float(self.resolution), ORIGIN[1])

    def xs(self, col0: int, width: int) -> NDArray[np.float64]:
        """Pixel-centre x of columns ``col0 .. col0 + width``, metres from the tile's left edge."""
        out: NDArray[np.float64] = (np.arange(col0, col0 + width, dtype=np.float64) + 0.5) * self.resolution
        return out

    def ys(self, row0: int, height: int) -> NDArray[np.float64]:
        """Pixel-centre y of rows ``row0 .. row0 + height``, metres down from the tile's top edge."""
        out: NDArray[np.float64] = (np.arange(row0, row0 + height, dtype=np.float64) + 0.5) * self.resolution
        return out

    def windows(self, block: int) -> list[tuple[int, int, int, int]]:
        """``(row0, col0, height, width)`` of the blocks of side ``block`` covering the grid, row by row."""
        starts = range(0, self.size, block)
        return [(r, c, min(block, self.size - r), min(block, self.size - c)) for r in starts for c in starts]


@dataclass(frozen=True)
class TileParams:
    """Validated parameters of a synthetic tile.

    Attributes:
        seed: Random seed (non-negative).
        size: Side of the 10 m grid in pixels (a multiple of 6, >= 60; 10980 for a whole tile).
        months: Number of monthly dates (>= 2).
        start: First date (the first day of a month).
        bands: The bands written, in wavelength order.
        block: Side of the blocks generated and written at a time, pixels of each grid (a multiple of 256).
        events_per_km2: Density of change events.
    """

    seed: int
    size: int
    months: int
    start: pd.Timestamp
    bands: tuple[S2Band, ...]
    block: int
    events_per_km2: float

    @classmethod
    def validate(
        cls,
        seed: int = 0,
        size: int = 10980,
        months: int = 24,
        *,
        start: str | pd.Timestamp = "2018-01-01",
        bands: str = "s2",
        block: int = 1024,
        events_per_km2: float = 0.25,
    ) -> TileParams:
        """Check the parameters.

        Raises:
            ParameterError: A parameter is out of range; the message names it and the accepted values.
        """
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
            raise ParameterError(f"seed={seed!r} (--seed) must be a non-negative integer")
        if not isinstance(size, int | np.integer) or size < MIN_SIZE or size % 6:
            lower, upper = max(MIN_SIZE, 6 * (int(size) // 6)), max(MIN_SIZE, 6 * math.ceil(int(size) / 6))
            fix = f"use {lower} or {upper}" if lower != upper else f"use {lower}"
            raise ParameterError(
                f"size={size!r} (--size) must be a multiple of 6 and at least {MIN_SIZE}: the 20 m and 60 m bands "
                f"are size/2 and size/6 px on the same extent; {fix} (a whole Sentinel-2 tile is 10980)"
            )
        if not isinstance(months, int | np.integer) or not 2 <= months <= 600:
            raise ParameterError(f"months={months!r} (--months) is out of range; use an integer from 2 to 600")
        if not isinstance(block, int | np.integer) or block < 256 or block % 256:
            raise ParameterError(f"block={block!r} (--block) must be a multiple of 256 pixels, e.g. 512 or 1024")
        if not 0 <= events_per_km2 <= 10:
            raise ParameterError(f"events_per_km2={events_per_km2!r} must be between 0 and 10")
        try:
            first = pd.Timestamp(start)
        except (ValueError, TypeError) as err:
            raise ParameterError(f"start={start!r} (--start) is not a date; pass e.g. '2018-01-01'") from err
        if first.day != 1 or first != first.normalize():
            raise ParameterError(f"start={start!r} (--start) must be the first day of a month, e.g. '2018-01-01'")
        return cls(int(seed), int(size), int(months), first, parse_bands(bands), int(block), float(events_per_km2))

    @property
    def dates(self) -> pd.DatetimeIndex:
        """The monthly dates (first day of each month)."""
        return pd.date_range(self.start, periods=self.months, freq="MS").as_unit("ns")

    @property
    def extent_m(self) -> float:
        """Side of the tile in metres."""
        return 10.0 * self.size

    def grid(self, resolution: int) -> TileGrid:
        """The native grid of ``resolution`` metres."""
        return TileGrid(resolution, self.size * 10 // resolution)

    def tokens_at(self, resolution: int) -> tuple[str, ...]:
        """Tokens of the selected bands on the ``resolution`` grid (plus ``SCL`` on the 20 m grid)."""
        tokens = tuple(b.token for b in self.bands if b.resolution == resolution)
        return (*tokens, "SCL") if resolution == 20 else tokens


def band_path(root: Path, token: str, date: pd.Timestamp) -> Path:
    """``root/<PREFIX>_<token>_<YYYY-MM-DD>.tif``."""
    return root / f"{PREFIX}_{token}_{date:%Y-%m-%d}.tif"
