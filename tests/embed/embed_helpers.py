"""Helpers shared by the embedding tests (imported by name: the tests folder has no packages)."""

from __future__ import annotations

import numpy as np

from changescope.embed import open_embeddings


def load_store(path: object, allow_incomplete: bool = False) -> dict[str, np.ndarray]:
    """Every array of a store, in memory."""
    with open_embeddings(str(path), allow_incomplete=allow_incomplete) as ds:
        return {name: np.asarray(ds[name].values) for name in ("embedding", "valid_fraction", "complete")}


def assert_same_store(a: object, b: object) -> None:
    """Two stores hold identical arrays (NaN where NaN)."""
    sa, sb = load_store(a), load_store(b)
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)
