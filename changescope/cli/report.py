"""``changescope report`` (the self-contained HTML report) and ``changescope explore`` (2-D embedding maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["explore", "register", "report"]

RunDir = Annotated[Path, typer.Argument(help="A finished run folder (written by `changescope run`).")]
ReportRunDir = Annotated[
    str, typer.Argument(help="A finished run folder (written by `changescope run`), local or s3://bucket/run.")
]


def report(
    run_dir: ReportRunDir,
    top: Annotated[int, typer.Option("--top", "-n", help="Ranked changes shown in the gallery.")] = 24,
    max_px: Annotated[int, typer.Option("--max-px", help="Longest side of the per-date quicklooks.")] = 256,
) -> None:
    """Write RUN_DIR/report.html: imagery, score maps, ranked changes, change types, metrics and parameters."""
    from changescope.report import build_report

    path = build_report(run_dir, top=top, max_px=max_px)
    typer.echo(f"report written to {path} ({path.stat().st_size / 1e6:.1f} MB)")


def explore(
    run_dir: RunDir,
    method: Annotated[
        str, typer.Option("--method", "-m", help="Comma-separated projections: pca, tsne, umap.")
    ] = "pca,tsne,umap",
    max_points: Annotated[int, typer.Option("--max-points", help="Sampled (patch, date) embeddings.")] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same output).")] = 0,
) -> None:
    """Write 2-D maps (PCA, t-SNE, UMAP) of the run's embeddings and change vectors into RUN_DIR/figures/."""
    from changescope.report import explore as explore_run

    console = Console(highlight=False)
    paths = explore_run(run_dir, method.split(","), max_points=max_points, seed=seed, note=console.print)
    for p in paths:
        console.print(f"wrote {p}")


def register(app: typer.Typer) -> None:
    """Add the ``report`` and ``explore`` commands to ``app``."""
    app.command("report")(report)
    app.command("explore")(explore)
