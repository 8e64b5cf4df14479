"""The main job: open -> embed -> score -> events -> discover, each stage writing its own files.

``run_pipeline(INPUT, OUT, RunConfig(...))`` writes into ``OUT``:

- ``embeddings.zarr``: the embeddings store (resumable: a rerun skips finished date x block tasks), and
  ``subpatches.zarr``, the same for the sub-patches of the multi-scale score (``subdivide > 1``);
- ``patch_scores.parquet``: one row per patch per date: ``row, col, y0, x0, size, time, score, raw_score,
  valid_fraction, method``;
- ``changes.parquet`` (GeoParquet with the CRS): ``event_id, aoi, row, col, time, score, magnitude, cluster,
  rarity, rank, confirmed, p_value, nfa, status, date, date_earliest, date_latest, geometry`` and
  ``change_vectors.npy`` beside it (row-aligned from-to change descriptors
  ``[after - before, from_weight * before]``);
- ``clusters.json``: change types (cluster summaries) and their hierarchy;
- ``maps/score_<YYYY-MM-DD>.tif``: Cloud-Optimised GeoTIFFs of the patch scores in the input CRS, and
  ``maps/change_date.tif``: each patch's first confirmed break date (``YYYYMMDD``, 0 = no change);
- ``run.json``: every parameter, versions, timings and counts (written last: its presence means the run finished).

Every file is written atomically, so a killed run leaves either the previous file or none.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from changescope.change.events import ThresholdMethod
from changescope.change.multiscale import auto_subdivide, subpatch_size
from changescope.change.reference import Reference
from changescope.change.score import Method
from changescope.change.scorers import Metric
from changescope.change.store import score_events, score_multiscale, score_store
from changescope.errors import ParameterError
from changescope.grid import PatchGrid
from changescope.io.writers import atomic_path, write_geotiff
from changescope.series import series_crs
from changescope.types import PathLike

__all__ = ["RunConfig", "RunResult", "load_run", "run_pipeline", "score_multiscale", "score_store"]


@dataclass(frozen=True)
class RunConfig:
    """Parameters of a run (all recorded in ``run.json``).

    Attributes:
        encoder: Encoder name (``changescope.encoders.list_encoders()``) or ``checkpoint:PATH``.
        weights: Encoder weights override (path, HF repo id, ``"random"``).
        patch_size: Patch side in pixels.
        stride: Patch step in pixels (default: ``patch_size``).
        min_valid: Minimum clear fraction of a patch for its observation to be used.
        method: ``"distance"`` (default) or ``"lof"``. On the synthetic benchmark (README) distance to the nearest
            peer changes beat LOF on every seed (AUC, top-20 precision, query precision; LOF let crop phenology
            into the top 20), and it also scores two-date pairs.
        reference: ``"first"``, ``"previous"``, ``"rolling"`` or ``"season"``.
        k: Reference size for ``first``/``rolling``.
        n_neighbors: LOF neighbours.
        metric: Distance metric (default: cosine for distance, euclidean for LOF).
        context: ``"peers"`` (default) scores each patch against the same-date observations of the patches that
            looked like it in its reference period, cancelling seasons, illumination and haze; ``"none"`` against
            its own reference observations only (see :mod:`changescope.change.context`).
        n_peers: Peers per patch.
        standardize: Scale embedding dimensions to unit spread before scoring.
        subdivide: Also embed and score sub-patches of side ``patch_size / subdivide`` (stored in
            ``subpatches.zarr``); a patch's score is the maximum of its own and its sub-patches' scores, so a change
            covering a small part of a patch still stands out (1 = patch scale only; see
            :mod:`changescope.change.multiscale`). ``None``: 2 when the patch halves into sub-patches of at least
            8 px, else 1.
        rebase: After a confirmed event, compare the patch's later dates with its new state rather than the state
            before the change, and rescore (``reference="first"`` only; :mod:`changescope.change.store`): a
            lasting change is reported once, and a later change of the same patch gets its own event. Off by
            default: on farmland a false break re-references the patch to one crop stage and the next stage breaks
            again (measured on a synthetic AOI: 62 events became 202).
        confirm: A score is kept only as far as the patch's next ``confirm`` scored observations confirm it (the
            minimum over them, :func:`~changescope.change.score.confirm_scores`): one-date glitches drop, lasting
            changes stay (0 = off).
        threshold: How changes are declared: ``"nfa"`` (default: a test with at most ``false_alarms`` expected
            false changes per 1000 patches), ``"fdr"`` (Benjamini-Hochberg at ``fdr``), or a split of the scores
            (``"otsu"``, ``"gmm"``, ``"quantile"`` or a number on normalised scores), which always finds changes,
            even where nothing changed (:mod:`changescope.change.calibrate`).
        false_alarms: Expected false changes per 1000 patches for ``threshold="nfa"``.
        fdr: False-discovery rate for ``threshold="fdr"``.
        q: Quantile for ``threshold="quantile"``.
        persistence: Following valid dates that must confirm an event.
        from_weight: Weight of the before state in the change descriptors that clustering, rarity and search
            compare (``[after - before, from_weight * before]``; 0 = the change vector alone; see
            :meth:`~changescope.change.events.Events.descriptors`).
        cluster: ``"hdbscan"`` or ``"kmeans"``.
        n_clusters: Clusters for k-means.
        rank_by: ``"rarity"``, ``"magnitude"`` or ``"mix"``.
        rank_weight: Weight of rarity in the mix.
        format: Input format override.
        aoi: AOI id for multi-AOI inputs (DynamicEarthNet roots).
        block: Embedding block side in pixels.
        workers: Local dask cluster size for embedding.
        scheduler: Address of an existing dask scheduler.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: Seed of every random step (clustering).
    """

    encoder: str = "spectral"
    weights: str | None = None
    patch_size: int = 32
    stride: int | None = None
    min_valid: float = 0.5
    method: Method = "distance"
    reference: Reference = "first"
    k: int = 3
    n_neighbors: int = 20
    metric: Metric | None = None
    context: str = "peers"
    n_peers: int = 100
    standardize: bool = True
    subdivide: int | None = None
    confirm: int = 1
    rebase: bool = False
    threshold: ThresholdMethod | float = "nfa"
    false_alarms: float = 1.0
    fdr: float = 0.05
    q: float = 0.99
    persistence: int = 1
    from_weight: float = 1.0
    cluster: str = "hdbscan"
    n_clusters: int | None = None
    rank_by: str = "mix"
    rank_weight: float = 0.5
    format: str | None = None
    aoi: str | None = None
    block: int | None = None
    workers: int | None = None
    scheduler: str | None = None
    device: str = "auto"
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """Where a run wrote its outputs, and what it found."""

    out: Path
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
    def report(self) -> Path:
        """Path of the HTML report (written by the report stage when present)."""
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


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


def _patch_scores_frame(
    emb: xr.Dataset, grid: PatchGrid, raw: np.ndarray, scores: np.ndarray, method: str
) -> pd.DataFrame:
    n_t, n_rows, n_cols = scores.shape
    tt, rr, cc = np.meshgrid(np.arange(n_t), np.arange(n_rows), np.arange(n_cols), indexing="ij")
    return pd.DataFrame(
        {
            "row": rr.ravel().astype(np.int32),
            "col": cc.ravel().astype(np.int32),
            "y0": (rr.ravel() * grid.stride).astype(np.int32),
            "x0": (cc.ravel() * grid.stride).astype(np.int32),
            "size": np.full(rr.size, grid.size, dtype=np.int32),
            "time": pd.DatetimeIndex(emb["time"].values)[tt.ravel()],
            "score": scores.ravel().astype(np.float32),
            "raw_score": raw.ravel().astype(np.float32),
            "valid_fraction": np.asarray(emb["valid_fraction"].values).ravel().astype(np.float32),
            "method": method,
        }
    )


def _write_parquet(df: pd.DataFrame, path: Path, metadata: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"changescope"] = json.dumps(metadata, default=str).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def _write_maps(out: Path, grid: PatchGrid, times: pd.DatetimeIndex, scores: np.ndarray, crs: Any) -> None:
    maps = out / "maps"
    maps.mkdir(parents=True, exist_ok=True)
    transform = grid.patch_transform()
    for t, when in enumerate(times):
        write_geotiff(
            maps / f"score_{when.strftime('%Y-%m-%d')}.tif",
            scores[t].astype(np.float32),
            crs=crs,
            transform=transform,
            nodata=float("nan"),
            descriptions=["change score"],
            cog=True,
            tags={"date": when.strftime("%Y-%m-%d")},
        )


def _date_code(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Dates as ``YYYYMMDD`` integers (0 for a missing date)."""
    idx = pd.DatetimeIndex(times)
    code = idx.year * 10000 + idx.month * 100 + idx.day
    return np.where(idx.isna(), 0, np.asarray(code, dtype=np.float64)).astype(np.int32)


