"""Clay v1.5: the wavelength-aware in-domain foundation model (``clay``, and the tiny ``clay_test``).

``create_encoder("clay", weights=None | PATH | "random", bands=[BandInfo, ...], gsd=..., platform=...)``.

- **Weights**: by default the official Lightning checkpoint ``v1.5/clay-v1.5.ckpt`` of the Hugging Face repo
  ``made-with-clay/Clay`` (about 5 GB: encoder, decoder and teacher; only ``model.encoder.*`` is kept and it must
  load strictly). ``weights=PATH`` takes a local copy of it (or a plain encoder state dict / safetensors file),
  ``weights="random"`` a random initialisation. The checkpoint is read with ``torch.load(weights_only=True)``,
  memory-mapped; Lightning metadata that ``weights_only`` refuses (hyper-parameter objects) is replaced by inert
  stand-ins and discarded, never executed (:func:`~changescope.encoders.clay_model.read_clay_state_dict`).
- **Bands**: any optical bands with known centre wavelengths (micrometres, Clay's unit): the patch kernel is
  generated from them. The encoder's :attr:`~changescope.encoders.base.Encoder.meta` lists exactly these bands.
- **Normalisation**: Clay standardises digital numbers with per-platform statistics (its ``metadata.yaml``).
  changescope works in reflectance, so each statistic is mapped back through the platform's DN scale:
  ``mean_r = (mean_dn - offset) / gain`` and ``std_r = std_dn / gain`` (see :data:`CLAY_PLATFORMS`), then each
  series band takes the statistics of the platform band nearest in wavelength. ``platform=None`` picks one from the
  GSD (<= 1.5 m NAIP, <= 6 m PlanetScope, <= 15 m Sentinel-2 L2A, else Landsat C2 L2).
- **Metadata tokens**: Clay adds a time code (week and hour of the acquisition) and a location code (lat/lon) to
  every patch. Both default to zeros, Clay's "unknown" value, so embeddings depend on pixels only; pass
  ``dates=``/``latlon=`` to :meth:`ClayEncoder.feature_map` (or ``latlon=`` at creation) to use them.
- **Outputs**: :meth:`ClayEncoder.feature_map` gives the patch tokens ``(N, D, H / 8, W / 8)``;
  :meth:`ClayEncoder.encode` their mean (``pool="mean"``, default) or the CLS token (``pool="cls"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
import torch

from changescope.encoders.base import ChannelMismatchError, Encoder
from changescope.encoders.catalog import CLAY_META, CLAY_TEST_META
from changescope.encoders.clay_model import CLAY_CONFIGS, ClayConfig, ClayEncoderNet, load_clay_weights
from changescope.encoders.meta import BandSpec, EncoderMeta, Normalization
from changescope.encoders.weights import resolve_weights
from changescope.errors import BandMismatchError, ParameterError
from changescope.series import BandInfo

__all__ = [
    "CLAY_META",
    "CLAY_PLATFORMS",
    "CLAY_TEST_META",
    "ClayBand",
    "ClayEncoder",
    "ClayPlatform",
    "clay_latlon_code",
    "clay_time_code",
    "create_clay",
]

ClayPool = Literal["mean", "cls"]


@dataclass(frozen=True)
class ClayBand:
    """One band of a Clay platform: name, centre wavelength (micrometres) and DN statistics."""

    name: str
    wavelength: float
    mean: float
    std: float


@dataclass(frozen=True)
class ClayPlatform:
    """A sensor in Clay's ``metadata.yaml`` and how its digital numbers relate to reflectance.

    Attributes:
        name: Clay's platform key.
        gsd: Native ground sample distance in metres.
        gain: ``dn = reflectance * gain + offset``.
        offset: See ``gain``.
        bands: Bands with Clay's wavelengths and DN mean/std.
    """

    name: str
    gsd: float
    gain: float
    offset: float
    bands: tuple[ClayBand, ...]

    def reflectance_stats(self, wavelength: float) -> tuple[float, float, float]:
        """``(mean, std, distance_um)`` in reflectance units of the band nearest to ``wavelength``."""
        band = min(self.bands, key=lambda b: abs(b.wavelength - wavelength))
        return (band.mean - self.offset) / self.gain, band.std / self.gain, abs(band.wavelength - wavelength)


def _bands(rows: Sequence[tuple[str, float, float, float]]) -> tuple[ClayBand, ...]:
    return tuple(ClayBand(*row) for row in rows)


# fmt: off
CLAY_PLATFORMS: dict[str, ClayPlatform] = {
    # Values from Clay-foundation/model claymodel/configs/metadata.yaml (v1.5), DN units.
    # Sentinel-2 L2A: DN = reflectance * 10000 (no BOA offset assumed).
    "sentinel-2-l2a": ClayPlatform(
        "sentinel-2-l2a", 10.0, 10000.0, 0.0,
        _bands([("blue", 0.493, 1105.0, 1809.0), ("green", 0.56, 1355.0, 1757.0), ("red", 0.665, 1552.0, 1888.0),
                ("rededge1", 0.704, 1887.0, 1870.0), ("rededge2", 0.74, 2422.0, 1732.0),
                ("rededge3", 0.783, 2630.0, 1697.0), ("nir", 0.842, 2743.0, 1742.0), ("nir08", 0.865, 2785.0, 1648.0),
                ("swir16", 1.61, 2388.0, 1470.0), ("swir22", 2.19, 1835.0, 1379.0)]),
    ),
    # PlanetScope SR: DN = reflectance * 10000.
    "planetscope-sr": ClayPlatform(
        "planetscope-sr", 5.0, 10000.0, 0.0,
        _bands([("coastal_blue", 0.443, 1720.0, 747.0), ("blue", 0.490, 1715.0, 698.0),
                ("green_i", 0.531, 1913.0, 739.0), ("green", 0.565, 2088.0, 768.0), ("yellow", 0.610, 2274.0, 849.0),
                ("red", 0.665, 2290.0, 868.0), ("rededge", 0.705, 2613.0, 849.0), ("nir", 0.865, 3970.0, 914.0)]),
    ),
    # Landsat Collection 2 Level-2 SR: reflectance = DN * 2.75e-5 - 0.2.
    "landsat-c2l2-sr": ClayPlatform(
        "landsat-c2l2-sr", 30.0, 1 / 2.75e-5, 0.2 / 2.75e-5,
        _bands([("red", 0.65, 13705.0, 9578.0), ("green", 0.56, 13310.0, 9408.0), ("blue", 0.48, 12474.0, 10144.0),
                ("nir08", 0.86, 17801.0, 8277.0), ("swir16", 1.6, 14615.0, 5300.0), ("swir22", 2.2, 12701.0, 4522.0)]),
    ),
    # Landsat Collection 2 Level-1 (TOA): reflectance = DN * 2e-5 - 0.1.
    "landsat-c2l1": ClayPlatform(
        "landsat-c2l1", 30.0, 1 / 2e-5, 0.1 / 2e-5,
        _bands([("red", 0.65, 10678.0, 6025.0), ("green", 0.56, 10563.0, 5411.0), ("blue", 0.48, 11083.0, 5468.0),
                ("nir08", 0.86, 14792.0, 6746.0), ("swir16", 1.6, 12276.0, 5897.0), ("swir22", 2.2, 10114.0, 4850.0)]),
    ),
    # NAIP: 8-bit DN without a radiometric scale; reflectance * 255 is an approximation.
    "naip": ClayPlatform(
        "naip", 1.0, 255.0, 0.0,
        _bands([("red", 0.65, 110.16, 47.23), ("green", 0.56, 115.41, 39.82), ("blue", 0.48, 98.15, 35.43),
                ("nir", 0.842, 139.04, 49.86)]),
    ),
    # LINZ aerial: 8-bit DN, same approximation as NAIP.
    "linz": ClayPlatform(
        "linz", 0.5, 255.0, 0.0,
        _bands([("red", 0.635, 89.96, 41.83), ("green", 0.555, 99.46, 36.96), ("blue", 0.465, 89.51, 31.45)]),
    ),
    # MODIS surface reflectance: DN = reflectance * 10000.
    "modis": ClayPlatform(
        "modis", 500.0, 10000.0, 0.0,
        _bands([("sur_refl_b01", 0.645, 1072.0, 1643.0), ("sur_refl_b02", 0.858, 1624.0, 1878.0),
                ("sur_refl_b03", 0.469, 931.0, 1449.0), ("sur_refl_b04", 0.555, 1023.0, 1538.0),
                ("sur_refl_b05", 1.240, 1599.0, 1763.0), ("sur_refl_b06", 1.640, 1404.0, 1618.0),
                ("sur_refl_b07", 2.130, 1051.0, 1396.0)]),
    ),
}
# fmt: on
"""Clay's optical platforms (Sentinel-1 is left out: its "wavelengths" are synthetic SAR codes)."""

