"""The stages of a run, each reading the previous stage's files and writing its own (:mod:`changescope.rundir`).

- :func:`embed_stage`: the series -> ``embeddings.zarr`` (+ ``subpatches.zarr``), resumable;
- :func:`score_stage`: the stores -> ``patch_scores.parquet``, ``maps/score_<date>.tif``, and the events
  (``events.parquet`` + ``event_states.npy``: the before and after states of each event);
- :func:`discover_stage`: the events -> ``changes.parquet``, ``change_vectors.npy``, ``clusters.json`` and
  ``maps/change_date.tif``.

``changescope run`` chains the three; ``changescope score RUN_DIR`` and ``changescope discover RUN_DIR`` rerun one
stage (and the ones after it) on the files of a finished run, so re-thresholding or re-clustering never re-embeds.
Each stage records its configuration and key in the manifest (:class:`~changescope.rundir.RunDir`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from changescope.config import ISOLATE_PIXEL_DATES, DiscoverConfig, EmbedConfig, ScoreConfig
from changescope.errors import ChangescopeError, ParameterError
from changescope.io.writers import atomic_path, write_geotiff
from changescope.patch_scores import PatchScores, write_parquet
from changescope.rundir import RunDir
from changescope.storepath import AnyPath, open_binary

if TYPE_CHECKING:
    import xarray as xr

    from changescope.change.events import Events
    from changescope.grid import PatchGrid

__all__ = ["Embedded", "Scored", "discover_stage", "embed_stage", "read_events", "score_stage"]


@dataclass
class Embedded:
    """The embedding stage's stores.

    Attributes:
        emb: The patch embeddings (lazy).
        fine: The sub-patch embeddings, or ``None``.
        subdivide: Sub-patches per patch side (1 = none).
        key: The stage's key.
        grid: The patch grid.
    """

    emb: xr.Dataset
    fine: xr.Dataset | None
    subdivide: int
    key: str
    grid: PatchGrid


@dataclass
class Scored:
    """What the scoring stage found (and wrote).

    Attributes:
        events: The events (before discovery).
        key: The stage's key.
        info: Counts and settings for ``run.json`` (``confirm_used``, ``persistence_used``, ``scoring_passes``,
            ``threshold``, ``decision``, ``n_dates``).
        timings: Seconds spent.
    """

    events: Events
    key: str
    info: dict[str, Any]
    timings: dict[str, float]


def embed_here(ds: xr.Dataset, encoder: str, kw: dict[str, Any], overwrite: bool) -> AnyPath:
    """Embed in this process (a store made with other parameters or dates is redone); returns the store's path."""
    from changescope.embed import embed_series
    from changescope.embed.store import StoreMismatchError

    try:
        return embed_series(ds, encoder, overwrite=overwrite, **kw)
    except StoreMismatchError:  # made with other parameters or dates: redo it
        return embed_series(ds, encoder, overwrite=True, **kw)


def isolates(ds: xr.Dataset, cfg: EmbedConfig) -> bool:
    """Whether the embedding runs in a child process (:attr:`~changescope.config.EmbedConfig.isolate`)."""
    if cfg.isolate is not None:
        return cfg.isolate
    if cfg.workers is not None or cfg.scheduler is not None:
        return False
    lazy = all(var.chunks is not None for var in ds.data_vars.values())
    pixel_dates = ds.sizes.get("time", 1) * ds.sizes.get("y", 1) * ds.sizes.get("x", 1)
    return lazy and pixel_dates >= ISOLATE_PIXEL_DATES


def _embed(ds: xr.Dataset, cfg: EmbedConfig, kw: dict[str, Any], overwrite: bool) -> AnyPath:
    if isolates(ds, cfg):
        from changescope.embed.isolate import call_in_child

        return call_in_child(embed_here, ds, cfg.encoder, kw, overwrite)
    return embed_here(ds, cfg.encoder, kw, overwrite)


