"""Seeded synthetic optical-before / SAR-after disaster pairs, written in the BRIGHT layouts.

Each pair is one square scene drawn from the landscape generator (:mod:`changescope.synthetic.landscape`), made
denser in buildings by a suburb (a second street grid of :func:`~changescope.synthetic.landscape.building_pattern`
lots over the farmland of a disc of radius 0.38 x side). Building footprints are the connected roof areas.

- **Disaster** (from the event name): ``*-earthquake`` damages buildings with a probability that falls off with
  the distance from a random epicentre (Gaussian, sigma 0.35 x side; at most 75 %); ``*-flood`` floods the lowest
  22 % of a smooth terrain field and damages (80 %) or destroys (20 %) the buildings standing in it; ``*-volcano``
  lays a curving lava flow (0.12 x side wide) that destroys the buildings under it and damages half of those within
  6 px. Any other event behaves like an earthquake. 3 % of the remaining buildings are damaged at random.
- **Optical (pre-event)**: the July reflectance of the landscape (:func:`~changescope.synthetic.radiometry
  .render_scene`), bands red, green, blue, as uint8 (reflectance x 255 / 0.35, clipped to 1..255).
- **SAR (post-event)**: backscatter sigma0 per surface (water 0.008 and flood 0.012 are dark, roofs 0.35, forest
  0.22-0.25, fields 0.09-0.14, lava 0.3), modulated by the landscape texture; the sensor looks from the west, so an
  intact building gets a bright double-bounce line (x 12) on its western edge, a layover-like copy of its roof
  shifted west by its height (1-4 px) and a radar shadow (x 0.1) of the same length east of it. Damaged buildings
  are partly collapsed: a compact part of the roof (20-60 %, drawn per building from a smooth random field) becomes
  rubble, the rest keeps its roof but a third of the double bounce, half the layover and shadow; destroyed ones
  become rubble whole (rough texture, lognormal backscatter) without double bounce, layover or shadow.
  Multiplicative gamma speckle (3 looks) is applied to the intensity; the file holds the amplitude as uint8
  (255 x sqrt(intensity) / 1.5, clipped to 1..255).
- **Target**: 0 background, 1 intact, 2 damaged, 3 destroyed (buildings only, as in BRIGHT); ``change`` adds the
  flooded and lava-covered ground.

Pixels are 0.5 m in UTM 33N (EPSG:32633); scene ``i`` lies 2 km east of scene ``i - 1``. The same ``seed`` gives the
same arrays and byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from numpy.typing import NDArray
from scipy import ndimage

from changescope.errors import ParameterError
from changescope.io.writers import atomic_path, write_geotiff
from changescope.multimodal.layout import DFC25_DIR, SPLIT_FILES, bright_paths, parse_id
from changescope.synthetic.fields import rotated_coords, smooth_noise
from changescope.synthetic.landscape import Surface, building_pattern, make_landscape
from changescope.synthetic.radiometry import CROP_NAMES, render_scene
from changescope.types import PathLike

__all__ = ["DEFAULT_EVENTS", "SYNTHETIC_CRS", "SyntheticPair", "make_pair", "write_bright"]

DEFAULT_EVENTS: tuple[str, ...] = ("turkey-earthquake", "libya-flood", "la_palma-volcano")
"""Events cycled through by :func:`write_bright` (one of each disaster kind; the last has a ``_`` in its name)."""
SYNTHETIC_CRS = "EPSG:32633"
PIXEL = 0.5
_LOOKS = 3.0
_SIGMA = np.zeros(len(Surface), dtype=np.float32)
_SIGMA[[Surface.ROOF, Surface.ASPHALT, Surface.CROP, Surface.DECIDUOUS, Surface.CONIFER, Surface.GRASS]] = (
    0.35,
    0.04,
    0.14,
    0.22,
    0.25,
    0.10,
)
_SIGMA[[Surface.WETLAND, Surface.SOIL, Surface.WATER, Surface.CLEARED, Surface.FLOOD]] = (0.07, 0.09, 0.008, 0.1, 0.012)
_LAVA_SIGMA = 0.3


@dataclass(frozen=True)
class SyntheticPair:
    """One synthetic scene (the module docstring gives the rules).

    Attributes:
        id: BRIGHT id ``{event}_{8 digits}``.
        event: Event name.
        optical: ``(3, h, w)`` uint8 pre-event red, green, blue.
        sar: ``(1, h, w)`` uint8 post-event SAR amplitude.
        target: ``(h, w)`` uint8 damage classes 0..3.
        change: ``(h, w)`` changed ground: damaged or destroyed buildings, flood, lava.
        crs: CRS of the scene.
        transform: Its affine transform.
    """

    id: str
    event: str
    optical: NDArray[np.uint8]
    sar: NDArray[np.uint8]
    target: NDArray[np.uint8]
    change: NDArray[np.bool_]
    crs: str
    transform: Affine


def _suburb(rng: np.random.Generator, surface: NDArray[np.uint8], obj: NDArray[np.int32], n_obj: int) -> None:
    """Cover the farmland of a disc with a second street grid of houses (in place)."""
    size = surface.shape[0]
    cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
    yy, xx = np.ogrid[:size, :size]
    farmland = np.isin(surface, [Surface.CROP, Surface.GRASS, Surface.SOIL])
    area = (np.hypot(yy - cy, xx - cx) < 0.38 * size) & farmland
    u, v = rotated_coords(size, size, rng.uniform(0, np.pi / 2))
    pattern, lot, _ = building_pattern(
        rng, u[area], v[area], block=max(24.0, size / 12), street=4.0, yard=Surface.GRASS, park_fraction=0.2
    )
    surface[area] = pattern
    obj[area] = np.where(pattern == Surface.ROOF, 1 + lot % max(1, n_obj - 1), 0)


def _damage(
    rng: np.random.Generator, kind: str, buildings: NDArray[np.int32], n: int, size: int
) -> tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.bool_]]:
    """Damage class per building (index 0 = no building) and the flood and lava masks."""
    cls = np.ones(n + 1, dtype=np.uint8)
    cls[0] = 0
    flood = np.zeros((size, size), dtype=bool)
    lava = np.zeros((size, size), dtype=bool)
    ids = np.arange(1, n + 1)
    if n:
        centres = np.array(ndimage.center_of_mass(np.ones_like(buildings), buildings, ids)).reshape(n, 2)
    else:
        centres = np.zeros((0, 2))
    draw = rng.random(n)
    if kind == "flood":
        terrain = smooth_noise(rng, (size, size), size / 10)
        flood = terrain < np.quantile(terrain, 0.22)
        share = ndimage.mean(flood, buildings, ids) if n else np.zeros(0)
        hit = np.asarray(share) > 0.3
        cls[1:][hit] = np.where(draw[hit] < 0.2, 3, 2)
    elif kind == "volcano":
        u, v = rotated_coords(size, size, rng.uniform(0, np.pi), y0=-size / 2, x0=-size / 2)
        wiggle = 0.08 * size * np.sin(2 * np.pi * u / (0.9 * size) + rng.uniform(0, 2 * np.pi))
        dist = np.abs(v - wiggle - rng.uniform(-0.2, 0.2) * size)
        lava = dist < 0.06 * size
        near = dist < 0.06 * size + 6
        in_lava = np.asarray(ndimage.maximum(lava, buildings, ids), dtype=bool) if n else np.zeros(0, bool)
        in_near = np.asarray(ndimage.maximum(near, buildings, ids), dtype=bool) if n else np.zeros(0, bool)
        cls[1:][in_near & (draw < 0.5)] = 2
        cls[1:][in_lava] = 3
    else:
        epicentre = rng.uniform(0.2 * size, 0.8 * size, 2)
        d = np.hypot(*(centres - epicentre).T) / (0.35 * size)
        p = 0.75 * np.exp(-(d**2))
        cls[1:][draw < p] = 2
        cls[1:][draw < 0.45 * p] = 3
    stray = (cls[1:] == 1) & (rng.random(n) < 0.03)
    cls[1:][stray] = 2
    return cls, flood, lava


def _collapsed(rng: np.random.Generator, buildings: NDArray[np.int32], cls: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """The collapsed parts of damaged roofs: per building, the top 20-60 % of a smooth field (3 px) over its roof."""
    pixel_cls = cls[buildings]
    field = smooth_noise(rng, buildings.shape, 3.0)
    share = rng.uniform(0.2, 0.6, len(cls))
    damaged = np.flatnonzero(pixel_cls.ravel() == 2)
    if not damaged.size:
        return np.zeros(buildings.shape, dtype=bool)
    ids = buildings.ravel()[damaged]
    order = np.lexsort((field.ravel()[damaged], ids))
    sorted_ids = ids[order]
    starts = np.searchsorted(sorted_ids, sorted_ids, side="left")
    counts = np.searchsorted(sorted_ids, sorted_ids, side="right") - starts
    rank = (np.arange(order.size) - starts + 0.5) / counts
    out = np.zeros(buildings.size, dtype=bool)
    out[damaged[order]] = rank > 1.0 - share[sorted_ids]
    return out.reshape(buildings.shape)


def _shift_west(mask: NDArray[np.bool_], k: int) -> NDArray[np.bool_]:
    out = np.zeros_like(mask)
    out[:, : mask.shape[1] - k] = mask[:, k:]
    return out


def _sar(
    rng: np.random.Generator,
    surface: NDArray[np.uint8],
    texture: NDArray[np.float32],
    buildings: NDArray[np.int32],
    cls: NDArray[np.uint8],
    lava: NDArray[np.bool_],
) -> NDArray[np.uint8]:
    """Post-event SAR amplitude (the module docstring)."""
    sigma = _SIGMA[surface] * (1 + 0.2 * texture[1] + 0.1 * texture[0]).clip(0.3, None)
    sigma[lava] = _LAVA_SIGMA * np.exp(0.5 * texture[0][lava])
    pixel_cls = cls[buildings]
    height = rng.integers(1, 5, len(cls))[buildings]
    roof = buildings > 0
    west_edge = roof & ~np.pad(roof, ((0, 0), (1, 0)))[:, :-1]
    for k in range(1, 5):
        tall = roof & (height == k)
        for c, gain, scale in ((1, 1.0, 1.0), (2, 0.5, 0.5)):
            sel = tall & (pixel_cls == c)
            reach = max(1, round(k * scale))
            layover = _shift_west(sel, reach) & ~roof
            sigma[layover] += gain * 0.3
            shadow = np.zeros_like(sel)
            for j in range(1, reach + 1):
                shadow |= np.pad(sel, ((0, 0), (j, 0)))[:, :-j]
            sigma[shadow & ~roof & ~layover] *= 0.1
    collapsed = _collapsed(rng, buildings, cls)
    sigma[west_edge & (pixel_cls == 1)] *= 12.0
    sigma[west_edge & (pixel_cls == 2) & ~collapsed] *= 4.0
    rubble = (pixel_cls == 3) | collapsed
    sigma[rubble] = 0.2 * np.exp(0.8 * rng.standard_normal(int(rubble.sum())).astype(np.float32))
    intensity = sigma * rng.gamma(_LOOKS, 1.0 / _LOOKS, sigma.shape).astype(np.float32)
    amplitude = np.sqrt(intensity) * (255.0 / 1.5)
    out: NDArray[np.uint8] = np.clip(np.rint(amplitude), 1, 255).astype(np.uint8)[None]
    return out


def _kind(event: str) -> str:
    for kind in ("flood", "volcano", "earthquake"):
        if event.endswith(kind):
            return kind
    return "earthquake"


def make_pair(seed: int, *, size: int = 256, event: str = "turkey-earthquake", index: int = 0) -> SyntheticPair:
    """Draw one synthetic optical/SAR scene (the module docstring gives the rules).

    Args:
        seed: Random seed of the data set.
        size: Side in pixels (at least 64).
        event: Event name; its ending picks the disaster (``-earthquake``, ``-flood``, ``-volcano``).
        index: Number of the scene in the data set (part of the seed and of the id).

    Returns:
        The scene.

    Raises:
        ParameterError: ``size < 64``, or ``event``/``index`` do not make a valid BRIGHT id.
    """
    if size < 64:
        raise ParameterError(f"size={size!r} is too small; synthetic scenes need at least 64 px")
    sample_id = f"{event}_{index:08d}"
    parse_id(sample_id)
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    land = make_landscape(rng, size, 1, len(CROP_NAMES))
    surface, obj = land.surface.copy(), land.obj.copy()
    _suburb(rng, surface, obj, len(land.obj_gain))
    reflectance = render_scene(land, surface, obj, month=6, year=0)
    optical = np.clip(np.rint(reflectance[[2, 1, 0]] * (255.0 / 0.35)), 1, 255).astype(np.uint8)
    labelled, n = ndimage.label(surface == Surface.ROOF)
    buildings = labelled.astype(np.int32)
    cls, flood, lava = _damage(rng, _kind(event), buildings, int(n), size)
    post_surface = surface.copy()
    post_surface[flood & (buildings == 0)] = Surface.FLOOD
    sar = _sar(rng, post_surface, land.texture, buildings, cls, lava)
    target = cls[buildings]
    change = (target > 1) | ((flood | lava) & (buildings == 0))
    transform = Affine(PIXEL, 0.0, 500_000.0 + 2_000.0 * index, 0.0, -PIXEL, 4_200_000.0)
    return SyntheticPair(sample_id, event, optical, sar, target, change, SYNTHETIC_CRS, transform)


def _write_list(path: Path, ids: Sequence[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def write_bright(
    root: PathLike,
    *,
    n: int = 6,
    size: int = 256,
    seed: int = 0,
    events: Sequence[str] = DEFAULT_EVENTS,
    layout: Literal["flat", "dfc25"] = "flat",
    shares: tuple[float, float] = (0.6, 0.2),
) -> list[SyntheticPair]:
    """Write ``n`` synthetic scenes as GeoTIFFs in a BRIGHT layout and return them.

    Scene ``i`` belongs to ``events[i % len(events)]``. In the ``"dfc25"`` layout the first ``shares[0]`` of the
    scenes form split ``train`` and the next ``shares[1]`` split ``val`` (both in ``train/``), the rest split
    ``test`` (in ``val/``, with targets), each with its split file.

    Args:
        root: Folder to write into (created); the flat layout goes directly in it, DFC25 in
            ``ROOT/dfc25_track2_trainval``.
        n: Number of scenes (at least 1; at least 3 for ``"dfc25"``).
        size: Side of each scene in pixels.
        seed: Random seed.
        events: Event names.
        layout: ``"flat"`` or ``"dfc25"``.
        shares: DFC25 shares of the train and val splits.

    Returns:
        The scenes, in order.

    Raises:
        ParameterError: A bad ``n``, ``layout`` or ``events``.
    """
    if layout not in ("flat", "dfc25"):
        raise ParameterError(f"layout={layout!r} is not a BRIGHT layout; choose 'flat' or 'dfc25'")
    if n < (3 if layout == "dfc25" else 1) or not events:
        raise ParameterError(f"n={n!r} scenes of {len(events)} events cannot fill the {layout!r} layout")
    pairs = [make_pair(seed, size=size, event=events[i % len(events)], index=i) for i in range(n)]
    base = Path(root) if layout == "flat" else Path(root) / DFC25_DIR
    n_train = max(1, round(shares[0] * n))
    n_val = max(1, min(n - n_train - 1, round(shares[1] * n)))
    split_ids: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, pair in enumerate(pairs):
        split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
        folder = base if layout == "flat" else base / ("val" if split == "test" else "train")
        split_ids[split].append(pair.id)
        pre, post, target = bright_paths(folder, pair.id)
        write_geotiff(pre, pair.optical, crs=pair.crs, transform=pair.transform)
        write_geotiff(post, pair.sar, crs=pair.crs, transform=pair.transform)
        write_geotiff(target, pair.target, crs=pair.crs, transform=pair.transform)
    if layout == "dfc25":
        for split, name in SPLIT_FILES.items():
            _write_list(base / name, split_ids[split])
    return pairs
