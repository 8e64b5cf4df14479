"""Readers of the BRIGHT building-damage data set (IEEE GRSS DFC25 track 2), as published.

Two layouts, with the published folder and file names:

- **flat** (the BRIGHT release)::

      ROOT/pre-event/{id}_pre_disaster.tif      optical, 3 bands
      ROOT/post-event/{id}_post_disaster.tif    SAR, 1 band
      ROOT/target/{id}_building_damage.tif      0 background, 1 intact, 2 damaged, 3 destroyed

- **dfc25** (``dfc25_track2_trainval``, the split torchgeo's ``BRIGHTDFC2025`` uses)::

      ROOT/dfc25_track2_trainval/train_setlevel.txt     ids of split "train"  (files in train/)
      ROOT/dfc25_track2_trainval/holdout_setlevel.txt   ids of split "val"    (files in train/)
      ROOT/dfc25_track2_trainval/val_setlevel.txt       ids of split "test"   (files in val/, targets optional)
      ROOT/dfc25_track2_trainval/{train,val}/{pre-event,post-event,target}/...

  ROOT may also be the ``dfc25_track2_trainval`` folder itself. Without the split files, the files of ``train/``
  get no split (the index splits them) and those of ``val/`` the split ``"test"``.

Ids are ``{event}_{8 digits}``; an event may itself contain ``_``, so the id is split on its last ``_``
(``la_palma-volcano_00000012`` is event ``la_palma-volcano``). A blacklist (one id or file name per line, ``#``
comments; ``blacklist.txt`` in ROOT, or beside the split files, is read when no file is given) removes bad tiles unless
``include_blacklist``. Samples are returned sorted by split and id, with the pre image's CRS and transform.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal, TypeAlias

import pandas as pd
from rasterio.errors import NotGeoreferencedWarning

from changescope.errors import CorruptFileError, NoImagesFoundError, ParameterError
from changescope.io.raster import raster_meta
from changescope.multimodal.pairs import Sample
from changescope.types import PathLike

__all__ = [
    "BLACKLIST_NAME",
    "CLASSES",
    "DFC25_DIR",
    "SPLIT_FILES",
    "LayoutKind",
    "bright_paths",
    "detect_layout",
    "list_disasters",
    "parse_id",
    "read_blacklist",
    "read_bright",
    "samples_frame",
]

LayoutKind: TypeAlias = Literal["auto", "flat", "dfc25"]
"""Which BRIGHT layout to read (``"auto"`` detects it)."""

CLASSES: tuple[str, ...] = ("background", "intact", "damaged", "destroyed")
"""BRIGHT damage classes; the class id is the index."""
DFC25_DIR = "dfc25_track2_trainval"
SPLIT_FILES: dict[str, str] = {"train": "train_setlevel.txt", "val": "holdout_setlevel.txt", "test": "val_setlevel.txt"}
"""Split name -> split file, as torchgeo's ``BRIGHTDFC2025`` maps them."""
_SPLIT_FOLDER = {"train": "train", "val": "train", "test": "val"}
BLACKLIST_NAME = "blacklist.txt"
PRE_DIR, POST_DIR, TARGET_DIR = "pre-event", "post-event", "target"
PRE_SUFFIX, POST_SUFFIX, TARGET_SUFFIX = "_pre_disaster.tif", "_post_disaster.tif", "_building_damage.tif"
_ID = re.compile(r"^(?P<event>.+)_(?P<number>\d{8})$")


def parse_id(sample_id: str) -> tuple[str, str]:
    """Split a BRIGHT id into ``(event, number)`` on its last ``_``.

    Raises:
        ParameterError: The id is not ``{event}_{8 digits}``.
    """
    match = _ID.match(sample_id)
    if match is None:
        raise ParameterError(
            f"sample id {sample_id!r} is not '{{event}}_{{8 digits}}' (e.g. 'turkey-earthquake_00000257'); "
            "rename the file or fix the split file"
        )
    return match["event"], match["number"]


def bright_paths(folder: Path, sample_id: str) -> tuple[Path, Path, Path]:
    """The ``(pre, post, target)`` files of ``sample_id`` in a folder holding ``pre-event/`` etc."""
    return (
        folder / PRE_DIR / f"{sample_id}{PRE_SUFFIX}",
        folder / POST_DIR / f"{sample_id}{POST_SUFFIX}",
        folder / TARGET_DIR / f"{sample_id}{TARGET_SUFFIX}",
    )