def _reused_store(path: AnyPath, name: str) -> AnyPath | None:
    store = path / name if (path / name).is_dir() else None
    if name == "embeddings.zarr" and store is None and (path / ".zattrs").is_file():
        return path
    return store


def embed_stage(
    rd: RunDir,
    ds: xr.Dataset,
    cfg: EmbedConfig,
    input_key: str,
    *,
    progress: bool = True,
    embeddings: AnyPath | None = None,
) -> Embedded:
    """Embed the series into the run folder, resuming a store of the same input and parameters.

    Args:
        rd: The run folder.
        ds: The series.
        cfg: The embedding configuration.
        input_key: The input's fingerprint (a changed input recomputes the stores).
        progress: Show progress bars.
        embeddings: Reuse this store (or the stores of this run folder) instead of embedding; it must hold the
            series' dates on the same grid.

    Raises:
        ParameterError: A reused store does not match the series.
    """
    from changescope.change.multiscale import auto_subdivide, subpatch_size
    from changescope.embed import open_embeddings
    from changescope.grid import PatchGrid

    grid = PatchGrid.for_series(ds, cfg.patch_size, cfg.stride)
    config = dataclasses.asdict(cfg)
    same_files = {k: v for k, v in config.items() if k != "isolate"}  # where it runs changes no file
    key = rd.stage_key("embed", input_key, {**same_files, "reused": str(embeddings) if embeddings else None})
    fresh = not rd.is_current("embed", key)
    rd.begin("embed", key, keep_own=True)
    kw: dict[str, Any] = {
        "weights": cfg.weights,
        "patch_size": cfg.patch_size,
        "stride": cfg.stride,
        "out": rd.embeddings,
        "block": cfg.block,
        "min_valid": cfg.min_valid,
        "device": cfg.device,
        "workers": cfg.workers,
        "scheduler": cfg.scheduler,
        "progress": progress,
    }
    k = auto_subdivide(cfg.patch_size, grid.stride) if cfg.subdivide is None else cfg.subdivide
    sub = subpatch_size(cfg.patch_size, grid.stride, k)
    reused = _reused_store(embeddings, "embeddings.zarr") if embeddings is not None else None
    if embeddings is not None and reused is None:
        raise ParameterError(f"embeddings={str(embeddings)!r} is neither an embeddings store nor a run folder")
    joint = reused is None and sub is not None  # both stores from one read and forward pass of each block
    if joint:
        kw = {**kw, "subpatches": rd.subpatches, "subpatch_size": sub}
    try:
        emb = open_embeddings(reused) if reused is not None else open_embeddings(_embed(ds, cfg, kw, fresh))
    except ChangescopeError as err:
        if rd.embeddings.exists() and reused is None and "rerun" not in str(err):
            raise type(err)(
                f"{err}; the finished part is kept: fix this and rerun the same command to resume"
            ) from None
        raise
    if reused is not None:
        _check_reused(emb, ds, grid, reused)
    fine = open_embeddings(rd.subpatches) if joint else None
    if sub is not None and not joint:
        fine_kw = {**kw, "patch_size": sub, "stride": sub, "out": rd.subpatches}
        fine_reused = _reused_store(embeddings, "subpatches.zarr") if embeddings is not None else None
        if fine_reused is not None and int(open_embeddings(fine_reused).attrs["patch_size"]) == sub:
            fine = open_embeddings(fine_reused)
        else:
            fine = open_embeddings(_embed(ds, cfg, fine_kw, fresh))
    rd.finish("embed", key, config, subdivide=k, reused=str(reused) if reused else None)
    return Embedded(emb, fine, k, key, grid)


def _check_reused(emb: xr.Dataset, ds: xr.Dataset, grid: PatchGrid, path: AnyPath) -> None:
    times = pd.DatetimeIndex(ds["time"].values)
    same = pd.DatetimeIndex(emb["time"].values).equals(times)
    shape = (emb.sizes["row"], emb.sizes["col"])
    if not same or shape != grid.shape or int(emb.attrs["patch_size"]) != grid.size:
        raise ParameterError(
            f"embeddings {str(path)!r} ({emb.sizes['time']} dates, {shape} patches of {emb.attrs['patch_size']} px) "
            f"do not match the series ({len(times)} dates, {grid.shape} patches of {grid.size} px)"
        )


