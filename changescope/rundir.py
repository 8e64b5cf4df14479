"""The run folder: one owner for every file a run writes, its manifest, its lock and its input.

A run folder holds the files of three stages (:data:`STAGE_FILES`), the manifest that says which stage ran with
which configuration on which input, and ``run.json``, written last (its presence means the run finished):

================  ===================================================================  ==========================
stage             files                                                                written by
================  ===================================================================  ==========================
embed             ``embeddings.zarr``, ``subpatches.zarr``                             :mod:`changescope.embed`
score             ``patch_scores.parquet``, ``events.parquet``, ``event_states.npy``,  :mod:`changescope.stages`
                  ``maps/``
discover          ``changes.parquet``, ``change_vectors.npy``, ``clusters.json``,      :mod:`changescope.discover`
                  ``changes.faiss*``, ``maps/change_date.tif``
(after the run)   ``metrics.json``, ``figures/``, ``report.html``                      evaluate, explore, report
================  ===================================================================  ==========================

**Manifest** (``manifest.json``): the input's fingerprint (:mod:`changescope.fingerprint`) and, per stage, its
configuration and the key of what it was computed from (``key = hash(upstream key, own configuration)``). A stage
whose key differs from the recorded one recomputes, and everything after it is removed first: a changed input file
never brings back old embeddings or old scores, and a rerun with other parameters never leaves a stale
``metrics.json`` or figure behind.

**Lock** (``.changescope.lock``): a run takes the folder for itself; a second writer is refused with the first
one's process id. A lock whose process is gone (a killed run) is taken over.

**Input**: :meth:`RunDir.open_input` re-opens the run's series for the report and the evaluation; an in-memory
input is kept as ``input.zarr`` in the folder so that it can be.

**Object stores**: the folder may be a prefix in an S3-compatible store (``RunDir("s3://bucket/run")``, or a
:class:`~changescope.storepath.StorePath` with its own ``storage_options``). The same code writes it: every file
is written locally and uploaded whole (one PUT per file, :func:`~changescope.io.writers.atomic_path`), Zarr stores
through fsspec mappers, and the lock is created with a conditional PUT (``If-None-Match: *``), which AWS S3, MinIO
and moto honour; a store that ignores that header gives no mutual exclusion. The bucket must exist (it is never
created).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from changescope.config import STAGES, RunConfig
from changescope.errors import ChangescopeError, CorruptFileError, ParameterError
from changescope.fingerprint import digest
from changescope.io.writers import atomic_path
from changescope.runlock import RunLockedError, hold
from changescope.storepath import AnyPath, StorePath, as_path, is_url, open_binary, store_errors
from changescope.types import PathLike

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["AFTER_RUN", "STAGE_FILES", "RunDir", "RunLockedError"]

STAGE_FILES: dict[str, tuple[str, ...]] = {
    "embed": ("embeddings.zarr", "subpatches.zarr"),
    "score": ("patch_scores.parquet", "events.parquet", "event_states.npy", "maps"),
    "discover": (
        "changes.parquet",
        "change_vectors.npy",
        "clusters.json",
        "changes.faiss",
        "changes.faiss.json",
        "maps/change_date.tif",
    ),
}
"""The files each stage owns (``maps/`` belongs to scoring, except the break map of the discover stage)."""
AFTER_RUN: tuple[str, ...] = ("run.json", "metrics.json", "figures", "report.html")
"""Files made from a finished run; any stage that reruns removes them first."""
MANIFEST = "manifest.json"
LOCK = ".changescope.lock"
INPUT_STORE = "input.zarr"


def _remove(path: AnyPath) -> None:
    if isinstance(path, StorePath):
        path.remove()
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@dataclass(frozen=True)
class RunDir:
    """A run folder (see the module docstring).

    Attributes:
        root: The folder (a :class:`~pathlib.Path`, or a :class:`~changescope.storepath.StorePath` for a URL).
    """

    root: AnyPath

    def __init__(self, root: PathLike | StorePath) -> None:
        object.__setattr__(self, "root", as_path(root))

    # -- files ---------------------------------------------------------------------------------------------------
    def path(self, name: str) -> AnyPath:
        """The path of a run file (``rd.path("changes.parquet")``)."""
        return self.root / name

    @property
    def embeddings(self) -> AnyPath:
        """The embeddings store."""
        return self.root / "embeddings.zarr"

    def embeddings_store(self) -> AnyPath:
        """The embeddings store the run used: its own, or the one it reused (``run --embeddings``)."""
        reused = self.manifest().get("stages", {}).get("embed", {}).get("reused")
        return as_path(reused) if reused else self.embeddings

    @property
    def subpatches(self) -> AnyPath:
        """The sub-patch embeddings store (multi-scale score)."""
        return self.root / "subpatches.zarr"

    @property
    def patch_scores(self) -> AnyPath:
        """The per patch, per date score table."""
        return self.root / "patch_scores.parquet"

    @property
    def changes(self) -> AnyPath:
        """The change catalog (GeoParquet)."""
        return self.root / "changes.parquet"

    @property
    def run_json(self) -> AnyPath:
        """The summary written last."""
        return self.root / "run.json"

    @property
    def maps(self) -> AnyPath:
        """The GeoTIFF maps folder."""
        return self.root / "maps"

    @property
    def report(self) -> AnyPath:
        """The HTML report."""
        return self.root / "report.html"

    # -- checks --------------------------------------------------------------------------------------------------
    def prepare(self, input: PathLike | StorePath | None = None) -> None:
        """Create the folder for writing, refusing one that is a file, unwritable, or inside the input.

        Raises:
            ParameterError: The folder cannot hold a run (the message says why and what to pass instead).
        """
        root = self.root
        if isinstance(root, StorePath):
            self._prepare_store(root, input)
            return
        if root.exists() and not root.is_dir():
            raise ParameterError(f"--out {str(root)!r} is an existing file; pass a folder path for the outputs")
        if input is not None and not isinstance(input, StorePath) and not is_url(input):
            src = Path(input).resolve()
            out = root.resolve()
            if out == src or (src.is_dir() and src in out.parents):
                raise ParameterError(
                    f"--out {str(root)!r} lies inside the input {str(input)!r}; write the outputs elsewhere"
                )
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ParameterError(
                f"cannot create --out {str(root)!r} ({err.strerror or err}); choose a writable folder"
            ) from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise ParameterError(f"--out {str(root)!r} is not writable; choose a writable folder")

    @staticmethod
    def _prepare_store(root: StorePath, input: PathLike | StorePath | None) -> None:
        """:meth:`prepare` for an object-store prefix: the bucket must exist, the prefix be no object or the input."""
        with store_errors(root, "write to"):
            if not root.fs.exists(root.bucket):
                raise ParameterError(
                    f"--out {root.url!r}: bucket {root.bucket!r} does not exist or is not accessible; create it (a "
                    "run never creates buckets) or check the endpoint and credentials"
                )
            if root.is_file():
                raise ParameterError(f"--out {root.url!r} is an existing object; pass a prefix for the outputs")
        if input is not None and is_url(input):
            src = StorePath(str(input), fs=root.fs).url.rstrip("/")
            if root.url == src or root.url.startswith(src + "/"):
                raise ParameterError(f"--out {root.url!r} lies inside the input {src!r}; write the outputs elsewhere")

    @contextmanager
    def lock(self, command: str = "run") -> Iterator[None]:
        """Hold the folder's lock (:func:`changescope.runlock.hold`) for the block.

        Raises:
            RunLockedError: Another changescope process writes into this folder.
        """
        with hold(self.root, self.root / LOCK, command):
            yield

    # -- manifest ------------------------------------------------------------------------------------------------
    def manifest(self, *, strict: bool = False) -> dict[str, Any]:
        """The manifest: empty when the folder has none, or an unreadable one (then nothing is reused).

        Raises:
            CorruptFileError: ``strict`` and the manifest exists but is unreadable.
        """
        path = self.root / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("changescope_manifest") == 1:
            return data
        if strict:
            raise CorruptFileError(f"{str(path)!r} is unreadable; rerun `changescope run` into {str(self.root)!r}")
        return {}

    def _write_manifest(self, data: dict[str, Any]) -> None:
        with atomic_path(self.root / MANIFEST) as tmp:
            tmp.write_text(json.dumps({**data, "changescope_manifest": 1}, indent=2, default=str))

    def stage_key(self, stage: str, upstream: str, config: Any) -> str:
        """The key of a stage computed from ``upstream`` (the input fingerprint or the previous stage's key)."""
        return digest({"stage": stage, "upstream": upstream, "config": config})

    def is_current(self, stage: str, key: str) -> bool:
        """Whether ``stage`` finished with this key (and its files are there)."""
        rec = self.manifest().get("stages", {}).get(stage, {})
        return bool(rec.get("key") == key and rec.get("finished"))

    def begin(self, stage: str, key: str, *, keep_own: bool = False) -> None:
        """Start ``stage``: drop the records and files of every later stage and of the finished run.

        Args:
            stage: The stage about to (re)write its files.
            key: Its key.
            keep_own: Keep the stage's own files (the embeddings store resumes into its own files).
        """
        later = STAGES[STAGES.index(stage) + (0 if not keep_own else 1) :]
        for name in AFTER_RUN:
            _remove(self.root / name)
        for s in later:
            for name in STAGE_FILES[s]:
                if s == "score" and name == "maps":
                    for tif in (self.root / "maps").glob("score_*.tif"):
                        tif.unlink()
                    continue
                _remove(self.root / name)
        data = self.manifest()
        stages = {s: rec for s, rec in data.get("stages", {}).items() if s in STAGES[: STAGES.index(stage)]}
        stages[stage] = {"key": key, "finished": None}
        self._write_manifest({**data, "stages": stages})

    def finish(self, stage: str, key: str, config: Any, **info: Any) -> None:
        """Record that ``stage`` finished with ``key`` and ``config``."""
        data = self.manifest()
        stages = dict(data.get("stages", {}))
        when = datetime.now(UTC).isoformat(timespec="seconds")
        stages[stage] = {"key": key, "config": config, "finished": when, **info}
        self._write_manifest({**data, "stages": stages})

    def record_input(self, source: str, fingerprint: str, open_options: dict[str, Any]) -> None:
        """Record what the run reads (``source``, its fingerprint and the options it is opened with)."""
        data = self.manifest()
        self._write_manifest({**data, "input": {"source": source, "fingerprint": fingerprint, **open_options}})

    def stage_record(self, stage: str) -> dict[str, Any]:
        """The manifest's record of a finished stage.

        Raises:
            ParameterError: The stage has not finished in this folder (the message names the command to run).
        """
        rec = self.manifest(strict=True).get("stages", {}).get(stage)
        if not isinstance(rec, dict) or not rec.get("finished"):
            before = {"embed": "run", "score": "run", "discover": "score"}[stage]
            raise ParameterError(
                f"{str(self.root)!r} holds no finished {stage} stage; run `changescope {before}` into it first"
            )
        return rec

    # -- run summary and input -----------------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        """The finished run's ``run.json``.

        Raises:
            ParameterError: No finished run in the folder.
            CorruptFileError: ``run.json`` is unreadable.
        """
        path = self.run_json
        if not self.root.is_dir():
            raise ParameterError(f"run folder {str(self.root)!r} does not exist; pass the --out of a changescope run")
        if not path.exists():
            raise ParameterError(
                f"{str(self.root)!r} holds no finished run (no run.json); run `changescope run ... --out "
                f"{self.root}` first"
            )
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CorruptFileError(
                f"{str(path)!r} is unreadable ({type(err).__name__}); rerun `changescope run` into this folder"
            ) from None
        if not isinstance(data, dict) or "config" not in data:
            raise CorruptFileError(f"{str(path)!r} is not a changescope run summary; rerun `changescope run`")
        return data

    def config(self) -> RunConfig:
        """The configuration of the finished run."""
        data = self.load()
        stages = data.get("stages_config")
        return RunConfig.from_json(stages if isinstance(stages, dict) else data["config"])

    def read_changes(self, columns: list[str] | None = None) -> Any:
        """The change catalog (a GeoDataFrame; a plain frame when ``columns`` leave out the geometry).

        Raises:
            ParameterError: The folder has no ``changes.parquet``.
            CorruptFileError: It is unreadable.
        """
        import geopandas as gpd
        import pandas as pd

        path = self.changes
        if not path.is_file():
            raise ParameterError(
                f"{str(path)!r} is missing; rerun `changescope discover {self.root}` (or `changescope run`)"
            )
        try:
            with open_binary(path) as fh:
                if columns is not None and "geometry" not in columns:
                    return pd.read_parquet(fh, columns=columns)
                return gpd.read_parquet(fh, columns=columns)
        except Exception as err:  # pyarrow and geopandas raise several types on truncated or foreign files
            raise CorruptFileError(
                f"{str(path)!r} is unreadable ({type(err).__name__}); rerun `changescope discover {self.root}`"
            ) from None

    def write_json(self, name: str, obj: Any) -> AnyPath:
        """Write a JSON file of the run atomically."""
        with atomic_path(self.root / name) as tmp:
            tmp.write_text(json.dumps(obj, indent=2, default=str))
        return self.root / name

    def keep_input(self, ds: xr.Dataset) -> str:
        """Keep an in-memory input as ``input.zarr`` (so that the report and evaluation can re-open it)."""
        target = self.root / INPUT_STORE
        clean = ds.copy()
        clean.attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float | bool | list)}
        for var in clean.variables.values():
            var.attrs = {k: v for k, v in var.attrs.items() if isinstance(v, str | int | float | bool | list)}
            var.encoding = {}
        with atomic_path(target) as tmp:
            clean.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)
        return str(target)

    def open_input(self, info: dict[str, Any] | None = None) -> xr.Dataset | None:
        """Re-open the run's input series (``None`` when it is gone, or its object store is out of reach)."""
        import changescope

        data = info if info is not None else self.load()
        source = str(data.get("source", ""))
        kept = self.root / INPUT_STORE
        if kept.exists() and (not source or source in ("<in-memory>", str(kept))):
            return changescope.open(kept, format="zarr")
        if not source or source == "<in-memory>":
            return None
        options = dict(data.get("open_options") or {})
        try:
            where = as_path(source, options.pop("storage_options", None))
            with store_errors(where):
                if not where.exists():
                    return None
        except ChangescopeError:
            return None
        cfg = data.get("config", {})
        if cfg.get("aoi") is not None:
            options.setdefault("aoi", cfg["aoi"])
        return changescope.open(where, format=cfg.get("format"), **options)
