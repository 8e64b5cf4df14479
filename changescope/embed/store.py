"""The embeddings store: a Zarr (format 2) group that one run creates and its tasks fill chunk by chunk.

Layout (``P`` = patches per block side, see :class:`~changescope.embed.layout.BlockLayout`):

- ``embedding (time, row, col, dim)`` float32, chunks ``(1, P, P, dim)``, NaN where not embedded;
- ``valid_fraction (time, row, col)`` float32, chunks ``(1, P, P)``;
- ``block_done (time, block_row, block_col)`` uint8, chunks ``(1, 1, 1)``: 1 once the task of that date and block
  has written both of its chunks. It is written *after* them, so it is the truth: a chunk whose flag is 0 may be
  missing or left over from a killed run and is never read as valid;
- coordinates ``time``, ``row``, ``col`` and the pixel origins ``y0 (row)``, ``x0 (col)`` of each patch;
- attributes: the run's parameters (:data:`PARAMETERS`), the grid (``transform``: 6 floats, ``crs_wkt``,
  ``grid_height``/``grid_width``), the bands used, the series source, the changescope version and creation time.

The store is created atomically (built in a temporary sibling, then renamed) with all flags 0, so a path either holds
a whole store or nothing. Read it with :func:`open_embeddings`. It may lie in an object store (a run folder on
``s3://``): it is then created locally and uploaded with its metadata last, and tasks write their chunks and flags
through an fsspec mapper, each chunk one object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from numpy.typing import NDArray

from changescope.embed.layout import BlockLayout
from changescope.errors import CorruptFileError, ParameterError
from changescope.io.writers import atomic_path
from changescope.storepath import AnyPath, StorePath, as_path
from changescope.types import PathLike

__all__ = [
    "FORMAT",
    "PARAMETERS",
    "IncompleteStoreError",
    "StoreMismatchError",
    "check_store",
    "create_store",
    "done_flags",
    "is_store",
    "open_embeddings",
    "write_block",
]

FORMAT = "changescope.embeddings/1"
"""Value of the ``format`` attribute of every embeddings store."""

PARAMETERS = (
    "encoder",
    "weights_id",
    "encoder_kwargs",
    "patch_size",
    "stride",
    "block",
    "grid_height",
    "grid_width",
    "transform",
    "crs_wkt",
    "bands",
    "normalization",
    "embed_dim",
    "min_valid",
)
"""Attributes that must match for a run to resume into an existing store (the dates must match too)."""


class StoreMismatchError(ParameterError):
    """An existing store was made with other parameters (or dates); replace it with ``overwrite=True``."""


class IncompleteStoreError(CorruptFileError):
    """An embeddings store has tasks (date x block) that never finished; rerun ``embed`` to complete it."""


def _zarr(path: AnyPath) -> Any:
    """What xarray and zarr open: a local path, or an fsspec mapper on an object-store prefix."""
    return path.mapper() if isinstance(path, StorePath) else str(path)


def is_store(path: PathLike | StorePath) -> bool:
    """Whether ``path`` is a changescope embeddings store."""
    p = as_path(path)
    try:
        attrs = json.loads((p / ".zattrs").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(attrs, dict) and attrs.get("format") == FORMAT


def _describe_dates(times: pd.DatetimeIndex) -> str:
    if len(times) <= 6:
        return repr([t.strftime("%Y-%m-%d") for t in times])
    return f"{len(times)} dates {times[0]:%Y-%m-%d}..{times[-1]:%Y-%m-%d}"


def create_store(
    path: PathLike | StorePath,
    *,
    layout: BlockLayout,
    times: pd.DatetimeIndex,
    embed_dim: int,
    attrs: Mapping[str, Any],
) -> AnyPath:
    """Create an empty store (metadata, coordinates, all flags 0) atomically, replacing ``path`` if present.

    Args:
        path: The store to create.
        layout: Blocks of the patch grid (they set the chunks).
        times: Dates of the series.
        embed_dim: Embedding dimension.
        attrs: Run parameters and provenance (JSON-serialisable values).

    Returns:
        The store path.
    """
    n_t, n_r, n_c = len(times), layout.n_rows, layout.n_cols
    p = layout.per_block
    shape_e, chunks_e = (n_t, n_r, n_c, embed_dim), (1, p, p, embed_dim)
    shape_f, chunks_f = (n_t, layout.n_block_rows, layout.n_block_cols), (1, 1, 1)
    skeleton = xr.Dataset(
        {
            "embedding": (("time", "row", "col", "dim"), da.full(shape_e, np.nan, chunks=chunks_e, dtype="float32")),
            "valid_fraction": (("time", "row", "col"), da.full(shape_e[:3], np.nan, chunks=chunks_e[:3], dtype="f4")),
            "block_done": (("time", "block_row", "block_col"), da.zeros(shape_f, chunks=chunks_f, dtype="uint8")),
        },
        coords={
            "time": times.values.astype("datetime64[ns]"),
            "row": np.arange(n_r),
            "col": np.arange(n_c),
            "y0": ("row", np.arange(n_r) * layout.stride),
            "x0": ("col", np.arange(n_c) * layout.stride),
        },
        attrs={"format": FORMAT, **attrs, "created": datetime.now(UTC).isoformat(timespec="seconds")},
    )
    skeleton["embedding"].attrs["description"] = "patch embedding; NaN where not embedded (see min_valid)"
    skeleton["valid_fraction"].attrs["description"] = "fraction of valid pixels in the patch"
    skeleton["block_done"].attrs["description"] = "1 when the task (date, block) finished; chunks without it are void"
    encoding = {
        "embedding": {"chunks": chunks_e, "_FillValue": np.nan},
        "valid_fraction": {"chunks": chunks_e[:3], "_FillValue": np.nan},
        "block_done": {"chunks": chunks_f, "_FillValue": 0},
    }
    target = as_path(path)
    with atomic_path(target) as tmp:
        # compute=False writes metadata and coordinates only: every chunk starts absent (fill value).
        skeleton.to_zarr(tmp, mode="w", compute=False, zarr_format=2, consolidated=True, encoding=encoding)
    return target


def _store_attrs(path: AnyPath) -> dict[str, Any]:
    attrs: dict[str, Any] = json.loads((path / ".zattrs").read_text())
    return attrs


def check_store(path: PathLike | StorePath, params: Mapping[str, Any], times: pd.DatetimeIndex) -> None:
    """Refuse to resume into a store made with other parameters.

    Raises:
        ParameterError: ``path`` is not an embeddings store.
        StoreMismatchError: A parameter (or the dates) differs; the message names it and says how to replace the
            store.
    """
    p = as_path(path)
    fix = "pass overwrite=True (--overwrite) to replace it, or choose another --out"
    if not is_store(p):
        raise ParameterError(
            f"out={str(p)!r} exists and is not a changescope embeddings store; remove it or choose another --out"
        )
    stored = _store_attrs(p)
    for name in PARAMETERS:
        old, new = stored.get(name), params[name]
        if old != new:
            raise StoreMismatchError(f"{str(p)!r} holds embeddings made with {name}={old!r}, not {new!r}; {fix}")
    with xr.open_zarr(_zarr(p), consolidated=True) as ds:
        old_times = pd.DatetimeIndex(ds["time"].values)
    if not old_times.equals(times):
        raise StoreMismatchError(
            f"{str(p)!r} holds embeddings of dates {_describe_dates(old_times)}, but the series has "
            f"{_describe_dates(times)}; {fix}"
        )


def done_flags(path: PathLike | StorePath) -> NDArray[np.bool_]:
    """Completion flags ``(time, block_row, block_col)`` of a store."""
    arr = zarr.open_array(_zarr(as_path(path) / "block_done"), mode="r", zarr_format=2)
    flags: NDArray[np.bool_] = np.asarray(arr[...]) != 0
    return flags


def write_block(
    path: PathLike | StorePath,
    t: int,
    br: int,
    bc: int,
    *,
    layout: BlockLayout,
    embedding: NDArray[np.float32],
    valid_fraction: NDArray[np.float32],
    before_flag: Callable[[], None] | None = None,
) -> None:
    """Write one task's chunks, then its flag (the flag last: it is what makes the chunks count).

    Args:
        path: The store.
        t: Date index.
        br: Block row.
        bc: Block column.
        layout: The store's block layout.
        embedding: ``(rows, cols, dim)`` float32 for the block's patches.
        valid_fraction: ``(rows, cols)`` float32.
        before_flag: Called between the chunks and the flag (the resume tests' kill hook).
    """
    r0, r1, c0, c1 = layout.block_patches(br, bc)
    root = as_path(path)

    def array(name: str) -> zarr.Array[Any]:
        return zarr.open_array(_zarr(root / name), mode="r+", zarr_format=2)

    array("embedding")[t, r0:r1, c0:c1, :] = embedding
    array("valid_fraction")[t, r0:r1, c0:c1] = valid_fraction
    if before_flag is not None:
        before_flag()
    array("block_done")[t, br, bc] = 1


def open_embeddings(path: PathLike | StorePath, *, allow_incomplete: bool = False) -> xr.Dataset:
    """Open an embeddings store (lazily).

    Args:
        path: The store written by :func:`changescope.embed.embed_series`.
        allow_incomplete: Open a store whose run has not finished: the patches of unfinished tasks read as NaN
            (``embedding`` and ``valid_fraction``; their chunks are not even read, as a killed run may have left
            them torn) and ``complete (time, row, col)`` says which are real.

    Returns:
        The dataset: ``embedding``, ``valid_fraction``, ``complete`` and ``block_done`` (bool), with the run's
        attributes (``normalization`` and ``encoder_kwargs`` as JSON strings).

    Raises:
        CorruptFileError: ``path`` is not an embeddings store.
        IncompleteStoreError: Some tasks never finished and ``allow_incomplete`` is False.
    """
    p = as_path(path)
    if not is_store(p):
        raise CorruptFileError(f"{str(p)!r} is not a changescope embeddings store (no format={FORMAT!r} attribute)")
    ds: xr.Dataset = xr.open_zarr(_zarr(p), consolidated=True)
    flags = done_flags(p)
    ds["block_done"] = (("time", "block_row", "block_col"), flags)
    if not flags.all() and not allow_incomplete:
        raise IncompleteStoreError(
            f"{str(p)!r} is incomplete: {int((~flags).sum())} of {flags.size} tasks (date x block) never "
            "finished; rerun `changescope embed` with the same parameters to complete it, or pass "
            "allow_incomplete=True to read the finished part"
        )
    per_block = int(ds.attrs["block"]) // int(ds.attrs["stride"])
    rows = np.arange(ds.sizes["row"]) // per_block
    cols = np.arange(ds.sizes["col"]) // per_block
    # in memory (T x patches bool: 11 MB on a 24-date tile of sub-patches): a lazy fancy-indexed and rechunked
    # version kept a dask graph of ~0.13 GB alive with the dataset on a 6144 px x 24-date tile
    ds["complete"] = (("time", "row", "col"), flags[:, rows][:, :, cols])
    if not flags.all():
        for name in ("embedding", "valid_fraction"):
            ds[name] = ds[name].copy(data=_void_unfinished(ds[name].data, flags))
    return ds


def _void_unfinished(arr: da.Array, flags: NDArray[np.bool_]) -> da.Array:
    """Replace the chunks of unfinished tasks by NaN without reading them (they may be torn)."""
    dates = []
    for t in range(arr.numblocks[0]):
        if flags[t].all():
            dates.append(arr.blocks[t])
            continue
        rows = []
        for i in range(arr.numblocks[1]):
            cols = []
            for j in range(arr.numblocks[2]):
                chunk = arr.blocks[(t, i, j) + (0,) * (arr.ndim - 3)]
                cols.append(chunk if flags[t, i, j] else da.full(chunk.shape, np.nan, dtype=arr.dtype))
            rows.append(da.concatenate(cols, axis=2))
        dates.append(da.concatenate(rows, axis=1))
    out: da.Array = da.concatenate(dates, axis=0)
    return out
