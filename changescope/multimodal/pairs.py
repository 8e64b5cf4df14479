"""Co-registered pre/post raster pairs of two modalities: the :class:`Sample` record and the pixel reader.

A :class:`Sample` names the files of one pair (pre-event image, post-event image, optional truth) and says what
each side is. Nothing is assumed about the direction: ``pre_modality`` and ``post_modality`` are each
``"optical"`` or ``"sar"`` (in ``hetcd/shuguang`` the SAR image is the *earlier* one).

Any raster format that rasterio (GDAL) opens works, BMP, JPEG, PNG and (Geo)TIFF included; a pair may be
georeferenced or not. Reading rules (:func:`read_side`):

- **grey stored as RGB**: a file whose bands are all equal (within ``GREY_TOLERANCE`` digital numbers, for lossy
  JPEG) is read as one band;
- **optical** needs at least 3 stored bands (the first 3 are used, as R, G, B; a 4th band of a PNG/JPEG/BMP is
  alpha, 0 = invalid). A grey optical image stored as RGB is kept as 1 band and replicated by the patch dataset.
  A 1- or 2-band file given as optical is refused (it is most likely the SAR side: pass ``"sar"``);
- **SAR** needs 1 band after grey detection; a file with several different bands is refused (it looks optical);
- **validity**: a pixel is invalid where it is NaN, where every band equals the file's declared nodata value, or,
  with ``zero_nodata`` (used for BRIGHT tiles, whose fill outside the acquisition is 0), where every band is 0.

:func:`normalise_pair` is the per-image normalisation of the method (methods.md §3), with statistics over the pair's
valid pixels of the whole image: optical z-score per channel (grey optical replicated to 3 channels); SAR
``log1p(max(x, 0))`` then z-score. Invalid pixels become 0.

Truth (:func:`read_truth`) is either a **damage** raster (BRIGHT: 0 background, 1 intact, 2 damaged, 3 destroyed;
damage = class > 1, building = class >= 1) or a **change** mask (0/1, 0/255 or OSCD 1/2; damage = change; no
building information).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from changescope.errors import BandMismatchError, CorruptFileError, CRSMismatchError, GridMismatchError, ParameterError
from changescope.io.oscd import decode_change_mask
from changescope.io.raster import damaged, open_raster, raster_meta
from changescope.types import PathLike

__all__ = [
    "GREY_TOLERANCE",
    "MODALITIES",
    "Modality",
    "PairArrays",
    "Sample",
    "Side",
    "TargetKind",
    "Truth",
    "check_modality",
    "crop_window",
    "normalise_pair",
    "pair_sample",
    "read_pair_arrays",
    "read_side",
    "read_truth",
]

Modality: TypeAlias = Literal["optical", "sar"]
"""What one side of a pair is: an optical (RGB) image or a SAR (1-band backscatter) image."""
TargetKind: TypeAlias = Literal["damage", "change"]
"""How a truth raster is coded: BRIGHT damage classes 0..3, or a binary change mask."""

MODALITIES: tuple[Modality, ...] = ("optical", "sar")
GREY_TOLERANCE = 1.0
"""Largest difference (digital numbers) between bands for a file to count as grey stored as RGB."""
_ALPHA_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class Sample:
    """One pre/post pair and where its truth is.

    Attributes:
        id: Sample id (BRIGHT: ``{event}_{8 digits}``; a pair: the pre file's stem).
        event: Disaster event (BRIGHT: the id without its number; a pair: the pre file's folder name).
        pre: Pre-event image.
        post: Post-event image.
        target: Truth raster, or ``None`` when the pair has none.
        split: ``"train"``, ``"val"`` or ``"test"`` when the layout fixes it, else ``None``.
        pre_modality: What the pre-event image is.
        post_modality: What the post-event image is.
        target_kind: How the truth is coded (:data:`TargetKind`).
        zero_nodata: Whether pixels that are 0 in every band are invalid (the module docstring).
        blacklisted: Whether the sample is on the layout's blacklist (kept only on request).
        crs: CRS of the pre image (``"EPSG:..."`` or WKT), ``None`` when not georeferenced.
        transform: Affine transform of the pre image, ``None`` when not georeferenced.
    """

    id: str
    event: str
    pre: Path
    post: Path
    target: Path | None
    split: str | None = None
    pre_modality: Modality = "optical"
    post_modality: Modality = "sar"
    target_kind: TargetKind = "damage"
    zero_nodata: bool = False
    blacklisted: bool = False
    crs: str | None = None
    transform: Any = None


@dataclass(frozen=True)
class Side:
    """The pixels of one side of a pair.

    Attributes:
        image: ``(bands, h, w)`` float32 values as stored; 3 bands (optical) or 1 (SAR, or grey optical).
        valid: ``(h, w)`` valid pixels.
        modality: What the image is.
        grey: Whether the file held grey stored as several equal bands.
    """

    image: NDArray[np.float32]
    valid: NDArray[np.bool_]
    modality: Modality
    grey: bool


@dataclass(frozen=True)
class Truth:
    """Per-pixel truth: ``damage``, ``valid``; for damage rasters ``building`` and ``classes`` (uint8, 0-3)."""

    damage: NDArray[np.bool_]
    building: NDArray[np.bool_] | None
    valid: NDArray[np.bool_]
    classes: NDArray[np.uint8] | None = None


@dataclass(frozen=True)
class PairArrays:
    """Both sides of a pair and its truth (``None`` without a truth file)."""

    pre: Side
    post: Side
    truth: Truth | None

    @property
    def valid(self) -> NDArray[np.bool_]:
        """``(h, w)`` pixels valid in both images and the truth."""
        out = self.pre.valid & self.post.valid
        return out & self.truth.valid if self.truth is not None else out


def check_modality(value: str, name: str) -> Modality:
    """Return ``value`` as a :data:`Modality`, or raise a one-line :class:`ParameterError` naming ``name``."""
    if value == "optical":
        return "optical"
    if value == "sar":
        return "sar"
    raise ParameterError(f"{name}={value!r} is not a modality; choose one of {list(MODALITIES)!r}")


def _read_all(path: Path) -> tuple[NDArray[Any], float | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(path) as src:
            try:
                return src.read(), src.nodata
            except RasterioError as err:
                raise damaged(path, err) from err


def _is_grey(data: NDArray[Any]) -> bool:
    if data.shape[0] < 2:
        return False
    first = data[0].astype(np.float32)
    return all(float(np.max(np.abs(b.astype(np.float32) - first), initial=0.0)) <= GREY_TOLERANCE for b in data[1:])


def read_side(path: PathLike, modality: Modality, *, zero_nodata: bool = False, role: str = "image") -> Side:
    """Read one side of a pair (the module docstring gives the band and validity rules).

    Args:
        path: Raster file.
        modality: What the file is.
        zero_nodata: Count pixels that are 0 in every band as invalid.
        role: Name of the side in messages (``"pre"``/``"post"``), so the error names the parameter to change.

    Returns:
        The pixels.

    Raises:
        NoImagesFoundError: The file does not exist.
        CorruptFileError: It is not a readable raster.
        BandMismatchError: Its band count does not fit ``modality``.
    """
    p = Path(path)
    data, nodata = _read_all(p)
    count = data.shape[0]
    alpha = None
    if modality == "optical":
        if count < 3:
            raise BandMismatchError(
                f"{str(p)!r} has {count} band(s) but {role}_modality='optical' needs 3 (RGB); if it is a SAR "
                f"image pass {role}_modality='sar'"
            )
        if count == 4 and p.suffix.lower() in _ALPHA_SUFFIXES:
            alpha = data[3]
        data = data[:3]
    grey = _is_grey(data)
    if grey:
        data = data[:1]
    elif modality == "sar" and data.shape[0] != 1:
        raise BandMismatchError(
            f"{str(p)!r} has {count} different bands but {role}_modality='sar' needs 1 band (or grey stored as "
            f"equal bands); if it is an optical image pass {role}_modality='optical'"
        )
    image = data.astype(np.float32)
    valid: NDArray[np.bool_] = np.asarray(np.isfinite(image).all(axis=0))
    if nodata is not None and np.isfinite(nodata):
        valid &= ~(image == np.float32(nodata)).all(axis=0)
    elif zero_nodata:
        valid &= (image != 0).any(axis=0)
    if alpha is not None:
        valid &= alpha != 0
    return Side(image=image, valid=valid, modality=modality, grey=grey)


def read_truth(path: PathLike, kind: TargetKind, shape: tuple[int, int], image: PathLike) -> Truth:
    """Read a truth raster onto a pair of ``shape``.

    Args:
        path: Damage raster (classes 0..3) or change mask (0/1, 0/255, 1/2); grey stored as RGB is accepted.
        kind: How it is coded.
        shape: ``(h, w)`` of the pair.
        image: The pre image, named in the shape error.

    Returns:
        The truth.

    Raises:
        GridMismatchError: The raster does not have the pair's shape.
        CorruptFileError: Its values fit no coding of ``kind``, or it holds several different bands.
    """
    p = Path(path)
    data, _ = _read_all(p)
    if data.shape[1:] != shape:
        raise GridMismatchError(
            f"truth {str(p)!r} has shape {tuple(data.shape[1:])!r} but {str(image)!r} is {shape!r}; pass the mask "
            "of this pair"
        )
    if data.shape[0] > 1 and not _is_grey(data):
        raise CorruptFileError(f"truth {str(p)!r} has {data.shape[0]} different bands; a truth raster has one band")
    raw = data[0]
    if kind == "change":
        change = decode_change_mask(raw, str(p))[0]
        return Truth(damage=change == 1, building=None, valid=change >= 0)
    values = {int(v) for v in np.unique(raw)}
    if not values <= {0, 1, 2, 3}:
        raise CorruptFileError(
            f"damage raster {str(p)!r} holds values {sorted(values)[:10]!r}; it must hold 0 background, 1 intact, "
            "2 damaged, 3 destroyed"
        )
    classes = raw.astype(np.uint8)
    return Truth(damage=raw > 1, building=raw >= 1, valid=np.ones(shape, dtype=bool), classes=classes)


def read_pair_arrays(sample: Sample) -> PairArrays:
    """Read both images and the truth of ``sample``, checking that they share one grid.

    Raises:
        GridMismatchError: The images (or the truth) differ in size.
        BandMismatchError: A side's band count does not fit its modality.
    """
    pre = read_side(sample.pre, sample.pre_modality, zero_nodata=sample.zero_nodata, role="pre")
    post = read_side(sample.post, sample.post_modality, zero_nodata=sample.zero_nodata, role="post")
    shape = (int(pre.image.shape[1]), int(pre.image.shape[2]))
    if post.image.shape[1:] != shape:
        raise GridMismatchError(
            f"post {str(sample.post)!r} is {tuple(post.image.shape[1:])!r} px but pre {str(sample.pre)!r} is "
            f"{shape!r}; the two images must be co-registered on one grid (resample one onto the other)"
        )
    truth = None if sample.target is None else read_truth(sample.target, sample.target_kind, shape, sample.pre)
    return PairArrays(pre=pre, post=post, truth=truth)


def pair_sample(
    pre: PathLike,
    post: PathLike,
    truth: PathLike | None = None,
    *,
    pre_modality: str = "optical",
    post_modality: str = "sar",
    sample_id: str | None = None,
    event: str | None = None,
) -> Sample:
    """Describe a pair of co-registered rasters, checking their metadata (existence, size, band count, CRS).

    Args:
        pre: Pre-event (earlier) image.
        post: Post-event (later) image.
        truth: Optional change mask (0/1, 0/255 or 1/2) of the pair's shape.
        pre_modality: ``"optical"`` or ``"sar"``.
        post_modality: ``"optical"`` or ``"sar"``.
        sample_id: Id (default: the pre file's stem).
        event: Event name (default: the pre file's folder name).

    Returns:
        The sample (``target_kind="change"``, ``zero_nodata=False``); pixel-level checks happen on reading.

    Raises:
        ParameterError: A modality is not ``"optical"`` or ``"sar"``.
        NoImagesFoundError: A file does not exist.
        GridMismatchError: The images or the mask differ in size, or the images lie on different grids.
        CRSMismatchError: Both images are georeferenced, in different CRSs.
        BandMismatchError: A file given as optical has fewer than 3 bands.
    """
    pre_mod, post_mod = check_modality(pre_modality, "pre_modality"), check_modality(post_modality, "post_modality")
    a, b = raster_meta(Path(pre)), raster_meta(Path(post))
    if (a.height, a.width) != (b.height, b.width):
        raise GridMismatchError(
            f"post {str(post)!r} is {(b.height, b.width)!r} px but pre {str(pre)!r} is {(a.height, a.width)!r}; "
            "the two images must be co-registered on one grid (resample one onto the other)"
        )
    if a.crs is not None and b.crs is not None:
        if a.crs != b.crs:
            raise CRSMismatchError(
                f"post {str(post)!r} is in {b.crs.to_string()!r} but pre {str(pre)!r} in {a.crs.to_string()!r}; "
                "reproject one onto the other's grid"
            )
        if not a.transform.almost_equals(b.transform):
            raise GridMismatchError(
                f"post {str(post)!r} and pre {str(pre)!r} have the same size but different transforms; "
                "resample one onto the other's grid"
            )
    for path, meta, mod, role in ((pre, a, pre_mod, "pre"), (post, b, post_mod, "post")):
        if mod == "optical" and meta.count < 3:
            raise BandMismatchError(
                f"{str(path)!r} has {meta.count} band(s) but {role}_modality='optical' needs 3 (RGB); if it is a "
                f"SAR image pass {role}_modality='sar'"
            )
    if truth is not None:
        m = raster_meta(Path(truth))
        if (m.height, m.width) != (a.height, a.width):
            raise GridMismatchError(
                f"truth {str(truth)!r} has shape {(m.height, m.width)!r} but {str(pre)!r} is "
                f"{(a.height, a.width)!r}; pass the mask of this pair"
            )
    pre_path = Path(pre)
    return Sample(
        id=sample_id or pre_path.stem,
        event=event or pre_path.resolve().parent.name or "pair",
        pre=pre_path,
        post=Path(post),
        target=None if truth is None else Path(truth),
        pre_modality=pre_mod,
        post_modality=post_mod,
        target_kind="change",
        zero_nodata=False,
        crs=None if a.crs is None else a.crs.to_string(),
        transform=None if a.crs is None else a.transform,
    )


def _zscore(x: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.float32]:
    out = np.zeros_like(x, dtype=np.float32)
    for c in range(x.shape[0]):
        vals = x[c][valid]
        mean = float(vals.mean()) if vals.size else 0.0
        std = float(vals.std()) if vals.size else 1.0
        out[c] = np.where(valid, (x[c] - mean) / (std if std > 0 else 1.0), 0.0)
    return out


def normalise_pair(pair: PairArrays) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
    """Per-image normalisation: ``(optical (3, h, w), sar (1, h, w), valid (h, w))`` (the module docstring).

    Raises:
        ParameterError: The pair is not one optical and one SAR image.
    """
    sides = {pair.pre.modality: pair.pre, pair.post.modality: pair.post}
    if set(sides) != {"optical", "sar"}:
        raise ParameterError(
            f"the pair is {pair.pre.modality!r} -> {pair.post.modality!r}; the patch dataset needs one optical and "
            "one SAR side (set pre_modality/post_modality)"
        )
    valid = pair.valid
    optical = sides["optical"].image
    if optical.shape[0] == 1:
        optical = np.repeat(optical, 3, axis=0)
    sar = np.log1p(np.maximum(sides["sar"].image, 0.0))
    return _zscore(optical, valid), _zscore(sar, valid), valid


def crop_window(image: NDArray[np.float32], y0: int, x0: int, size: int) -> NDArray[np.float32]:
    """A ``size``-sided window at ``(y0, x0)``, zero-padded where it leaves the image."""
    out = np.zeros((image.shape[0], size, size), dtype=np.float32)
    h, w = image.shape[1:]
    ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + size, h), min(x0 + size, w)
    if ya < yb and xa < xb:
        out[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = image[:, ya:yb, xa:xb]
    return out
