"""Where the AOIs of a DynamicEarthNet dataset lie: listing a root and resolving a path (and ``aoi=``) to one AOI.

See :mod:`changescope.io.dynamicearthnet` for the layout; the reader itself lives there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from changescope.errors import NoImagesFoundError, ParameterError
from changescope.io.raster import list_rasters

__all__ = [
    "IMAGE_FOLDER",
    "MASK_SUFFIX",
    "AoiRef",
    "find_dataset_root",
    "image_files",
    "label_files",
    "list_aois",
    "resolve_aoi",
]

IMAGE_FOLDER = "PF-SR"
MASK_SUFFIX = ".mask"


@dataclass(frozen=True)
class AoiRef:
    """One area of interest of a DynamicEarthNet dataset.

    Attributes:
        aoi: AOI id (the folder name above ``PF-SR``).
        zone: Zone folder under ``planet/`` (``None`` for an AOI folder outside a dataset root).
        tile: Tile folder between zone and AOI, ``None`` when the layout has no tile level.
        image_dir: The ``PF-SR`` folder of daily images.
        label_dir: Folder of the monthly label files, ``None`` when the AOI has none.
        n_images: Number of daily images.
        n_labels: Number of monthly label files.
    """

    aoi: str
    zone: str | None
    tile: str | None
    image_dir: Path
    label_dir: Path | None
    n_images: int
    n_labels: int

    @property
    def key(self) -> str:
        """``"zone/aoi"``, unique within a dataset root (accepted by ``aoi=``)."""
        return f"{self.zone}/{self.aoi}" if self.zone else self.aoi


def image_files(folder: Path, *, check_links: bool = True) -> list[Path]:
    """The daily images of a ``PF-SR`` folder (mask sidecars left out); empty when the folder does not exist.

    Raises:
        NoImagesFoundError: A ``.tif`` is a dangling symbolic link (``check_links``).
    """
    if not folder.is_dir():
        return []
    return [p for p in list_rasters(folder, check_links=check_links) if not p.stem.endswith(MASK_SUFFIX)]


def label_files(folder: Path | None, *, check_links: bool = True) -> list[Path]:
    """The monthly label files of a label folder; empty when there is none.

    Raises:
        NoImagesFoundError: A ``.tif`` is a dangling symbolic link (``check_links``).
    """
    if folder is None or not folder.is_dir():
        return []
    return list_rasters(folder, check_links=check_links)


def _label_dir(root: Path, zone: str, aoi: str) -> Path | None:
    folder = root / "labels" / f"{aoi}_{zone}" / "Labels" / "Raster" / f"{zone}-{aoi}"
    return folder if folder.is_dir() else None


def _aoi_ref(root: Path | None, image_dir: Path) -> AoiRef:
    zone: str | None = None
    tile: str | None = None
    aoi = image_dir.parent.name
    if root is not None:
        parts = image_dir.relative_to(root / "planet").parts
        zone = parts[0]
        tile = parts[1] if len(parts) == 4 else None
    label_dir = _label_dir(root, zone, aoi) if root is not None and zone is not None else None
    return AoiRef(
        aoi=aoi,
        zone=zone,
        tile=tile,
        image_dir=image_dir,
        label_dir=label_dir,
        n_images=len(image_files(image_dir, check_links=False)),
        n_labels=len(label_files(label_dir, check_links=False)),
    )


def find_dataset_root(path: Path) -> Path | None:
    """Return the dataset root (the folder holding ``planet/``) that ``path`` lies in, or ``None``."""
    p = Path(path).absolute()
    if (p / "planet").is_dir():
        return p
    for anc in p.parents:
        if anc.name == "planet" and anc.is_dir():
            return anc.parent
    return None


def list_aois(root: Path | str) -> list[AoiRef]:
    """List the AOIs of a DynamicEarthNet dataset root, sorted by zone, tile and id.

    Args:
        root: Folder holding ``planet/`` (and usually ``labels/``).

    Raises:
        NoImagesFoundError: ``root`` has no ``planet/`` folder.
    """
    base = Path(root)
    if not (base / "planet").is_dir():
        raise NoImagesFoundError(
            f"{str(base)!r} has no 'planet' folder; point at a DynamicEarthNet root holding "
            "planet/<zone>/<tile>/<aoi>/PF-SR and labels/"
        )
    dirs = [*base.glob(f"planet/*/*/{IMAGE_FOLDER}"), *base.glob(f"planet/*/*/*/{IMAGE_FOLDER}")]
    refs = [_aoi_ref(base, d) for d in dirs if d.is_dir()]
    return sorted(refs, key=lambda r: (r.zone or "", r.tile or "", r.aoi))


def _select_aoi(root: Path, refs: list[AoiRef], aoi: str | None) -> AoiRef:
    if not refs:
        raise NoImagesFoundError(
            f"no {IMAGE_FOLDER} image folder under {str(root / 'planet')!r}; expected "
            f"planet/<zone>/<tile>/<aoi>/{IMAGE_FOLDER}/YYYY-MM-DD.tif"
        )
    ids = [r.aoi for r in refs]
    if aoi is None:
        if len(refs) == 1:
            return refs[0]
        raise ParameterError(
            f"{str(root)!r} holds {len(refs)} AOIs; pass --aoi ID (aoi= in Python), one of {ids!r} "
            "(`changescope inspect` lists them)"
        )
    matches = [r for r in refs if aoi in (r.aoi, r.key)]
    if not matches:
        raise ParameterError(f"--aoi {aoi} (aoi={aoi!r}) is not in {str(root)!r}; choose one of {ids!r}")
    if len(matches) > 1:
        raise ParameterError(
            f"--aoi {aoi} (aoi={aoi!r}) exists in several zones of {str(root)!r}; pass --aoi one of "
            f"{[r.key for r in matches]!r}"
        )
    return matches[0]


def resolve_aoi(path: Path, aoi: str | None = None) -> AoiRef:
    """Find the AOI that ``path`` (a dataset root, an AOI folder or its ``PF-SR`` folder) designates.

    Raises:
        NoImagesFoundError: ``path`` is neither a dataset root nor an AOI folder.
        ParameterError: ``aoi`` is missing for a root with several AOIs, unknown, or contradicts ``path``.
    """
    p = Path(path).absolute()
    if (p / "planet").is_dir():
        return _select_aoi(p, list_aois(p), aoi)
    if p.name == IMAGE_FOLDER and p.is_dir():
        image_dir = p
    elif (p / IMAGE_FOLDER).is_dir():
        image_dir = p / IMAGE_FOLDER
    else:
        raise NoImagesFoundError(
            f"{str(p)!r} is neither a DynamicEarthNet root (no 'planet' folder) nor an AOI folder "
            f"(no '{IMAGE_FOLDER}' folder); point at ROOT, ROOT/planet/<zone>/<tile>/<aoi> or its {IMAGE_FOLDER}"
        )
    root = find_dataset_root(image_dir)
    ref = _aoi_ref(root, image_dir)
    if aoi is not None and aoi not in (ref.aoi, ref.key):
        raise ParameterError(
            f"--aoi {aoi} (aoi={aoi!r}) contradicts the AOI folder {str(image_dir)!r} ({ref.aoi!r}); drop --aoi"
        )
    return ref
