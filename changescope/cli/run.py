"""The ``changescope run`` command: the main job, open -> embed -> score -> events -> discover."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from changescope.cli.options import OutDir, Quiet, Seed

__all__ = ["changes_table", "register", "run"]


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


def run(
    input: Annotated[Path, typer.Argument(help="A series that changescope.open reads (folder, file, store).")],
    out: OutDir = Path("changescope_run"),
    encoder: Annotated[str, typer.Option("--encoder", "-e", help="Encoder name or checkpoint:PATH.")] = "spectral",
    weights: Annotated[str | None, typer.Option("--weights", help="Encoder weights (path, HF repo id).")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="Change score: distance or lof.")] = "distance",
    reference: Annotated[
        str, typer.Option("--reference", help="Reference: first, previous, rolling or season.")
    ] = "first",
    k: Annotated[int, typer.Option("--k", help="Reference dates for first/rolling.")] = 3,
    context: Annotated[
        str, typer.Option("--context", help="peers (compare with similar patches, default) or none.")
    ] = "peers",
    n_peers: Annotated[int, typer.Option("--n-peers", help="Peers per patch for --context peers.")] = 100,
    patch_size: Annotated[int, typer.Option("--patch-size", "-p", help="Patch side in pixels.")] = 32,
    stride: Annotated[int | None, typer.Option("--stride", help="Patch step in pixels.")] = None,
    min_valid: Annotated[float, typer.Option("--min-valid", help="Minimum clear fraction of a patch.")] = 0.5,
    threshold: Annotated[
        str,
        typer.Option(
            "--threshold",
            help="How changes are declared: nfa (a test with --false-alarms, default), fdr, or a split of the scores "
            "(otsu, gmm, quantile or a number), which finds changes even where nothing changed.",
        ),
    ] = "nfa",
    false_alarms: Annotated[
        float, typer.Option("--false-alarms", help="Expected false changes per 1000 patches (--threshold nfa).")
    ] = 1.0,
    fdr: Annotated[
        float | None,
        typer.Option("--fdr", help="Declare changes at this false-discovery rate instead (Benjamini-Hochberg)."),
    ] = None,
    persistence: Annotated[int, typer.Option("--persistence", help="Following dates confirming a change.")] = 1,
    subdivide: Annotated[
        int | None,
        typer.Option("--subdivide", help="Also score sub-patches of side patch/N (1 = patch scale only; auto: 2)."),
    ] = None,
    confirm: Annotated[int, typer.Option("--confirm", help="Next observations a score must hold for (0 = off).")] = 1,
    rebase: Annotated[
        bool,
        typer.Option("--rebase/--no-rebase", help="After a confirmed change, compare later dates with the new state."),
    ] = False,
    from_weight: Annotated[
        float,
        typer.Option("--from-weight", help="Weight of the before state in change descriptors (0 = change only)."),
    ] = 1.0,
    cluster: Annotated[str, typer.Option("--cluster", help="hdbscan or kmeans.")] = "hdbscan",
    n_clusters: Annotated[int | None, typer.Option("--n-clusters", help="Clusters for kmeans.")] = None,
    rank_by: Annotated[str, typer.Option("--rank-by", help="rarity, magnitude or mix.")] = "mix",
    format: Annotated[str | None, typer.Option("--format", help="Input format (auto-detected).")] = None,
    aoi: Annotated[str | None, typer.Option("--aoi", help="AOI id of a multi-AOI dataset root.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Local dask cluster workers.")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Existing dask scheduler address.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Find and rank the changes of a series; write scores, maps, change catalog and run.json to --out."""
    from changescope.run import RunConfig, run_pipeline

    thr: str | float
    try:
        thr = float(threshold)
    except ValueError:
        thr = threshold
    if fdr is not None and thr == "nfa":
        thr = "fdr"
    config = RunConfig(
        encoder=encoder,
        weights=weights,
        patch_size=patch_size,
        stride=stride,
        min_valid=min_valid,
        method=method,  # type: ignore[arg-type]
        reference=reference,  # type: ignore[arg-type]
        k=k,
        context=context,
        n_peers=n_peers,
        threshold=thr,  # type: ignore[arg-type]
        false_alarms=false_alarms,
        fdr=0.05 if fdr is None else fdr,
        persistence=persistence,
        subdivide=subdivide,
        confirm=confirm,
        rebase=rebase,
        from_weight=from_weight,
        cluster=cluster,
        n_clusters=n_clusters,
        rank_by=rank_by,
        format=format,
        aoi=aoi,
        workers=workers,
        scheduler=scheduler,
        device=device,
        seed=seed,
    )
    console = Console(quiet=quiet)
    if not console.is_terminal:  # files and pipes: do not squeeze the table into 80 columns
        console.width = max(console.width, 120)
    result = run_pipeline(input, out, config, progress=not quiet)
    console.print(changes_table(result.top, result.headline))
    console.print(f"outputs in {result.out}", highlight=False)
    if result.report.exists():
        console.print(f"report (open it in a browser): {result.report}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""
    app.command("run")(run)