_S2_NAMES = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")

_MAX_WAVE_GAP = 0.1
"""Largest wavelength gap (micrometres) between a series band and the platform band whose statistics it takes."""


def _platform_for_gsd(gsd: float | None) -> str:
    if gsd is None or 6.0 < gsd <= 15.0:
        return "sentinel-2-l2a"
    if gsd <= 1.5:
        return "naip"
    if gsd <= 6.0:
        return "planetscope-sr"
    return "landsat-c2l2-sr"


def clay_time_code(dates: Sequence[Any]) -> torch.Tensor:
    """Clay's time code: ``(N, 4)`` ``[sin week, cos week, sin hour, cos hour]`` (ISO week * 2 pi / 52, hour / 24).

    Args:
        dates: Anything :class:`numpy.datetime64` or :class:`datetime.datetime` accepts, one per tile.
    """
    rows = []
    for value in dates:
        when = value if isinstance(value, datetime) else np.datetime64(value, "s").astype(datetime)
        week = when.isocalendar()[1] * 2 * math.pi / 52
        hour = when.hour * 2 * math.pi / 24
        rows.append([math.sin(week), math.cos(week), math.sin(hour), math.cos(hour)])
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def clay_latlon_code(lat: float | Sequence[float], lon: float | Sequence[float]) -> torch.Tensor:
    """Clay's location code: ``(N, 4)`` ``[sin lat, cos lat, sin lon, cos lon]`` from degrees."""
    la = torch.deg2rad(torch.as_tensor(lat, dtype=torch.float64)).reshape(-1)
    lo = torch.deg2rad(torch.as_tensor(lon, dtype=torch.float64)).reshape(-1)
    return torch.stack((la.sin(), la.cos(), lo.sin(), lo.cos()), dim=1).float()


