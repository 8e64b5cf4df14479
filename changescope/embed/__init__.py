"""The patch-embedding stage: tiling, batched feature extraction, the Zarr store, dask execution.

``embed_series(ds, encoder, patch_size=..., out=...)`` writes an embeddings store; ``open_embeddings(path)`` reads
it back. Reading a store does not import torch; :func:`embed_series` and the pooling helpers do, on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from changescope.embed.layout import DEFAULT_BLOCK_PX, BlockLayout
from changescope.embed.store import FORMAT, IncompleteStoreError, StoreMismatchError, is_store, open_embeddings

if TYPE_CHECKING:
    from changescope.embed.execute import embed_series
    from changescope.embed.pooling import overlap_matrix, patch_valid_fraction, pool_feature_map

__all__ = [
    "DEFAULT_BLOCK_PX",
    "FORMAT",
    "BlockLayout",
    "IncompleteStoreError",
    "StoreMismatchError",
    "embed_series",
    "is_store",
    "open_embeddings",
    "overlap_matrix",
    "patch_valid_fraction",
    "pool_feature_map",
]

_LAZY = {
    "embed_series": "changescope.embed.execute",
    "overlap_matrix": "changescope.embed.pooling",
    "patch_valid_fraction": "changescope.embed.pooling",
    "pool_feature_map": "changescope.embed.pooling",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'changescope.embed' has no attribute {name!r}")