def _strip_suffix(entry: str) -> str:
    for suffix in (PRE_SUFFIX, POST_SUFFIX, TARGET_SUFFIX, ".tif"):
        if entry.endswith(suffix):
            return entry[: -len(suffix)]
    return entry


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise CorruptFileError(f"{str(path)!r} is not a text file of ids; fix or remove it") from err
    out = []
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(_strip_suffix(Path(entry).name))
    return out


def read_blacklist(path: PathLike) -> set[str]:
    """Ids listed in a blacklist file (one id or file name per line, ``#`` starts a comment)."""
    p = Path(path)
    if not p.is_file():
        raise NoImagesFoundError(f"blacklist {str(p)!r} does not exist; check the path")
    return set(_read_list(p))


def detect_layout(root: PathLike) -> tuple[Literal["flat", "dfc25"], Path]:
    """Which BRIGHT layout ``root`` holds, and the folder that holds it.

    Raises:
        NoImagesFoundError: ``root`` holds neither layout.
    """
    r = Path(root)
    if not r.is_dir():
        raise NoImagesFoundError(f"{str(r)!r} is not a folder; pass the BRIGHT root (holding pre-event/)")
    for base in (r / DFC25_DIR, r):
        if (base / "train" / PRE_DIR).is_dir() or (base / "val" / PRE_DIR).is_dir():
            return "dfc25", base
    if (r / PRE_DIR).is_dir():
        return "flat", r
    raise NoImagesFoundError(
        f"{str(r)!r} holds no BRIGHT layout: expected {PRE_DIR}/, {POST_DIR}/, {TARGET_DIR}/ (flat) or "
        f"{DFC25_DIR}/{{train,val}}/{PRE_DIR}/ (DFC25)"
    )


def _sample(folder: Path, sample_id: str, split: str | None, read_georef: bool) -> Sample:
    event, _ = parse_id(sample_id)
    pre, post, target = bright_paths(folder, sample_id)
    if not pre.is_file():
        raise NoImagesFoundError(f"{str(pre)!r} does not exist; sample {sample_id!r} needs its pre-event image")
    if not post.is_file():
        raise NoImagesFoundError(f"{str(post)!r} does not exist; sample {sample_id!r} needs its post-event image")
    has_targets = (folder / TARGET_DIR).is_dir()
    if has_targets and not target.is_file():
        raise NoImagesFoundError(
            f"{str(target)!r} does not exist; every sample of {str(folder / TARGET_DIR)!r} needs its damage raster"
        )
    crs, transform = None, None
    if read_georef:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            meta = raster_meta(pre)
        if meta.crs is not None:
            crs, transform = meta.crs.to_string(), meta.transform
    return Sample(
        id=sample_id,
        event=event,
        pre=pre,
        post=post,
        target=target if has_targets else None,
        split=split,
        pre_modality="optical",
        post_modality="sar",
        target_kind="damage",
        zero_nodata=True,
        crs=crs,
        transform=transform,
    )


def _listed_ids(folder: Path) -> list[str]:
    pre_dir = folder / PRE_DIR
    return sorted(p.name[: -len(PRE_SUFFIX)] for p in pre_dir.glob(f"*{PRE_SUFFIX}") if not p.name.startswith("."))


def _dfc25_ids(base: Path, splits: Sequence[str]) -> list[tuple[Path, str, str | None]]:
    have_files = all((base / f).is_file() for f in SPLIT_FILES.values())
    out: list[tuple[Path, str, str | None]] = []
    if not have_files:
        for folder, split in (("train", None), ("val", "test")):
            if (base / folder / PRE_DIR).is_dir() and (split or "train") in splits:
                out += [(base / folder, i, split) for i in _listed_ids(base / folder)]
        return out
    for split in splits:
        ids = _read_list(base / SPLIT_FILES[split])
        if not ids:
            raise NoImagesFoundError(
                f"split {split!r} is empty: {str(base / SPLIT_FILES[split])!r} lists no sample id; restore the file"
            )
        out += [(base / _SPLIT_FOLDER[split], i, split) for i in sorted(set(ids))]
    return out


