"""``patch_scores.parquet``: the one reader and writer of patch scores, as a table and as a cube.

The table has one row per patch per date::

    row, col, y0, x0, size, time, score, raw_score, valid_fraction, method

(``raw_score`` and ``valid_fraction`` are NaN where a writer has none, e.g. a classical baseline). The cube is the
same scores as ``(T, n_rows, n_cols)`` arrays. ``run``, ``score``, ``evaluate``, ``report``, ``benchmark`` and the
benchmark scripts all read and write it through :class:`PatchScores`, so the schema lives in one place. The run's
parameters are kept in the Parquet schema metadata (key ``changescope``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.errors import CorruptFileError, GridMismatchError, ParameterError
from changescope.io.writers import atomic_path
from changescope.storepath import AnyPath, StorePath, as_path, open_binary
from changescope.types import PathLike

__all__ = ["COLUMNS", "PatchScores", "write_parquet"]

COLUMNS: tuple[str, ...] = (
    "row",
    "col",
    "y0",
    "x0",
    "size",
    "time",
    "score",
    "raw_score",
    "valid_fraction",
    "method",
)
F64 = NDArray[np.float64]


def write_parquet(df: pd.DataFrame, path: PathLike | StorePath, metadata: dict[str, Any] | None = None) -> AnyPath:
    """Write a frame as Parquet atomically (locally or to an object store), with ``metadata`` under ``changescope``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    if metadata is not None:
        meta[b"changescope"] = json.dumps(metadata, default=str).encode()
    target = as_path(path)
    with atomic_path(target) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return target