def _write_change_date_map(out: Path, grid: PatchGrid, changes: pd.DataFrame, crs: Any) -> None:
    """``maps/change_date.tif``: each patch's first confirmed break date and the start of its dating interval.

    Band 1 is the break date (the first clear date showing the change), band 2 the last clear date before it, both
    as ``YYYYMMDD`` integers, 0 (nodata) where no confirmed change was found, as a CCDC break map.
    """
    first = np.zeros((2, grid.n_rows, grid.n_cols), dtype=np.int32)
    if len(changes) and "status" in changes:
        done = changes[changes["status"] == "confirmed"].sort_values("time")
        done = done.drop_duplicates(["row", "col"], keep="first")
        rows, cols = done["row"].to_numpy(int), done["col"].to_numpy(int)
        first[0, rows, cols] = _date_code(done["time"])
        first[1, rows, cols] = _date_code(done["date_earliest"])
    (out / "maps").mkdir(parents=True, exist_ok=True)
    write_geotiff(
        out / "maps" / "change_date.tif",
        first,
        crs=crs,
        transform=grid.patch_transform(),
        nodata=0,
        descriptions=["break date (YYYYMMDD)", "last clear date before (YYYYMMDD)"],
        cog=True,
    )


def _check_decision(cfg: RunConfig) -> None:
    """Refuse bad decision settings before any work (they are otherwise only used after embedding)."""
    from changescope.change.calibrate import decide
    from changescope.change.events import pick_threshold

    if isinstance(cfg.threshold, str) and cfg.threshold in ("nfa", "fdr"):
        decide(np.zeros((1, 1)), 1, rule=cfg.threshold, false_alarms=cfg.false_alarms, fdr=cfg.fdr)
    else:
        pick_threshold(np.array([0.0, 1.0]), cfg.threshold, cfg.q)


