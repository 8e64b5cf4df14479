"""Patch metadata first, no stored patches: the window index and the on-the-fly patch dataset.

**The index** (:func:`build_index`) lists, for every pair, regions of interest (ROIs) of ``roi`` = 16 px on a
grid of stride 8, each centred in a context window of ``context`` = 256 px (the published defaults, methods.md §3).
Per ROI, over its valid pixels (valid in both images and the truth):

- ``damage_ratio``: share of damaged pixels (BRIGHT: class > 1, i.e. damaged or destroyed; a change mask: change);
- ``building_ratio``: share of building pixels (class >= 1); NaN for change masks, which carry no buildings;
- ``building``: ``building_ratio >= 0.2`` (building present);
- ``positive``: ``damage_ratio <= 0.05``, the method's *positive* pair: **unchanged** (its views are pulled together);
- ``label``: the class used downstream, **1 = changed (damaged) pair, 0 = unchanged pair** (``label = 1 - positive``);
  -1 when the pair has no truth.
- ``damage_class``: the ROI's BRIGHT class (0 background, 1 intact, 2 damaged, 3 destroyed) for the optional damage
  head; -1 where the truth has no classes (change masks, no truth). Rule (``class_rule``, ours: the method gives
  none): ``"majority"`` (default) is the most frequent class among the ROI's valid pixels, a tie going to the more
  severe class; ``"maximum"`` is the most severe class present on any valid pixel. Majority is the constant label
  that gets most ROI pixels right, which is what the pixel-level DFC25 mIoU scores.

ROIs with under 80 % valid pixels are skipped. The context window may reach past the image border; the dataset
pads it with zeros (the mean after normalisation). Choices not published, documented here: the ratios are taken over
the ROI's valid pixels; ``split="random"`` draws 80/20 **by image** (seed 42), not by window, because windows at
stride 8 overlap and a window-level split would leak; a layout's own split (DFC25 split files) wins over ``split``.
For single scenes ``"halves"`` puts ROIs wholly in the left half in ``train`` and those wholly in the right half in
``val`` (``val_half`` swaps them), and ``"blocks"`` cuts each image into ``blocks x blocks`` cells, 20 % of them
(at least one, drawn with the seed) in ``val``; ROIs that straddle a boundary are dropped.

**The dataset** (:class:`PatchDataset`) reads windows from the rasters, keeping a few normalised images in an LRU
cache. An item is a dict of torch tensors::

    optical  float32 [3, C, C]   C = context; grey optical replicated to 3 channels
    sar      float32 [1, C, C]
    label    int64   []          1 = changed (damaged) pair, 0 = unchanged pair
    ratio    float32 []          damage ratio of the ROI
    damage_class int64 []        ROI damage class 0..3, -1 without classes (indexes written before the column: -1)
    index    int64   []          row of the item in the (split-filtered) index

Per-image normalisation (:func:`~changescope.multimodal.pairs.normalise_pair`): optical z-score per channel, SAR
``log1p`` then z-score, statistics over each whole image's valid pixels.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.errors import CorruptFileError, EmptySeriesError, ParameterError
from changescope.io.writers import atomic_path
from changescope.multimodal.pairs import Sample, crop_window, normalise_pair, read_pair_arrays
from changescope.multimodal.regions import region_split, val_region
from changescope.multimodal.windows import N_DAMAGE_CLASSES, ClassRule, window_ratios
from changescope.types import PathLike

__all__ = [
    "INDEX_METADATA_KEY",
    "N_DAMAGE_CLASSES",
    "ClassRule",
    "IndexParams",
    "PatchDataset",
    "SplitMethod",
    "build_index",
    "holdout_region",
    "read_index",
    "window_ratios",
    "write_index",
]

SplitMethod: TypeAlias = Literal["random", "halves", "blocks"]
"""How :func:`build_index` splits samples that the layout leaves unsplit."""
INDEX_METADATA_KEY = b"changescope.multimodal.index"
_SPLIT_METHODS = ("random", "halves", "blocks")
_CLASS_RULES = ("majority", "maximum")
_SAMPLE_COLUMNS = ("pre", "post", "target", "pre_modality", "post_modality", "target_kind", "zero_nodata")


@dataclass(frozen=True)
class IndexParams:
    """Parameters of the window index (published defaults; see the module docstring).

    Attributes:
        roi: ROI side in pixels.
        context: Context window side in pixels (centred on the ROI).
        stride: Step between ROIs in pixels.
        positive_max_damage: Largest damage ratio of a positive (unchanged) pair.
        building_min: Smallest building ratio for ``building`` (building present).
        min_valid: Smallest share of valid ROI pixels.
        split: Split of samples without a layout split.
        val_share: Share of images (``random``) or blocks (``blocks``) in ``val``.
        seed: Random seed of the split.
        blocks: Blocks per side for ``split="blocks"``.
        val_half: Half in ``val`` for ``split="halves"``.
        class_rule: How an ROI's ``damage_class`` is chosen (``"majority"`` or ``"maximum"``; module docstring).
    """

    roi: int = 16
    context: int = 256
    stride: int = 8
    positive_max_damage: float = 0.05
    building_min: float = 0.2
    min_valid: float = 0.8
    split: SplitMethod = "random"
    val_share: float = 0.2
    seed: int = 42
    blocks: int = 4
    val_half: Literal["left", "right"] = "right"
    class_rule: ClassRule = "majority"

    def __post_init__(self) -> None:
        """Check every option, naming it."""
        for name, least in (("roi", 1), ("context", 1), ("stride", 1), ("blocks", 2)):
            if int(getattr(self, name)) < least:
                raise ParameterError(f"{name}={getattr(self, name)!r} must be at least {least}")
        if self.context < self.roi:
            raise ParameterError(f"context={self.context!r} must be at least roi={self.roi!r}")
        for name in ("positive_max_damage", "building_min", "min_valid"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ParameterError(f"{name}={getattr(self, name)!r} must lie in [0, 1]")
        if not 0.0 < self.val_share < 1.0:
            raise ParameterError(f"val_share={self.val_share!r} must lie strictly between 0 and 1")
        choices = (("split", _SPLIT_METHODS), ("val_half", ("left", "right")), ("class_rule", _CLASS_RULES))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ParameterError(f"{name}={getattr(self, name)!r} is not allowed; choose one of {list(allowed)!r}")


def _image_splits(samples: Sequence[Sample], params: IndexParams) -> list[str | None]:
    """The split of each image (``None``: split inside the image by region)."""
    out: list[str | None] = [s.split for s in samples]
    free = [i for i, s in enumerate(samples) if s.split is None]
    if params.split != "random" or not free:
        return out
    if len(free) < 2:
        raise ParameterError(
            "split='random' splits 80/20 by image, but only one image has no split of its own; split a single scene "
            "by region with split='halves' or 'blocks' (--split halves, --split blocks)"
        )
    rng = np.random.default_rng(params.seed)
    n_val = min(len(free) - 1, max(1, round(params.val_share * len(free))))
    val = {free[i] for i in rng.permutation(len(free))[:n_val]}
    for i in free:
        out[i] = "val" if i in val else "train"
    return out


def holdout_region(index: pd.DataFrame, sample: Sample, shape: tuple[int, int]) -> NDArray[np.bool_] | None:
    """The pixels of ``sample`` that ``index`` held out from training, when it split that image by region.

    Args:
        index: A window index (:func:`build_index` or :func:`read_index`, with ``attrs["params"]``).
        sample: The pair, found in the index by its pre-event file (paths compared resolved).
        shape: ``(H, W)`` of the pair.

    Returns:
        The image's :func:`val_region` when the index split it by region (``halves`` or ``blocks``), else ``None``
        (the whole image is in one split: every pixel counts).

    Raises:
        ParameterError: The index has no parameters, or the pair is not in it.
    """
    raw = index.attrs.get("params")
    if not isinstance(raw, dict):
        raise ParameterError("the index carries no parameters; rebuild it with `changescope multimodal index`")
    params = IndexParams(**raw)
    target = Path(sample.pre).resolve()
    same = {p for p in index["pre"].unique() if Path(p).resolve() == target}
    rows = index[index["pre"].isin(same)]
    if rows.empty:
        raise ParameterError(
            f"{str(sample.pre)!r} is not in the holdout index; evaluate the pairs it was built from, or drop --holdout"
        )
    if params.split not in ("halves", "blocks") or rows["split"].nunique() < 2:
        return None
    return val_region(shape, params, int(rows["image"].iloc[0]))


def build_index(samples: Sequence[Sample], params: IndexParams | None = None) -> pd.DataFrame:
    """The window index of ``samples`` (the module docstring gives the rules).

    Args:
        samples: Pairs to index (from :func:`~changescope.multimodal.layout.read_bright` or
            :func:`~changescope.multimodal.pairs.pair_sample`).
        params: Index parameters (default: the published ones).

    Returns:
        One row per kept ROI: ``sample``, ``event``, ``image`` (number of the sample), ``split``, ``y``, ``x``,
        ``valid_ratio``, ``damage_ratio``, ``building_ratio``, ``building``, ``positive``, ``label``,
        ``damage_class``, ``blacklisted`` and the sample's files and kinds (``pre``, ``post``, ``target``,
        ``pre_modality``, ``post_modality``, ``target_kind``, ``zero_nodata``); ``attrs["params"]`` holds ``params``.

    Raises:
        EmptySeriesError: No sample is given, or no ROI is left.
        ParameterError: ``split="random"`` with a single unsplit image.
    """
    p = params or IndexParams()
    if not samples:
        raise EmptySeriesError("no sample to index; check the input root or the --pre/--post files")
    splits = _image_splits(samples, p)
    parts = []
    for image, (sample, split) in enumerate(zip(samples, splits, strict=True)):
        pair = read_pair_arrays(sample)
        rois = window_ratios(pair, p.roi, p.stride, p.class_rule)
        rois = rois[rois["valid_ratio"] >= p.min_valid].reset_index(drop=True)
        if split is None:
            rois["split"] = region_split(rois["y"].to_numpy(), rois["x"].to_numpy(), pair.valid.shape, p, image)
            rois = rois[rois["split"] != ""]
        else:
            rois["split"] = split
        rois = rois.assign(sample=sample.id, event=sample.event, image=image, blacklisted=sample.blacklisted)
        for column in _SAMPLE_COLUMNS:
            value = getattr(sample, column)
            rois[column] = str(value) if isinstance(value, Path) else value
        parts.append(rois)
    frame = pd.concat(parts, ignore_index=True)
    if frame.empty:
        raise EmptySeriesError(
            f"no ROI of {p.roi} px with at least {p.min_valid:.0%} valid pixels is left in {len(samples)} image(s); "
            "check the images' nodata or lower min_valid"
        )
    known = frame["damage_ratio"].notna()
    frame["building"] = frame["building_ratio"].to_numpy() >= p.building_min
    frame["positive"] = known & (frame["damage_ratio"] <= p.positive_max_damage)
    frame["label"] = np.where(known, np.where(frame["positive"], 0, 1), -1).astype(np.int8)
    frame["target"] = frame["target"].where(frame["target"].notna(), None)
    order = ["sample", "event", "image", "split", "y", "x", "valid_ratio", "damage_ratio", "building_ratio"]
    frame["damage_class"] = frame["damage_class"].astype(np.int8)
    frame = frame[[*order, "building", "positive", "label", "damage_class", "blacklisted", *_SAMPLE_COLUMNS]]
    frame.attrs["params"] = asdict(p)
    return frame


def write_index(frame: pd.DataFrame, path: PathLike) -> Path:
    """Write an index as Parquet, atomically, with its parameters in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[INDEX_METADATA_KEY] = json.dumps(frame.attrs.get("params", {})).encode()
    with atomic_path(out) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return out


