"""The main job: open -> embed -> score -> discover, each stage writing its own files (:mod:`changescope.stages`).

``run_pipeline(INPUT, OUT, RunConfig(...))`` writes into ``OUT`` (the run folder, :mod:`changescope.rundir`):

- ``embeddings.zarr``: the embeddings store (resumable: a rerun skips finished date x block tasks), and
  ``subpatches.zarr``, the same for the sub-patches of the multi-scale score (``subdivide > 1``);
- ``patch_scores.parquet``: one row per patch per date (:mod:`changescope.patch_scores`), ``events.parquet`` and
  ``event_states.npy``: the events before discovery;
- ``changes.parquet`` (GeoParquet with the CRS): ``event_id, aoi, row, col, time, score, magnitude, cluster,
  rarity, rank, confirmed, p_value, nfa, score_threshold, status, date, date_earliest, date_latest, geometry`` and
  ``change_vectors.npy`` beside it (row-aligned from-to change descriptors
  ``[after - before, from_weight * before]``);
- ``clusters.json``: change types (cluster summaries) and their hierarchy;
- ``maps/score_<YYYY-MM-DD>.tif``: Cloud-Optimised GeoTIFFs of the patch scores in the input CRS, and
  ``maps/change_date.tif``: each patch's first confirmed break date (``YYYYMMDD``, 0 = no change);
- ``manifest.json``: the input's fingerprint and each stage's configuration and key: a changed input or other
  parameters recompute, never reuse stale results;
- ``run.json``: every parameter, versions, timings and counts (written last: its presence means the run finished).

:func:`rescore` and :func:`rediscover` rerun the score and discover stages of a finished run (the ``score`` and
``discover`` commands). The report is not part of the run: ``changescope run`` builds it afterwards
(:func:`changescope.report.build_report`). Every file is written atomically, so a killed run leaves either the
previous file or none, and a rerun of the same command resumes. A run holds the folder's lock while it writes.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from changescope.change.schedule import score_scheduler
from changescope.config import DiscoverConfig, EmbedConfig, RunConfig, ScoreConfig
from changescope.errors import ParameterError
from changescope.fingerprint import dataset_fingerprint, digest, input_fingerprint
from changescope.rundir import RunDir
from changescope.stages import Embedded, discover_stage, embed_stage, read_events, score_stage
from changescope.storepath import AnyPath, StorePath, as_path, public_options
from changescope.types import PathLike

__all__ = [
    "DiscoverConfig",
    "EmbedConfig",
    "RunConfig",
    "RunResult",
    "ScoreConfig",
    "load_run",
    "rediscover",
    "rescore",
    "run_pipeline",
]


@dataclass
class RunResult:
    """Where a run wrote its outputs, and what it found."""

    out: AnyPath
    n_events: int
    threshold: float
    timings: dict[str, float]
    top: pd.DataFrame
    n_confirmed: int = 0

    @property
    def headline(self) -> str:
        """One line on what the run found: confirmed changes, and pending ones apart."""
        pending = self.n_events - self.n_confirmed
        tail = f" ({pending} pending: too close to the end of the series to confirm)" if pending else ""
        return f"{self.n_confirmed} changes found{tail}"

    @property
    def report(self) -> AnyPath:
        """Path of the HTML report (:func:`changescope.report.build_report` writes it)."""
        return self.out / "report.html"


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - t0, 3)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("changescope", "numpy", "xarray", "dask", "rasterio", "torch", "scikit-learn", "faiss-cpu"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def _meta(cfg: RunConfig) -> dict[str, Any]:
    """What ``changes.parquet`` records of its run: every parameter and the versions."""
    return {"config": cfg.flat(), "stages_config": cfg.to_json(), "versions": _versions()}


def _public(cfg: RunConfig) -> RunConfig:
    """``cfg`` without the credentials of its ``storage_options``: what ``run.json`` and the manifest record."""
    so = cfg.open_options.get("storage_options")
    if not so:
        return cfg
    return cfg.replace(open_options={**cfg.open_options, "storage_options": public_options(so)})


def _open(input: PathLike | StorePath | xr.Dataset, rd: RunDir, cfg: RunConfig) -> tuple[xr.Dataset, str, str]:
    """The series, its source (what :meth:`RunDir.open_input` re-opens) and its fingerprint."""
    import changescope

    if isinstance(input, xr.Dataset):
        source = str(input.attrs.get("source", ""))
        fingerprint = dataset_fingerprint(input)
        if not source or not Path(source).exists():
            source = rd.keep_input(input)
        return input, source, fingerprint
    kw: dict[str, Any] = {**cfg.open_options, **({} if cfg.aoi is None else {"aoi": cfg.aoi})}
    ds = changescope.open(input, format=cfg.format, **kw)
    where = as_path(input, kw.get("storage_options"))
    public = {**kw, **_public(cfg).open_options}  # credentials neither change nor enter the fingerprint
    fingerprint = digest({"input": input_fingerprint(where), "format": cfg.format, "options": public})
    # An absolute source, so that the run folder re-opens its input from any working directory (report, serve).
    source = where.url if isinstance(where, StorePath) else str(where.resolve())
    return ds, source, fingerprint


def _finish(
    rd: RunDir, cfg: RunConfig, changes: pd.DataFrame, info: dict[str, Any], timings: dict[str, float]
) -> RunResult:
    """Write ``run.json`` (last) and return the result."""
    manifest = rd.manifest()
    source = manifest.get("input", {})
    grid = info.pop("grid")
    n_confirmed = int(changes["confirmed"].sum()) if len(changes) else 0
    summary = {
        "changescope_run": 2,
        "source": source.get("source"),
        "aoi": source.get("aoi"),
        "config": cfg.flat(),
        "open_options": cfg.open_options,
        "stages_config": cfg.to_json(),
        "stages": manifest.get("stages", {}),
        **info,
        "grid": {"rows": grid.n_rows, "cols": grid.n_cols, "size": grid.size, "stride": grid.stride},
        "n_events": len(changes),
        "n_confirmed": n_confirmed,
        "n_pending": len(changes) - n_confirmed,
        "timings_s": timings,
        "versions": _versions(),
        "outputs": sorted(p.name for p in rd.root.iterdir() if not p.name.startswith(".")),
    }
    rd.write_json("run.json", summary)
    top = changes.sort_values(["confirmed", "rank"], ascending=[False, True]).head(20) if len(changes) else changes
    threshold = info.get("threshold")
    return RunResult(
        out=rd.root,
        n_events=len(changes),
        threshold=float("nan") if threshold is None else float(threshold),
        timings=timings,
        top=top,
        n_confirmed=n_confirmed,
    )


def run_pipeline(
    input: PathLike | StorePath | xr.Dataset,
    out: PathLike | StorePath,
    config: RunConfig | None = None,
    *,
    progress: bool = True,
    embeddings: PathLike | StorePath | None = None,
) -> RunResult:
    """Run open -> embed -> score -> discover on one series and write every output (module docstring).

    Args:
        input: A path or object-store URL ``changescope.open`` reads, or an already opened series (kept as
            ``input.zarr`` in ``out`` unless its ``source`` attribute names a readable path).
        out: Output folder (created), or an object-store prefix (``s3://bucket/run``, or a
            :class:`~changescope.storepath.StorePath` with its own ``storage_options``) whose bucket exists. It must
            not be, or lie inside, the input.
        config: Parameters (defaults: :class:`~changescope.config.RunConfig`). ``open_options["storage_options"]``
            reach the input's object store; their credentials are never recorded.
        progress: Show progress bars.
        embeddings: Reuse an embeddings store (or the stores of another run folder) of the same series instead
            of embedding.

    Raises:
        ParameterError: Inconsistent parameters (e.g. ``lof`` on a two-date series), an unusable ``out``, or
            another run writing into ``out`` (:class:`~changescope.rundir.RunLockedError`).
    """
    cfg = config or RunConfig()
    recorded = _public(cfg)  # what run.json and changes.parquet record
    rd = RunDir(out)
    rd.prepare(None if isinstance(input, xr.Dataset) else input)
    timings: dict[str, float] = {}
    with rd.lock("run"):
        with _timed(timings, "open"):
            ds, source, fingerprint = _open(input, rd, cfg)
        aoi = str(ds.attrs.get("aoi") or (Path(source).name if not source.endswith("input.zarr") else "series"))
        rd.record_input(source, fingerprint, {"aoi": aoi, "format": cfg.format})
        with _timed(timings, "embed"):
            embedded = embed_stage(
                rd,
                ds,
                cfg.embed,
                fingerprint,
                progress=progress,
                embeddings=None if embeddings is None else as_path(embeddings),
            )
        with score_scheduler(cfg.embed.workers, cfg.embed.scheduler):  # the embedding's scheduler
            scored = score_stage(rd, embedded, cfg.score)
        timings.update(scored.timings)
        with _timed(timings, "discover"):
            changes = discover_stage(
                rd, scored.events, embedded.grid, cfg.discover, aoi=aoi, score_key=scored.key, metadata=_meta(recorded)
            )
        return _finish(rd, recorded, changes, {**scored.info, "grid": embedded.grid}, timings)


def _embedded(rd: RunDir) -> tuple[Embedded, RunConfig]:
    """The embedding stage of a run folder, and the run's configuration (from ``run.json`` or the manifest)."""
    from changescope.embed import open_embeddings
    from changescope.grid import PatchGrid

    record = rd.stage_record("embed")
    reused = record.get("reused")
    base = as_path(reused).parent if reused else rd.root
    emb = open_embeddings(reused or rd.embeddings)
    fine = open_embeddings(base / "subpatches.zarr") if (base / "subpatches.zarr").exists() else None
    k = int(record.get("subdivide") or 1)
    if k > 1 and fine is None:
        raise ParameterError(f"{str(rd.root)!r} lacks subpatches.zarr; rerun `changescope run` into it")
    stages = rd.manifest().get("stages", {})
    cfg = RunConfig(
        EmbedConfig(**record["config"]),
        ScoreConfig(**stages["score"]["config"]) if stages.get("score", {}).get("config") else None,
        DiscoverConfig(**stages["discover"]["config"]) if stages.get("discover", {}).get("config") else None,
        format=rd.manifest().get("input", {}).get("format"),
        aoi=None,
    )
    if rd.run_json.exists():
        with suppress(ParameterError):
            cfg = rd.config()
    return Embedded(emb, fine if k > 1 else None, k, str(record["key"]), PatchGrid.for_store(emb.attrs)), cfg