def _embed_resumable(ds: xr.Dataset, encoder: str, kw: dict[str, Any]) -> Path:
    """Embed into ``kw["out"]``, resuming a store made with the same parameters and redoing one made otherwise."""
    from changescope.embed import embed_series

    try:
        return embed_series(ds, encoder, overwrite=False, **kw)
    except ParameterError:
        if not Path(kw["out"]).exists():
            raise
        return embed_series(ds, encoder, overwrite=True, **kw)  # parameters changed: redo


def run_pipeline(
    input: PathLike | xr.Dataset,
    out: PathLike,
    config: RunConfig | None = None,
    *,
    progress: bool = True,
    report: bool = True,
) -> RunResult:
    """Run open -> embed -> score -> events -> discover on one series and write every output.

    Args:
        input: A path ``changescope.open`` reads, or an already opened series.
        out: Output folder (created).
        config: Parameters (defaults: spectral encoder, distance against the first 3 dates, 32 px patches).
        progress: Show progress bars.
        report: Build ``report.html`` at the end (:func:`changescope.report.build_report`).

    Raises:
        ParameterError: Inconsistent parameters (e.g. ``lof`` on a two-date series).
    """
    import changescope
    from changescope.embed import open_embeddings

    cfg = config or RunConfig()
    _check_decision(cfg)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with _timed(timings, "open"):
        if isinstance(input, xr.Dataset):
            ds, source = input, str(input.attrs.get("source", "<in-memory>"))
        else:
            kw: dict[str, Any] = {} if cfg.aoi is None else {"aoi": cfg.aoi}
            ds, source = changescope.open(input, format=cfg.format, **kw), str(input)
    n_dates = ds.sizes["time"]
    if cfg.method == "lof" and n_dates < 3:
        raise ParameterError(
            f"method='lof' needs reference dates to compare with, but {source!r} has {n_dates} date(s); "
            "use --method distance for two-date pairs such as OSCD"
        )
    aoi = str(ds.attrs.get("aoi") or (Path(source).name if source != "<in-memory>" else "series"))
    grid = PatchGrid.for_series(ds, cfg.patch_size, cfg.stride)
    with _timed(timings, "embed"):
        store_path = out_dir / "embeddings.zarr"
        embed_kw: dict[str, Any] = {
            "weights": cfg.weights,
            "patch_size": cfg.patch_size,
            "stride": cfg.stride,
            "out": store_path,
            "block": cfg.block,
            "min_valid": cfg.min_valid,
            "device": cfg.device,
            "workers": cfg.workers,
            "scheduler": cfg.scheduler,
            "progress": progress,
        }
        emb = open_embeddings(_embed_resumable(ds, cfg.encoder, embed_kw))
        k = auto_subdivide(cfg.patch_size, grid.stride) if cfg.subdivide is None else cfg.subdivide
        sub = subpatch_size(cfg.patch_size, grid.stride, k)
        fine = None
        if sub is not None:
            fine_kw = {**embed_kw, "patch_size": sub, "stride": sub, "out": out_dir / "subpatches.zarr"}
            fine = open_embeddings(_embed_resumable(ds, cfg.encoder, fine_kw))
    persistence = min(cfg.persistence, max(0, n_dates - 2))
    # a two-date pair has one scored date: nothing can confirm it, so it is tested on its own (not left pending)
    scoring = replace(cfg, confirm=min(cfg.confirm, max(0, n_dates - 2)))
    found = score_events(emb, fine, scoring, k, persistence=persistence, rebase=cfg.rebase)
    timings.update(found.timings)
    raw, scores, events = found.raw, found.scores, found.events
    written = time.perf_counter()
    times = pd.DatetimeIndex(emb["time"].values)
    meta = {"config": asdict(cfg), "source": source, "aoi": aoi}
    _write_parquet(_patch_scores_frame(emb, grid, raw, scores, cfg.method), out_dir / "patch_scores.parquet", meta)
    _write_maps(out_dir, grid, times, scores, series_crs(ds))
    timings["score"] = round(timings["score"] + time.perf_counter() - written, 3)  # writing the scores is scoring
    with _timed(timings, "discover"):
        from changescope.discover.pipeline import discover_events

        changes = discover_events(events, grid, aoi=aoi, crs=series_crs(ds), config=cfg, out=out_dir)
    _write_change_date_map(out_dir, grid, changes, series_crs(ds))
    n_confirmed = int(changes["confirmed"].sum()) if len(changes) else 0
    summary = {
        "changescope_run": 1,
        "source": source,
        "aoi": aoi,
        "config": asdict(cfg),
        "persistence_used": persistence,
        "confirm_used": scoring.confirm,
        "scoring_passes": found.passes,
        "threshold": events.threshold if np.isfinite(events.threshold) else None,
        "decision": None if events.decision is None else events.decision.to_json(),
        "n_dates": n_dates,
        "grid": {"rows": grid.n_rows, "cols": grid.n_cols, "size": grid.size, "stride": grid.stride},
        "n_events": len(changes),
        "n_confirmed": n_confirmed,
        "n_pending": len(changes) - n_confirmed,
        "timings_s": timings,
        "versions": _versions(),
        "outputs": sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")),
    }
    _write_json(out_dir / "run.json", summary)
    if report:
        from changescope.report import build_report

        with _timed(timings, "report"):
            build_report(out_dir)
    top = changes.sort_values(["confirmed", "rank"], ascending=[False, True]).head(20) if len(changes) else changes
    return RunResult(
        out=out_dir,
        n_events=len(changes),
        threshold=events.threshold,
        timings=timings,
        top=top,
        n_confirmed=n_confirmed,
    )


def load_run(run_dir: PathLike) -> dict[str, Any]:
    """Read a finished run's ``run.json``.

    Raises:
        ParameterError: ``run_dir`` holds no finished run.
    """
    path = Path(run_dir) / "run.json"
    if not path.exists():
        raise ParameterError(f"{str(run_dir)!r} holds no finished run (no run.json); run `changescope run` first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