@dataclass
class PatchScores:
    """Patch scores of a series as cubes ``(T, n_rows, n_cols)`` (NaN where not scored).

    Attributes:
        times: The dates.
        score: The scores.
        raw: Raw scores (before normalisation), or NaN.
        valid_fraction: Clear fraction of each patch-date, or NaN.
        size: Patch side in pixels.
        stride: Patch step in pixels.
        method: What made the scores (``distance``, ``lof``, a baseline name).
        metadata: Parameters stored with the table.
    """

    times: pd.DatetimeIndex
    score: F64
    raw: F64 | None = None
    valid_fraction: F64 | None = None
    size: int = 32
    stride: int = 32
    method: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.score = np.asarray(self.score, dtype=np.float64)
        if self.score.ndim != 3 or self.score.shape[0] != len(self.times):
            raise ParameterError(f"scores of shape {self.score.shape!r} do not match {len(self.times)} dates")
        for name in ("raw", "valid_fraction"):
            arr = getattr(self, name)
            if arr is not None and np.shape(arr) != self.score.shape:
                raise ParameterError(f"{name} has shape {np.shape(arr)!r}, expected {self.score.shape!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """The patch grid ``(n_rows, n_cols)``."""
        return int(self.score.shape[1]), int(self.score.shape[2])

    def max_over_time(self) -> F64:
        """Each patch's highest score (NaN where never scored)."""
        if not len(self.times):
            return np.full(self.shape, np.nan)
        with np.errstate(invalid="ignore"):
            return np.asarray(np.fmax.reduce(self.score, axis=0), dtype=np.float64)

    def _frame(self, dates: slice) -> pd.DataFrame:
        """The rows of ``dates``, ordered by date, row, column."""
        score = self.score[dates]
        n_t, n_rows, n_cols = score.shape
        tt, rr, cc = np.meshgrid(np.arange(n_t), np.arange(n_rows), np.arange(n_cols), indexing="ij")
        nan = np.full(score.size, np.nan, dtype=np.float32)

        def column(cube: NDArray[np.floating] | None) -> NDArray[np.float32]:
            return nan if cube is None else np.asarray(cube)[dates].ravel().astype(np.float32)

        return pd.DataFrame(
            {
                "row": rr.ravel().astype(np.int32),
                "col": cc.ravel().astype(np.int32),
                "y0": (rr.ravel() * self.stride).astype(np.int32),
                "x0": (cc.ravel() * self.stride).astype(np.int32),
                "size": np.full(rr.size, self.size, dtype=np.int32),
                "time": self.times[dates][tt.ravel()],
                "score": score.ravel().astype(np.float32),
                "raw_score": column(self.raw),
                "valid_fraction": column(self.valid_fraction),
                "method": self.method,
            }
        )

    def to_frame(self) -> pd.DataFrame:
        """The table (module docstring), rows ordered by date, row, column."""
        return self._frame(slice(None))

    def write(self, path: PathLike | StorePath) -> AnyPath:
        """Write ``patch_scores.parquet`` atomically (with :attr:`metadata`), one row group per date.

        A date's rows are built and written at a time, so a whole tile's table (24 dates x 118k patches) never
        sits in memory as one frame.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = json.dumps({**self.metadata, "size": self.size, "stride": self.stride}, default=str).encode()
        target = as_path(path)
        with atomic_path(target) as tmp:
            writer: pq.ParquetWriter | None = None
            try:
                for t in range(max(1, len(self.times))):
                    table = pa.Table.from_pandas(self._frame(slice(t, t + 1)), preserve_index=False)
                    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"changescope": meta})
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()
        return target

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        shape: tuple[int, int] | None = None,
        times: pd.DatetimeIndex | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> PatchScores:
        """Cubes from a table with at least ``row, col, time, score``.

        Args:
            frame: The table.
            shape: The patch grid (default: the largest row and column + 1).
            times: The dates (default: the table's, sorted); rows at other dates are left out.
            metadata: Parameters to keep.

        Raises:
            ParameterError: A required column is missing.
            GridMismatchError: A row or column lies outside ``shape``.
        """
        missing = [c for c in ("row", "col", "time", "score") if c not in frame]
        if missing:
            raise ParameterError(f"patch scores lack the column(s) {missing!r}; expected {list(COLUMNS)!r}")
        rows = frame["row"].to_numpy(dtype=np.int64)
        cols = frame["col"].to_numpy(dtype=np.int64)
        if shape is None:
            shape = (int(rows.max(initial=-1)) + 1, int(cols.max(initial=-1)) + 1)
        if len(rows) and (rows.max() >= shape[0] or cols.max() >= shape[1] or min(rows.min(), cols.min()) < 0):
            raise GridMismatchError(
                f"patch scores reach patch ({int(rows.max())}, {int(cols.max())}) but the grid is {shape!r} "
                "patches; use truth or imagery on the run's grid (same patch size, stride and scene)"
            )
        when = pd.DatetimeIndex(pd.to_datetime(frame["time"]))
        if times is None:
            times = pd.DatetimeIndex(sorted(pd.unique(when)))
        t = times.get_indexer(when)
        ok = t >= 0

        def cube(column: str) -> F64 | None:
            if column not in frame:
                return None
            out = np.full((len(times), *shape), np.nan)
            out[t[ok], rows[ok], cols[ok]] = frame[column].to_numpy(dtype=np.float64)[ok]
            return out

        score = cube("score")
        if score is None:  # pragma: no cover - "score" was checked above
            raise ParameterError("patch scores lack the column 'score'")
        size = int(frame["size"].iloc[0]) if "size" in frame and len(frame) else 0
        meta = dict(metadata or {})
        stride = int(meta.get("stride") or 0)
        if not stride and "y0" in frame and len(frame) and rows.max() > 0:
            stride = int(frame["y0"].to_numpy()[rows.argmax()] // rows.max())
        method = str(frame["method"].iloc[0]) if "method" in frame and len(frame) else ""
        return cls(times, score, cube("raw_score"), cube("valid_fraction"), size, stride or size, method, meta)

    @classmethod
    def read(
        cls, path: PathLike | StorePath, shape: tuple[int, int] | None = None, times: pd.DatetimeIndex | None = None
    ) -> PatchScores:
        """Read ``patch_scores.parquet`` (a file, or a run folder holding one).

        Raises:
            ParameterError: The file does not exist.
            CorruptFileError: It is not a readable patch score table.
        """
        import pyarrow.parquet as pq

        p = as_path(path)
        if p.is_dir():
            p = p / "patch_scores.parquet"
        if not p.is_file():
            raise ParameterError(f"{str(p)!r} does not exist; rerun `changescope run` (or `score`) into its folder")
        try:
            with open_binary(p) as fh:
                table = pq.read_table(fh)
        except Exception as err:  # pyarrow raises several types on truncated or foreign files
            raise CorruptFileError(
                f"{str(p)!r} is not a readable Parquet table ({type(err).__name__}); rerun `changescope score`"
            ) from None
        raw_meta = (table.schema.metadata or {}).get(b"changescope")
        metadata: dict[str, Any] = {}
        if raw_meta:
            try:
                metadata = json.loads(raw_meta)
            except ValueError:
                metadata = {}
        return cls.from_frame(table.to_pandas(), shape, times, metadata)