def rescore(run_dir: PathLike | StorePath, score: ScoreConfig, discover: DiscoverConfig | None = None) -> RunResult:
    """Rerun the score stage of a run folder with ``score`` (and discovery, with ``discover`` or the run's own).

    The embeddings are read from the folder, never recomputed; the score and discover files are rewritten, and
    whatever was made from the old ones (``metrics.json``, ``figures/``, ``report.html``) is removed.

    Raises:
        ParameterError: The folder holds no finished embedding stage, or another process writes into it.
    """
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise ParameterError(f"run folder {str(run_dir)!r} does not exist; pass the --out of a changescope run")
    timings: dict[str, float] = {}
    with rd.lock("score"):
        embedded, old = _embedded(rd)
        cfg = old.replace(score=score, discover=discover or old.discover)
        with score_scheduler(cfg.embed.workers):  # the run's scheduler may be gone: its worker count, as threads
            scored = score_stage(rd, embedded, cfg.score)
        timings.update(scored.timings)
        aoi = str(rd.manifest().get("input", {}).get("aoi") or "series")
        with _timed(timings, "discover"):
            changes = discover_stage(
                rd, scored.events, embedded.grid, cfg.discover, aoi=aoi, score_key=scored.key, metadata=_meta(cfg)
            )
        return _finish(rd, cfg, changes, {**scored.info, "grid": embedded.grid}, timings)


