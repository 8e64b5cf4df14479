"""The ``changescope synth`` command: write a synthetic AOI in the DynamicEarthNet layout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from changescope.cli.options import Quiet, Seed

__all__ = ["register"]


def synth(
    out: Annotated[Path, typer.Argument(help="Dataset root to write the AOI into (created if missing).")],
    seed: Seed = 0,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels (>= 64, 3 m pixels).")] = 1024,
    months: Annotated[int, typer.Option("--months", help="Number of monthly dates (>= 2).")] = 24,
    aoi: Annotated[str, typer.Option("--aoi", help="AOI id (letters, digits, underscores).")] = "aoi_0000",
    start: Annotated[str, typer.Option("--start", help="First date, the first day of a month.")] = "2018-01-01",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing AOI of the same id.")] = False,
    quiet: Quiet = False,
) -> None:
    """Write a synthetic AOI with known change events, in the DynamicEarthNet layout.

    Monthly 4-band images (with cloud/shadow mask sidecars), 7-class one-hot labels, the change events as
    GeoParquet and a log of the nuisances of every date. The same seed gives the same pixels.
    """
    from changescope.synthetic import make_aoi

    console = Console(quiet=quiet)
    began = time.perf_counter()
    with Progress(
        TextColumn("[bold]synth[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    ) as bar:
        task = bar.add_task(aoi, total=months)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        info = make_aoi(out, seed, size, months, aoi=aoi, start=start, overwrite=overwrite, progress=advance)
    elapsed = time.perf_counter() - began
    table = Table(title=f"{info.aoi}: {size}x{size} px, {months} dates, {elapsed:.1f} s", show_header=True)
    table.add_column("event type")
    table.add_column("events", justify="right")
    for kind, count in info.events["type"].value_counts(sort=False).items():
        table.add_row(str(kind), str(count))
    console.print(table)
    console.print(f"images  {info.layout.image_dir}", highlight=False)
    console.print(f"labels  {info.layout.label_dir}", highlight=False)
    console.print(f"events  {info.layout.events_path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""
    app.command("synth")(synth)
