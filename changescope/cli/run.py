"""The ``changescope run``, ``score`` and ``discover`` commands: the main job, and its stages rerun alone.

``run`` embeds, scores and discovers, then builds the report. ``score RUN_DIR`` rescores a finished run with
other scoring options (and rediscovers with the run's discover options), ``discover RUN_DIR`` reclusters and
reranks it: neither re-embeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from changescope.cli import stage_options as so
from changescope.cli.options import Align, City, DateOpt, DropIncomplete, Quiet, Reproject, Seed, open_options

if TYPE_CHECKING:
    from changescope.run import RunResult

__all__ = ["changes_table", "discover", "register", "run", "score"]

RunDirArg = Annotated[str, typer.Argument(help="A run folder (the --out of changescope run), local or s3://.")]
RunInput = Annotated[
    str, typer.Argument(help="A series that changescope.open reads (folder, file, store, or s3://bucket/prefix).")
]
RunOut = Annotated[str, typer.Option("--out", "-o", help="Output folder, or an object-store prefix (s3://bucket/run).")]
NoReport = Annotated[bool, typer.Option("--no-report", help="Do not build report.html.")]


def changes_table(top: object, title: str, n: int = 10) -> Table:
    """A rich table of the top-ranked changes of a run."""
    import pandas as pd

    frame = top if isinstance(top, pd.DataFrame) else pd.DataFrame()
    table = Table(title=title, show_header=True)
    for col, justify in (
        ("rank", "right"),
        ("event_id", "left"),
        ("date", "left"),
        ("score", "right"),
        ("NFA", "right"),
        ("magnitude", "right"),
        ("cluster", "right"),
        ("rarity", "right"),
        ("status", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=col in ("event_id", "date"))  # type: ignore[arg-type]
    for _, row in frame.head(n).iterrows():
        table.add_row(
            str(int(row["rank"])),
            str(row["event_id"]),
            pd.Timestamp(row["time"]).strftime("%Y-%m-%d"),
            f"{row['score']:.2f}",
            f"{row['nfa']:.2g}" if "nfa" in row and pd.notna(row["nfa"]) else "-",
            f"{row['magnitude']:.3f}",
            str(int(row["cluster"])),
            f"{row['rarity']:.2f}",
            "confirmed" if bool(row["confirmed"]) else "pending",
        )
    return table


def _show(result: RunResult, quiet: bool, report: bool) -> None:
    console = Console(quiet=quiet)
    if not console.is_terminal:  # files and pipes: do not squeeze the table into 80 columns
        console.width = max(console.width, 120)
    console.print(changes_table(result.top, result.headline))
    console.print(f"outputs in {result.out}", highlight=False)
    if report:
        from changescope.report import build_report

        build_report(result.out)
        console.print(f"report (open it in a browser): {result.report}", highlight=False)


def run(
    input: RunInput,
    out: RunOut = "changescope_run",
    encoder: so.Encoder = so.EMBED.encoder,
    weights: so.Weights = so.EMBED.weights,
    method: so.MethodOpt = so.SCORE.method,
    reference: so.ReferenceOpt = so.SCORE.reference,
    k: so.K = so.SCORE.k,
    context: so.ContextOpt = so.SCORE.context,
    n_peers: so.NPeers = so.SCORE.n_peers,
    metric: so.MetricOpt = so.SCORE.metric,
    patch_size: so.PatchSize = so.EMBED.patch_size,
    stride: so.Stride = so.EMBED.stride,
    min_valid: so.MinValid = so.EMBED.min_valid,
    threshold: so.Threshold = str(so.SCORE.threshold),
    false_alarms: so.FalseAlarms = so.SCORE.false_alarms,
    fdr: so.Fdr = None,
    null_scale: so.NullScaleOpt = so.SCORE.null_scale,
    persistence: so.Persistence = so.SCORE.persistence,
    subdivide: so.Subdivide = so.EMBED.subdivide,
    confirm: so.Confirm = so.SCORE.confirm,
    rebase: so.Rebase = so.SCORE.rebase,
    from_weight: so.FromWeight = so.DISCOVER.from_weight,
    cluster: so.Cluster = so.DISCOVER.cluster,
    n_clusters: so.NClusters = so.DISCOVER.n_clusters,
    rank_by: so.RankByOpt = so.DISCOVER.rank_by,
    rank_weight: so.RankWeight = so.DISCOVER.rank_weight,
    format: Annotated[str | None, typer.Option("--format", help="Input format (auto-detected).")] = None,
    aoi: Annotated[str | None, typer.Option("--aoi", help="AOI id of a multi-AOI dataset root.")] = None,
    reproject: Reproject = False,
    align: Align = False,
    date: DateOpt = None,
    city: City = None,
    drop_incomplete: DropIncomplete = False,
    embeddings: Annotated[
        Path | None, typer.Option("--embeddings", help="Reuse the embeddings of this store or run folder.")
    ] = None,
    workers: so.Workers = so.EMBED.workers,
    scheduler: so.Scheduler = so.EMBED.scheduler,
    device: so.DeviceOpt = so.EMBED.device,
    isolate: so.Isolate = so.EMBED.isolate,
    seed: Seed = so.DISCOVER.seed,
    no_report: NoReport = False,
    quiet: Quiet = False,
) -> None:
    """Find and rank the changes of a series; write scores, maps, change catalog, run.json and report to --out."""
    from changescope.config import EmbedConfig, RunConfig
    from changescope.run import run_pipeline

    config = RunConfig(
        EmbedConfig(
            encoder=encoder,
            weights=weights,
            patch_size=patch_size,
            stride=stride,
            min_valid=min_valid,
            subdivide=subdivide,
            workers=workers,
            scheduler=scheduler,
            device=device,
            isolate=isolate,
        ),
        so.score_config(
            method=method,
            reference=reference,
            k=k,
            context=context,
            n_peers=n_peers,
            metric=metric,
            threshold=threshold,
            false_alarms=false_alarms,
            fdr=fdr,
            null_scale=null_scale,
            persistence=persistence,
            confirm=confirm,
            rebase=rebase,
        ),
        so.discover_config(
            from_weight=from_weight,
            cluster=cluster,
            n_clusters=n_clusters,
            rank_by=rank_by,
            rank_weight=rank_weight,
            seed=seed,
        ),
        format=format,
        aoi=aoi,
        open_options=open_options(
            reproject=reproject, align=align, date=date, city=city, drop_incomplete=drop_incomplete
        ),
    )
    result = run_pipeline(input, out, config, progress=not quiet, embeddings=embeddings)
    _show(result, quiet, not no_report)


def score(
    run_dir: RunDirArg,
    method: so.MethodOpt = so.SCORE.method,
    reference: so.ReferenceOpt = so.SCORE.reference,
    k: so.K = so.SCORE.k,
    context: so.ContextOpt = so.SCORE.context,
    n_peers: so.NPeers = so.SCORE.n_peers,
    metric: so.MetricOpt = so.SCORE.metric,
    threshold: so.Threshold = str(so.SCORE.threshold),
    false_alarms: so.FalseAlarms = so.SCORE.false_alarms,
    fdr: so.Fdr = None,
    null_scale: so.NullScaleOpt = so.SCORE.null_scale,
    persistence: so.Persistence = so.SCORE.persistence,
    confirm: so.Confirm = so.SCORE.confirm,
    rebase: so.Rebase = so.SCORE.rebase,
    no_report: NoReport = False,
    quiet: Quiet = False,
) -> None:
    """Rescore a finished run with these scoring options (its embeddings are reused), then rediscover its changes."""
    from changescope.run import rescore

    cfg = so.score_config(
        method=method,
        reference=reference,
        k=k,
        context=context,
        n_peers=n_peers,
        metric=metric,
        threshold=threshold,
        false_alarms=false_alarms,
        fdr=fdr,
        null_scale=null_scale,
        persistence=persistence,
        confirm=confirm,
        rebase=rebase,
    )
    _show(rescore(run_dir, cfg), quiet, not no_report)


def discover(
    run_dir: RunDirArg,
    from_weight: so.FromWeight = so.DISCOVER.from_weight,
    cluster: so.Cluster = so.DISCOVER.cluster,
    n_clusters: so.NClusters = so.DISCOVER.n_clusters,
    rank_by: so.RankByOpt = so.DISCOVER.rank_by,
    rank_weight: so.RankWeight = so.DISCOVER.rank_weight,
    seed: Seed = so.DISCOVER.seed,
    no_report: NoReport = False,
    quiet: Quiet = False,
) -> None:
    """Recluster and rerank the changes of a finished run with these options (scores and events are reused)."""
    from changescope.run import rediscover

    cfg = so.discover_config(
        from_weight=from_weight,
        cluster=cluster,
        n_clusters=n_clusters,
        rank_by=rank_by,
        rank_weight=rank_weight,
        seed=seed,
    )
    _show(rediscover(run_dir, cfg), quiet, not no_report)


def register(app: typer.Typer) -> None:
    """Add the ``run``, ``score`` and ``discover`` commands to ``app``."""
    app.command("run")(run)
    app.command("score")(score)
    app.command("discover")(discover)