def _date_code(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Dates as ``YYYYMMDD`` integers (0 for a missing date)."""
    idx = pd.DatetimeIndex(times)
    code = idx.year * 10000 + idx.month * 100 + idx.day
    return np.where(idx.isna(), 0, np.asarray(code, dtype=np.float64)).astype(np.int32)


def _write_score_maps(rd: RunDir, grid: PatchGrid, times: pd.DatetimeIndex, scores: np.ndarray) -> None:
    rd.maps.mkdir(parents=True, exist_ok=True)
    for t, when in enumerate(times):
        write_geotiff(
            rd.maps / f"score_{when.strftime('%Y-%m-%d')}.tif",
            scores[t].astype(np.float32),
            crs=grid.crs,
            transform=grid.patch_transform(),
            nodata=float("nan"),
            descriptions=["change score"],
            cog=True,
            tags={"date": when.strftime("%Y-%m-%d")},
        )


def _write_events(rd: RunDir, events: Events, meta: dict[str, Any]) -> None:
    write_parquet(events.frame, rd.path("events.parquet"), meta)
    with atomic_path(rd.path("event_states.npy")) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.stack([events.before, events.after]).astype(np.float32), allow_pickle=False)


def read_events(rd: RunDir) -> Events:
    """The events the scoring stage wrote (``events.parquet`` + ``event_states.npy``).

    Raises:
        ParameterError: The folder holds no finished scoring stage.
        CorruptFileError: The files are unreadable.
    """
    import json

    import pyarrow.parquet as pq

    from changescope.change.calibrate import Decision
    from changescope.change.events import Events
    from changescope.errors import CorruptFileError

    rd.stage_record("score")
    path, states = rd.path("events.parquet"), rd.path("event_states.npy")
    try:
        with open_binary(path) as fh:
            table = pq.read_table(fh)
        with open_binary(states) as fh:
            both = np.load(fh, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise CorruptFileError(
            f"{str(path)!r} or {str(states)!r} is unreadable ({type(err).__name__}); rerun `changescope score`"
        ) from None
    meta = json.loads((table.schema.metadata or {}).get(b"changescope", b"{}"))
    decision = Decision.from_json(meta["decision"]) if meta.get("decision") else None
    threshold = meta.get("threshold")
    frame = table.to_pandas()
    return Events(frame, both[0], both[1], float("nan") if threshold is None else float(threshold), decision)


MIN_PEER_PATCHES = 8
"""Fewest patches with a clear observation for ``--context peers`` (a patch needs others to compare with)."""


def _check_scorable(emb: xr.Dataset, grid: PatchGrid, cfg: ScoreConfig) -> None:
    """Say what is really wrong before scoring a series that cannot be scored."""
    from changescope.change.store import store_min_valid

    n_dates = emb.sizes["time"]
    if n_dates < 2:
        raise ParameterError(f"the series has {n_dates} date(s); change detection needs at least 2 dates")
    vf = np.asarray(emb["valid_fraction"].values, dtype=np.float64)
    min_valid = store_min_valid(emb)
    clear = np.nan_to_num(vf, nan=0.0) >= max(min_valid, 1e-9)
    if not clear.any():
        raise ParameterError(
            f"no patch of any date is clear enough to score (--min-valid {min_valid:g}): the series is all nodata or "
            "cloud; check its nodata value and masks, or lower --min-valid"
        )
    if clear.any(axis=(1, 2)).sum() < 2:
        raise ParameterError("only one date has clear patches; change detection needs at least 2 clear dates")
    n_clear = int(clear.any(axis=0).sum())
    if cfg.context == "peers" and n_clear < MIN_PEER_PATCHES:
        raise ParameterError(
            f"only {n_clear} patch(es) of {grid.size} px are clear ({grid.n_rows}x{grid.n_cols} grid); peer scoring "
            f"needs at least {MIN_PEER_PATCHES}: pass a smaller --patch-size or --context none"
        )


def score_stage(rd: RunDir, embedded: Embedded, cfg: ScoreConfig) -> Scored:
    """Score the stores, write the scores, maps and events, and return the events (see the module docstring)."""
    from changescope.change.store import score_events

    emb, grid = embedded.emb, embedded.grid
    config = dataclasses.asdict(cfg)
    key = rd.stage_key("score", embedded.key, {**config, "subdivide": embedded.subdivide})
    rd.begin("score", key)
    n_dates = emb.sizes["time"]
    if cfg.method == "lof" and n_dates < 3:
        raise ParameterError(
            f"--method lof needs reference dates to compare with, but the series has {n_dates} date(s); use "
            "--method distance for two-date pairs such as OSCD"
        )
    _check_scorable(emb, grid, cfg)
    persistence = min(cfg.persistence, max(0, n_dates - 2))
    # a two-date pair has one scored date: nothing can confirm it, so it is tested on its own (not left pending)
    used = dataclasses.replace(cfg, confirm=min(cfg.confirm, max(0, n_dates - 2)))
    found = score_events(emb, embedded.fine, used, embedded.subdivide, persistence=persistence, rebase=cfg.rebase)
    t0 = time.perf_counter()
    times = pd.DatetimeIndex(emb["time"].values)
    meta = {"config": config, "subdivide": embedded.subdivide}
    vf = np.asarray(emb["valid_fraction"].values, dtype=np.float64)
    scores = PatchScores(times, found.scores, found.raw, vf, grid.size, grid.stride, cfg.method, meta)
    scores.write(rd.patch_scores)
    _write_score_maps(rd, grid, times, found.scores)
    events = found.events
    info = {
        "persistence_used": persistence,
        "confirm_used": used.confirm,
        "scoring_passes": found.passes,
        "threshold": events.threshold if np.isfinite(events.threshold) else None,
        "decision": None if events.decision is None else events.decision.to_json(),
        "n_dates": n_dates,
    }
    _write_events(rd, events, {**meta, **info})
    timings = dict(found.timings)
    timings["score"] = round(timings.get("score", 0.0) + time.perf_counter() - t0, 3)  # writing is scoring
    rd.finish("score", key, config, **info)
    return Scored(events, key, info, timings)


def _write_change_date_map(rd: RunDir, grid: PatchGrid, changes: pd.DataFrame) -> None:
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
    rd.maps.mkdir(parents=True, exist_ok=True)
    write_geotiff(
        rd.maps / "change_date.tif",
        first,
        crs=grid.crs,
        transform=grid.patch_transform(),
        nodata=0,
        descriptions=["break date (YYYYMMDD)", "last clear date before (YYYYMMDD)"],
        cog=True,
    )


def discover_stage(
    rd: RunDir,
    events: Events,
    grid: PatchGrid,
    cfg: DiscoverConfig,
    *,
    aoi: str,
    score_key: str,
    metadata: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Cluster, score rarity and rank the events; write the catalog, the change types and the break map.

    ``metadata`` (the run's parameters and versions) goes into ``changes.parquet``'s schema metadata.
    """
    from changescope.discover.pipeline import discover_events

    config = dataclasses.asdict(cfg)
    key = rd.stage_key("discover", score_key, config)
    rd.begin("discover", key)
    changes: pd.DataFrame = discover_events(
        events, grid, aoi=aoi, crs=grid.crs, config=cfg, out=rd.root, metadata=metadata
    )
    _write_change_date_map(rd, grid, changes)
    n_confirmed = int(changes["confirmed"].sum()) if len(changes) else 0
    rd.finish("discover", key, config, n_events=len(changes), n_confirmed=n_confirmed)
    return changes