def read_index(path: PathLike) -> pd.DataFrame:
    """Read an index written by :func:`write_index` (``attrs["params"]`` restored).

    Raises:
        CorruptFileError: The file is not a changescope window index.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    try:
        table = pq.read_table(p)
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{str(p)!r} is not a readable Parquet file ({err}); rebuild it") from err
    raw = (table.schema.metadata or {}).get(INDEX_METADATA_KEY)
    if raw is None:
        raise CorruptFileError(f"{str(p)!r} is not a window index; build one with `changescope multimodal index`")
    frame: pd.DataFrame = table.to_pandas()
    frame.attrs["params"] = json.loads(raw)
    return frame


def _row_sample(row: Any) -> Sample:
    """The :class:`Sample` of an index row."""
    target = row.target if isinstance(row.target, str) and row.target else None
    return Sample(
        id=str(row.sample),
        event=str(row.event),
        pre=Path(row.pre),
        post=Path(row.post),
        target=None if target is None else Path(target),
        split=str(row.split),
        pre_modality=row.pre_modality,
        post_modality=row.post_modality,
        target_kind=row.target_kind,
        zero_nodata=bool(row.zero_nodata),
        blacklisted=bool(row.blacklisted),
    )


class PatchDataset:
    """Map-style dataset of ROI context windows read on the fly (item format in the module docstring).

    Works with ``torch.utils.data.DataLoader``; torch is imported only by :meth:`__getitem__` (:meth:`arrays`
    gives the same item as NumPy arrays).

    Args:
        index: A frame from :func:`build_index` / :func:`read_index`, or the path of a written index.
        split: Keep only this split (``"train"``, ``"val"``, ``"test"``); ``None`` keeps all.
        labelled_only: Drop ROIs without truth (``label == -1``).
        cache_size: Number of normalised images kept in memory (per worker process).

    Raises:
        EmptySeriesError: No ROI is left (an empty split).
        ParameterError: A pair of the index is not one optical and one SAR side.
    """

    def __init__(
        self,
        index: pd.DataFrame | PathLike,
        *,
        split: str | None = None,
        labelled_only: bool = True,
        cache_size: int = 8,
    ) -> None:
        frame = index if isinstance(index, pd.DataFrame) else read_index(index)
        params = dict(frame.attrs.get("params") or {})
        if split is not None:
            frame = frame[frame["split"] == split]
        if labelled_only:
            frame = frame[frame["label"] >= 0]
        if frame.empty:
            where = f"split {split!r}" if split is not None else "the index"
            raise EmptySeriesError(f"{where} holds no labelled ROI; rebuild the index or choose another split")
        modal = frame[["pre_modality", "post_modality"]].drop_duplicates()
        for pre, post in modal.itertuples(index=False):
            if {pre, post} != {"optical", "sar"}:
                raise ParameterError(f"the index holds a {pre!r} -> {post!r} pair; the dataset needs optical and SAR")
        self.frame = frame.reset_index(drop=True)
        self.frame.attrs["params"] = params
        self.roi = int(params.get("roi", 16))
        self.context = int(params.get("context", 256))
        self.cache_size = max(1, cache_size)
        self._cache: OrderedDict[int, tuple[NDArray[np.float32], NDArray[np.float32]]] = OrderedDict()
        self._image_of = self.frame["image"].to_numpy(dtype=np.int64)
        self._yx = self.frame[["y", "x"]].to_numpy(dtype=np.int64)
        self._labels = self.frame["label"].to_numpy(dtype=np.int64)
        self._ratios = self.frame["damage_ratio"].to_numpy(dtype=np.float32)
        if "damage_class" in self.frame:
            self._classes = self.frame["damage_class"].to_numpy(dtype=np.int64)
        else:
            self._classes = np.full(len(self.frame), -1, dtype=np.int64)
        firsts = self.frame.drop_duplicates("image")
        rows = zip(firsts["image"].to_numpy(dtype=np.int64), firsts.itertuples(index=False), strict=True)
        self._samples = {int(i): _row_sample(row) for i, row in rows}

    def __len__(self) -> int:
        """Number of ROIs."""
        return len(self.frame)

    @property
    def labels(self) -> NDArray[np.int64]:
        """``(n,)`` int64 labels (1 = changed, 0 = unchanged, -1 = no truth), for samplers."""
        return self._labels

    @property
    def damage_classes(self) -> NDArray[np.int64]:
        """``(n,)`` int64 ROI damage classes (0..3, -1 without classes)."""
        return self._classes

    @property
    def has_classes(self) -> bool:
        """Whether some ROI has a damage class (the truth is a BRIGHT damage raster): a class head can train."""
        return bool((self._classes >= 0).any())

    @property
    def ratios(self) -> NDArray[np.float32]:
        """``(n,)`` float32 damage ratios."""
        return self._ratios

    def _image(self, key: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        optical, sar, _ = normalise_pair(read_pair_arrays(self._samples[key]))
        self._cache[key] = (optical, sar)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return optical, sar

    def arrays(self, i: int) -> dict[str, Any]:
        """Item ``i`` as NumPy arrays (same keys and shapes as :meth:`__getitem__`)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} of a dataset of {len(self)}")
        i = i % len(self)
        optical, sar = self._image(int(self._image_of[i]))
        y0, x0 = (int(v) + self.roi // 2 - self.context // 2 for v in self._yx[i])
        return {
            "optical": crop_window(optical, y0, x0, self.context),
            "sar": crop_window(sar, y0, x0, self.context),
            "label": self.labels[i],
            "ratio": self.ratios[i],
            "damage_class": self._classes[i],
            "index": np.int64(i),
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Item ``i`` as torch tensors (the module docstring)."""
        import torch

        item = self.arrays(i)
        return {key: torch.from_numpy(np.asarray(value)) for key, value in item.items()}
