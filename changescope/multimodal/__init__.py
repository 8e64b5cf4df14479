"""Optical-before / SAR-after change detection (methods.md §3): data layer.

- :mod:`~changescope.multimodal.layout`: the BRIGHT / DFC25 track 2 readers (:func:`read_bright`);
- :mod:`~changescope.multimodal.pairs`: any co-registered pair (:func:`pair_sample`), the pixel reader
  (:func:`read_pair_arrays`) and the per-image normalisation (:func:`normalise_pair`);
- :mod:`~changescope.multimodal.synthetic`: seeded synthetic optical/SAR scenes in the BRIGHT layouts
  (:func:`write_bright`, :func:`make_pair`);
- :mod:`~changescope.multimodal.index`: the window index (:func:`build_index`, :func:`write_index`,
  :func:`read_index`) and the on-the-fly :class:`PatchDataset`.

The modelling side (torch) is in ``model``, ``loss``, ``sampler``, ``config``, ``train``, ``predict`` and
``baselines``; ``evaluate`` (predict a split and score it: sweep, baselines, DFC25 mIoU), ``explore`` (PCA, t-SNE,
UMAP of the projections) and ``report`` (the offline HTML page) build on them.

**Label convention.** The method calls an ROI whose damage ratio is <= 0.05 a *positive* pair: unchanged, its
optical and SAR views are pulled together. The index keeps that as the boolean column ``positive``; the integer
``label`` used downstream (index column and dataset item) is **1 = changed (damaged) pair, 0 = unchanged pair**
(-1 = no truth). Damage means BRIGHT class > 1 (damaged, destroyed), or change in a binary change mask. The index
column ``damage_class`` is the ROI's BRIGHT class 0..3 (-1 without classes) for the optional damage head.

Importing this package imports neither torch nor rasterio: the names load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from changescope.multimodal.index import IndexParams, PatchDataset, build_index, read_index, write_index
    from changescope.multimodal.layout import CLASSES, list_disasters, read_bright, samples_frame
    from changescope.multimodal.pairs import Sample, normalise_pair, pair_sample, read_pair_arrays
    from changescope.multimodal.synthetic import SyntheticPair, make_pair, write_bright

__all__ = [
    "CLASSES",
    "IndexParams",
    "PatchDataset",
    "Sample",
    "SyntheticPair",
    "build_index",
    "list_disasters",
    "make_pair",
    "normalise_pair",
    "pair_sample",
    "read_bright",
    "read_index",
    "read_pair_arrays",
    "samples_frame",
    "write_bright",
    "write_index",
]

_LAZY = {
    "IndexParams": "index",
    "PatchDataset": "index",
    "build_index": "index",
    "read_index": "index",
    "write_index": "index",
    "CLASSES": "layout",
    "list_disasters": "layout",
    "read_bright": "layout",
    "samples_frame": "layout",
    "Sample": "pairs",
    "normalise_pair": "pairs",
    "pair_sample": "pairs",
    "read_pair_arrays": "pairs",
    "SyntheticPair": "synthetic",
    "make_pair": "synthetic",
    "write_bright": "synthetic",
}


def __getattr__(name: str) -> Any:
    """Load the public names on first use (module docstring)."""
    if name in _LAZY:
        value = getattr(import_module(f"changescope.multimodal.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'changescope.multimodal' has no attribute {name!r}")