def _as_band_info(band: BandInfo | BandSpec | str) -> BandInfo:
    if isinstance(band, BandInfo):
        return band
    if isinstance(band, str):
        return BandInfo.from_name(band)
    return BandInfo(band.name, band.wavelength)


def _as_band_infos(bands: Sequence[BandInfo | BandSpec | str] | None, name: str) -> list[BandInfo]:
    if bands is None:  # Clay's Sentinel-2 bands and wavelengths, under the Sentinel-2 band names
        s2 = CLAY_PLATFORMS["sentinel-2-l2a"].bands
        return [BandInfo(n, b.wavelength) for n, b in zip(_S2_NAMES, s2, strict=True)]
    infos = [_as_band_info(b) for b in bands]
    if not infos:
        raise ParameterError(
            f"bands=[] for encoder {name!r}; give the series bands (e.g. changescope.series.band_infos(ds))"
        )
    missing = [b.name for b in infos if b.wavelength is None or not math.isfinite(b.wavelength)]
    if missing:
        raise BandMismatchError(
            f"encoder {name!r} generates its patch kernel from band wavelengths, but bands {missing!r} have none; "
            "give BandInfo(name, wavelength=...) in micrometres, or use names from series.KNOWN_WAVELENGTHS"
        )
    return infos


def _normalization(infos: Sequence[BandInfo], platform: ClayPlatform, name: str) -> Normalization:
    means, stds = [], []
    for band in infos:
        mean, std, gap = platform.reflectance_stats(band.wavelength if band.wavelength is not None else math.inf)
        if gap > _MAX_WAVE_GAP:
            raise BandMismatchError(
                f"band {band.name!r} ({band.wavelength} um) is {gap:.3f} um from every band of Clay platform "
                f"{platform.name!r} ({[(b.name, b.wavelength) for b in platform.bands]!r}); pass platform= one of "
                f"{sorted(CLAY_PLATFORMS)!r} or normalization=Normalization('meanstd', mean, std) for encoder {name!r}"
            )
        means.append(mean)
        stds.append(std)
    return Normalization("meanstd", tuple(means), tuple(stds))