def _select(samples: list[Sample], disasters: Iterable[str]) -> list[Sample]:
    wanted = list(disasters)
    known = list_disasters(samples)
    unknown = [d for d in wanted if d not in known]
    if unknown:
        raise ParameterError(f"select_disaster={unknown[0]!r} is not in this data; known disasters: {known!r}")
    return [s for s in samples if s.event in wanted]


def read_bright(
    root: PathLike,
    *,
    layout: LayoutKind = "auto",
    splits: Sequence[str] | None = None,
    select_disaster: str | Sequence[str] | None = None,
    blacklist: PathLike | None = None,
    include_blacklist: bool = False,
    limit: int | None = None,
    read_georef: bool = True,
) -> list[Sample]:
    """List the samples of a BRIGHT root (the module docstring gives the layouts).

    Args:
        root: The BRIGHT root (or, for DFC25, its parent or the ``dfc25_track2_trainval`` folder).
        layout: ``"flat"``, ``"dfc25"`` or ``"auto"`` (detected).
        splits: DFC25 splits to read (``"train"``, ``"val"``, ``"test"``); default all. Ignored for ``"flat"``.
        select_disaster: Keep only this event (or these events).
        blacklist: Blacklist file; default ``ROOT/blacklist.txt`` when it exists.
        include_blacklist: Keep blacklisted samples (marked ``blacklisted=True``).
        limit: Keep at most this many samples (the first ones, in order).
        read_georef: Read each pre image's CRS and transform.

    Returns:
        The samples, sorted by split then id.

    Raises:
        NoImagesFoundError: No layout, a missing file, an empty split file, or no sample left after selection.
        ParameterError: An unknown split, layout or disaster, a malformed id, or ``limit < 1``.
    """
    kind, base = detect_layout(root)
    if layout not in ("auto", kind):
        raise ParameterError(f"layout={layout!r} but {str(root)!r} holds the {kind!r} layout; pass layout='auto'")
    if limit is not None and limit < 1:
        raise ParameterError(f"limit={limit!r} must be at least 1 (or None for all samples)")
    chosen = list(SPLIT_FILES) if splits is None else list(splits)
    bad = [s for s in chosen if s not in SPLIT_FILES]
    if bad:
        raise ParameterError(f"split {bad[0]!r} is not a DFC25 split; choose from {list(SPLIT_FILES)!r}")
    entries = [(base, i, None) for i in _listed_ids(base)] if kind == "flat" else _dfc25_ids(base, chosen)
    if not entries:
        raise NoImagesFoundError(f"{str(base)!r} holds no *{PRE_SUFFIX} file in its {PRE_DIR}/ folder(s)")
    samples = [_sample(folder, i, split, read_georef) for folder, i, split in entries]
    if select_disaster is not None:
        samples = _select(samples, [select_disaster] if isinstance(select_disaster, str) else select_disaster)
    found = [p for p in (Path(root) / BLACKLIST_NAME, base / BLACKLIST_NAME) if p.is_file()]
    bl_path = Path(blacklist) if blacklist is not None else (found[0] if found else None)
    if bl_path is not None:
        banned = read_blacklist(bl_path)
        if include_blacklist:
            samples = [replace(s, blacklisted=s.id in banned) for s in samples]
        else:
            samples = [s for s in samples if s.id not in banned]
    if not samples:
        raise NoImagesFoundError(
            f"no sample of {str(root)!r} is left after the disaster selection and the blacklist; relax them "
            "(or pass include_blacklist)"
        )
    order = {"train": 0, "val": 1, "test": 2}
    samples.sort(key=lambda s: (order.get(s.split or "", -1), s.id))
    return samples[:limit] if limit is not None else samples


def list_disasters(samples: Iterable[Sample]) -> list[str]:
    """The sorted event names of ``samples``."""
    return sorted({s.event for s in samples})


def samples_frame(samples: Iterable[Sample]) -> pd.DataFrame:
    """The samples as a table, one row each (paths as strings, ``crs`` as text, ``transform`` as 6 numbers)."""
    rows = []
    for s in samples:
        row = dict(s.__dict__)
        for key in ("pre", "post", "target"):
            row[key] = None if row[key] is None else str(row[key])
        row["transform"] = None if s.transform is None else tuple(s.transform)[:6]
        rows.append(row)
    return pd.DataFrame(rows, columns=list(Sample.__dataclass_fields__))
