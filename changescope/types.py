"""Shared type aliases: the ``Literal`` names of every string option, paths and boxes.

Every string option of the Python API is a ``Literal`` alias defined here, and the command line derives its choices
from the same alias (:func:`choices`), so ``--method [distance|lof]`` in ``--help`` and the Python signature cannot
drift apart. Encoder-specific options live with their encoders (:mod:`changescope.encoders`).
"""

from __future__ import annotations

import os
from typing import Any, Literal, TypeAlias, get_args

__all__ = [
    "Aggregation",
    "BBox",
    "ClusterMethod",
    "Context",
    "DecisionRule",
    "Device",
    "EventType",
    "ExploreMethod",
    "IndexKind",
    "Method",
    "Metric",
    "MonthlySelection",
    "PathLike",
    "RankBy",
    "ReaderFormat",
    "Reference",
    "SampleMode",
    "ShiftFeature",
    "ShiftReference",
    "ThresholdMethod",
    "choices",
]

PathLike: TypeAlias = str | os.PathLike[str]
"""A filesystem path given as ``str`` or :class:`os.PathLike`."""

BBox: TypeAlias = tuple[float, float, float, float]
"""A bounding box ``(minx, miny, maxx, maxy)`` in the series CRS."""

ReaderFormat: TypeAlias = Literal["geotiff_folder", "perband", "oscd", "dynamicearthnet", "stac", "zarr", "netcdf"]
"""Names of the registered series readers (``changescope.open(path, format=...)``)."""

Aggregation: TypeAlias = Literal["fraction", "mean", "majority"]
"""How :meth:`changescope.grid.PatchGrid.aggregate` reduces the pixels of a patch."""

MonthlySelection: TypeAlias = Literal["label_day", "monthly_median", "all"]
"""How the DynamicEarthNet reader picks images: the label day's image, a monthly median, or all."""

ShiftReference: TypeAlias = Literal["first", "clearest"]
"""Which date co-registration shifts are measured against."""

ShiftFeature: TypeAlias = Literal["gradient", "intensity"]
"""What the co-registration correlation runs on: the gradient magnitude (robust to illumination and contrast
changes) or the intensity itself."""

Device: TypeAlias = Literal["auto", "cpu", "cuda"]
"""Where encoders run (``"auto"``: CUDA when available)."""

Method: TypeAlias = Literal["distance", "lof"]
"""Change score: distance to the reference, or local outlier factor among the reference observations."""

Reference: TypeAlias = Literal["first", "previous", "rolling", "season"]
"""Which observations a date is compared with (:mod:`changescope.change.reference`)."""

Metric: TypeAlias = Literal["cosine", "euclidean"]
"""Distance between embeddings."""

Context: TypeAlias = Literal["peers", "none"]
"""Score against the same-date changes of similar patches (``"peers"``) or the patch's own reference only."""

ThresholdMethod: TypeAlias = Literal["nfa", "fdr", "otsu", "gmm", "quantile"]
"""How changes are declared: a calibrated test (``nfa``, ``fdr``) or a split of the scores."""

DecisionRule: TypeAlias = Literal["nfa", "fdr"]
"""The calibrated decision rules (:mod:`changescope.change.calibrate`)."""

ClusterMethod: TypeAlias = Literal["hdbscan", "kmeans"]
"""How change descriptors are grouped into change types."""

RankBy: TypeAlias = Literal["rarity", "magnitude", "mix"]
"""How events are ranked."""

IndexKind: TypeAlias = Literal["auto", "flat", "ivf", "hnsw"]
"""Search index kinds; ``"auto"`` is exact up to a size, IVF above."""

ExploreMethod: TypeAlias = Literal["pca", "tsne", "umap"]
"""2-D projections of embeddings and change vectors."""

SampleMode: TypeAlias = Literal["moco", "seco", "caco"]
"""How self-supervised training picks the dates of its views."""

EventType: TypeAlias = Literal["deforestation", "construction", "flooding", "drought", "farmland_to_builtup"]
"""The semantic change types of the synthetic AOIs."""


def choices(alias: Any) -> tuple[str, ...]:
    """The string values of a ``Literal`` alias, in order (``choices(Method) == ("distance", "lof")``)."""
    values = get_args(alias)
    if not values or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{alias!r} is not a Literal of strings")
    return tuple(values)