class ClayEncoder(Encoder):
    """Clay v1.5 behind the changescope :class:`~changescope.encoders.base.Encoder` interface.

    Build it with ``create_encoder("clay", ...)``; the arguments are those of the registered factory.
    """

    def __init__(
        self,
        meta: EncoderMeta,
        net: ClayEncoderNet,
        waves: Sequence[float],
        gsd: float,
        *,
        pool: ClayPool = "mean",
        latlon: tuple[float, float] | None = None,
        weights_id: str = "random",
    ) -> None:
        self.meta = meta
        self.net = net.eval()
        self.waves = torch.tensor(list(waves), dtype=torch.float32)
        self.gsd = float(gsd)
        self.pool: ClayPool = pool
        self.latlon = latlon
        self.weights_id = weights_id

    @property
    def device(self) -> torch.device:
        """Device of the network's parameters."""
        return self.net.cls_token.device

    def to(self, device: str | torch.device) -> ClayEncoder:
        """Move the network to ``device``."""
        self.net.to(device)
        return self

    def _meta_codes(
        self, n: int, dates: Sequence[Any] | None, latlon: tuple[float, float] | torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        time = torch.zeros(n, 4) if dates is None else clay_time_code(dates)
        where = latlon if latlon is not None else self.latlon
        if where is None:
            loc = torch.zeros(n, 4)
        else:
            pairs = torch.as_tensor(where, dtype=torch.float64).reshape(-1, 2)
            loc = clay_latlon_code(pairs[:, 0].tolist(), pairs[:, 1].tolist())
        if time.shape[0] == 1:
            time = time.expand(n, -1)
        if loc.shape[0] == 1:
            loc = loc.expand(n, -1)
        if time.shape[0] != n or loc.shape[0] != n:
            raise ParameterError(
                f"got {time.shape[0]} dates and {loc.shape[0]} locations for {n} tiles; "
                "give one per tile or one for all"
            )
        return time, loc

    def tokens(
        self,
        tiles: torch.Tensor,
        *,
        dates: Sequence[Any] | None = None,
        latlon: tuple[float, float] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """All output tokens.

        Args:
            tiles: ``(N, C, H, W)`` normalised input in :attr:`meta` band order, ``H`` and ``W`` multiples of 8.
            dates: One acquisition date per tile (or one for all); ``None`` = Clay's zero code.
            latlon: ``(lat, lon)`` in degrees, or ``(N, 2)``; ``None`` = the encoder's ``latlon`` or zeros.

        Returns:
            ``(N, 1 + h * w, D)``: CLS token, then patch tokens in row-major order.

        Raises:
            BandMismatchError: ``C`` differs from the encoder's band count.
            ParameterError: ``H`` or ``W`` is not a multiple of the patch size.
        """
        if tiles.ndim != 4 or tiles.shape[1] != len(self.waves):
            raise ChannelMismatchError(
                f"tiles have shape {tuple(tiles.shape)!r} but encoder {self.meta.name!r} was built for "
                f"{len(self.waves)} bands {[b.name for b in self.meta.bands]!r}; create it with bands= of this series"
            )
        p = self.patch_size
        if tiles.shape[-2] % p or tiles.shape[-1] % p:
            raise ParameterError(f"tile size {tuple(tiles.shape[-2:])!r} is not a multiple of the patch size {p}")
        time, loc = self._meta_codes(tiles.shape[0], dates, latlon)
        dev = self.device
        with torch.inference_mode():
            out: torch.Tensor = self.net(tiles.to(dev, torch.float32), self.waves, self.gsd, time.to(dev), loc.to(dev))
        return out

    def feature_map(
        self,
        tiles: torch.Tensor,
        *,
        dates: Sequence[Any] | None = None,
        latlon: tuple[float, float] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Patch tokens as a dense map.

        Args:
            tiles: ``(N, C, H, W)`` normalised input (see :meth:`tokens`).
            dates: Optional acquisition dates (see :meth:`tokens`).
            latlon: Optional location (see :meth:`tokens`).

        Returns:
            ``(N, D, H / 8, W / 8)``.
        """
        h, w = tiles.shape[-2] // self.patch_size, tiles.shape[-1] // self.patch_size
        tok = self.tokens(tiles, dates=dates, latlon=latlon)[:, 1:]
        return tok.transpose(1, 2).reshape(tok.shape[0], tok.shape[2], h, w)

    def encode(
        self,
        tiles: torch.Tensor,
        *,
        dates: Sequence[Any] | None = None,
        latlon: tuple[float, float] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled features ``(N, D)``: the mean patch token (``pool="mean"``) or the CLS token (``pool="cls"``)."""
        tok = self.tokens(tiles, dates=dates, latlon=latlon)
        return tok[:, 0] if self.pool == "cls" else tok[:, 1:].mean(dim=1)


def create_clay(
    meta: EncoderMeta,
    weights: str | None = None,
    *,
    bands: Sequence[BandInfo | BandSpec | str] | None = None,
    gsd: float | None = None,
    platform: str | None = None,
    normalization: Normalization | None = None,
    pool: ClayPool = "mean",
    latlon: tuple[float, float] | None = None,
    device: str | torch.device = "cpu",
) -> ClayEncoder:
    """Build a Clay encoder.

    Args:
        meta: Registered metadata.
        weights: ``None`` (default source), a local checkpoint path, a Hugging Face repo id, a weights tag
            (``clay.v1_5``), or ``"random"``.
        bands: The series bands (names or :class:`BandInfo` with wavelengths); ``None`` = Clay's 10 Sentinel-2
            bands.
        gsd: Metres per pixel of the series; ``None`` = the platform's.
        platform: Clay platform whose statistics normalise the bands (see :data:`CLAY_PLATFORMS`); ``None`` = from
            ``gsd``.
        normalization: Overrides the derived normalisation (reflectance units, one mean/std per band).
        pool: ``"mean"`` of patch tokens or ``"cls"`` token for :meth:`ClayEncoder.encode`.
        latlon: Default ``(lat, lon)`` in degrees for the location code; ``None`` = zeros.
        device: Torch device.

    Raises:
        ParameterError: Unknown ``platform`` or ``pool``, or a bad ``normalization``/``gsd``.
        BandMismatchError: A band has no wavelength or is far from every band of the platform.
        WeightsNotFoundError: Default weights are not cached and the session is offline.
        CorruptFileError: The checkpoint does not hold this encoder's weights.
    """
    if pool not in ("mean", "cls"):
        raise ParameterError(f"pool={pool!r} is not valid; choose 'mean' or 'cls'")
    if gsd is not None and not gsd > 0:
        raise ParameterError(f"gsd={gsd!r} must be a positive number of metres per pixel")
    pname = platform or _platform_for_gsd(gsd)
    if pname not in CLAY_PLATFORMS:
        raise ParameterError(f"platform={pname!r} is unknown; choose one of {sorted(CLAY_PLATFORMS)!r}")
    infos = _as_band_infos(bands, meta.name)
    norm = normalization or _normalization(infos, CLAY_PLATFORMS[pname], meta.name)
    if norm.mean and (len(norm.mean) != len(infos) or len(norm.std) != len(infos)):
        raise ParameterError(f"normalization has {len(norm.mean)} means for {len(infos)} bands; give one per band")
    cfg: ClayConfig = CLAY_CONFIGS[meta.name]
    if weights == "random" or (weights is None and meta.weights.kind == "none"):
        net, weights_id = ClayEncoderNet(cfg), "random"
    else:
        path = resolve_weights(meta.weights, meta.name, weights)  # before building: fails fast when offline
        net = load_clay_weights(ClayEncoderNet(cfg), path, meta.name)
        weights_id = str(weights) if weights is not None else f"{meta.weights.ref}/{meta.weights.filename}"
    the_gsd = float(gsd) if gsd is not None else CLAY_PLATFORMS[pname].gsd
    instance_meta = replace(
        meta,
        bands=tuple(BandSpec(b.name, b.wavelength) for b in infos),
        gsd=the_gsd,
        normalization=norm,
        description=f"{meta.description} [{pname} statistics]",
    )
    waves = [float(b.wavelength) for b in infos if b.wavelength is not None]
    enc = ClayEncoder(instance_meta, net, waves, the_gsd, pool=pool, latlon=latlon, weights_id=weights_id)
    return enc.to(device)