def rediscover(run_dir: PathLike | StorePath, discover: DiscoverConfig) -> RunResult:
    """Rerun the discover stage of a run folder with ``discover`` (the scores and events are read, not redone).

    Raises:
        ParameterError: The folder holds no finished score stage, or another process writes into it.
    """
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise ParameterError(f"run folder {str(run_dir)!r} does not exist; pass the --out of a changescope run")
    timings: dict[str, float] = {}
    with rd.lock("discover"):
        embedded, old = _embedded(rd)
        record = rd.stage_record("score")
        events = read_events(rd)
        cfg = old.replace(discover=discover)
        aoi = str(rd.manifest().get("input", {}).get("aoi") or "series")
        with _timed(timings, "discover"):
            changes = discover_stage(
                rd, events, embedded.grid, cfg.discover, aoi=aoi, score_key=str(record["key"]), metadata=_meta(cfg)
            )
        info = {k: record.get(k) for k in ("persistence_used", "confirm_used", "scoring_passes", "threshold")}
        info.update(decision=record.get("decision"), n_dates=record.get("n_dates"), grid=embedded.grid)
        return _finish(rd, cfg, changes, info, timings)


def load_run(run_dir: PathLike | StorePath) -> dict[str, Any]:
    """Read a finished run's ``run.json``.

    Raises:
        ParameterError: ``run_dir`` holds no finished run.
        CorruptFileError: Its ``run.json`` is unreadable.
    """
    return RunDir(run_dir).load()
