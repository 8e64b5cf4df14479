"""The ``changescope demo`` command: synthesise the sample AOI, check it, run the main job, show the results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from changescope.cli.options import Quiet, Seed

__all__ = ["demo", "register"]


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo_out"),
    seed: Seed = 0,
    size: Annotated[int, typer.Option("--size", help="Side of the synthetic AOI in pixels.")] = 1024,
    months: Annotated[int, typer.Option("--months", help="Monthly dates.")] = 24,
    quiet: Quiet = False,
) -> None:
    """Synthesise the built-in sample AOI, inspect it, run the change pipeline on it and print the top changes."""
    import changescope
    from changescope.cli.run import changes_table
    from changescope.evaluate import evaluate_run
    from changescope.quality import check_series
    from changescope.report import build_report, explore
    from changescope.run import RunConfig, run_pipeline
    from changescope.synthetic import make_aoi

    console = Console(quiet=quiet)
    if not console.is_terminal:  # files and pipes: do not squeeze the table into 80 columns
        console.width = max(console.width, 120)
    root = out / "aoi"
    console.rule("1. synthesise the sample AOI")
    info = make_aoi(root, seed, size, months, overwrite=True)
    console.print(f"{size}x{size} px, {months} monthly dates, {len(info.events)} change events -> {root}")
    console.rule("2. inspect the series")
    ds = changescope.open(root, aoi=info.aoi)
    report = check_series(ds)
    frame = report.to_frame()
    console.print(
        f"valid fraction {frame['valid_fraction'].min():.2f}-{frame['valid_fraction'].max():.2f}; "
        f"largest co-registration shift {frame['shift'].max():.2f} px; {int(frame['warning'].sum())} date(s) flagged"
    )
    console.rule("3. run: embed -> score -> events -> discover")
    run_dir = out / "run"
    result = run_pipeline(ds, run_dir, RunConfig(seed=seed), progress=not quiet)
    console.print(changes_table(result.top, f"{result.headline}; the 10 to look at first"))
    console.rule("4. evaluate against the known events, explore, report")
    metrics = evaluate_run(run_dir)
    patch = metrics["patch"]
    console.print(
        f"patch-level ROC AUC {patch['auc']:.3f}, average precision {patch['ap']:.3f}, "
        f"best F1 {patch['best_f1']:.3f}; pixel F1 {metrics['pixel']['f1']:.3f}"
    )
    explore(run_dir, methods=("pca", "tsne", "umap"), seed=seed)
    build_report(run_dir)
    console.rule("outputs")
    for name in (
        "changes.parquet",
        "patch_scores.parquet",
        "maps",
        "embeddings.zarr",
        "clusters.json",
        "metrics.json",
        "run.json",
    ):
        console.print(f"  {out / 'run' / name}", highlight=False)
    console.print(f"report (open it in a browser): {result.report}", highlight=False)
    console.print(
        f"workbench (map, ranked changes, find similar, labels): changescope serve {out / 'run'}", highlight=False
    )


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""
    app.command("demo")(demo)
