"""The ``changescope train`` command group: build pretraining sets and train in-domain encoders."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from changescope.cli.options import Quiet, Seed
from changescope.errors import ParameterError

if TYPE_CHECKING:
    from changescope.train.geosample import DatePlan

__all__ = ["default_config", "register", "sample_locations", "ssl_command", "train_app"]

train_app = typer.Typer(
    name="train",
    help="Build self-supervised pretraining sets and train in-domain encoders (SeCo / CACo).",
    no_args_is_help=True,
)


def _date_plan(dates: str | None, older_year: int | None, recent_year: int | None, per_year: int | None) -> DatePlan:
    """The date plan the CLI options describe (``DatePlan.yearly()`` when none is given)."""
    from changescope.train.geosample import DatePlan

    if dates is not None:
        if older_year is not None or recent_year is not None or per_year is not None:
            raise ParameterError(
                "--dates cannot be combined with --older-year/--recent-year/--per-year; give one or the other"
            )
        items = [d for d in (part.strip() for part in dates.split(",")) if d]
        return DatePlan.from_dates(items)
    return DatePlan.yearly(
        older_year=2018 if older_year is None else older_year,
        recent_year=2022 if recent_year is None else recent_year,
        per_year=4 if per_year is None else per_year,
    )


@train_app.command("sample-locations")
def sample_locations(
    centres: Annotated[
        Path, typer.Argument(help="CSV or Parquet of centres: lon, lat (degrees), optional weight and name.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="GeoParquet file to write (replaced atomically).")],
    n: Annotated[int, typer.Option("--n", "-n", help="Number of locations to draw.")] = 1000,
    sigma_km: Annotated[
        float, typer.Option("--sigma-km", help="Gaussian offset per axis, km (CACo: 5, SeCo: 50).")
    ] = 5.0,
    land_mask: Annotated[
        Path | None, typer.Option("--land-mask", help="Single-band raster, any CRS: non-zero = land, 0 = water.")
    ] = None,
    dates: Annotated[
        str | None,
        typer.Option("--dates", help="Comma-separated ISO dates, split into older/recent halves at the largest gap."),
    ] = None,
    older_year: Annotated[int | None, typer.Option("--older-year", help="Year of the older half [2018].")] = None,
    recent_year: Annotated[int | None, typer.Option("--recent-year", help="Year of the recent half [2022].")] = None,
    per_year: Annotated[
        int | None, typer.Option("--per-year", help="Dates per year, first day of each period: 1,2,3,4,6,12 [4].")
    ] = None,
    max_tries: Annotated[int, typer.Option("--max-tries", help="Draws allowed per point on a land mask.")] = 100,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Draw locations around weighted centres (cities) and their acquisition dates, for a SeCo/CACo pretraining set.

    Each location picks a centre (proportionally to its weight), is offset by an isotropic Gaussian of --sigma-km
    on the WGS84 ellipsoid and, with --land-mask, is redrawn until it falls on land. Every location gets the same
    target dates, split into an older and a recent half years apart: by default 1 Jan, 1 Apr, 1 Jul and 1 Oct of
    2018 and of 2022. Writes one row per location as GeoParquet; the same seed gives the same file.
    """
    from changescope.train.geosample import sample_locations as draw
    from changescope.train.geosample import write_locations

    console = Console(quiet=quiet)
    plan = _date_plan(dates, older_year, recent_year, per_year)
    began = time.perf_counter()
    locations = draw(centres, n, sigma_km=sigma_km, land_mask=land_mask, dates=plan, seed=seed, max_tries=max_tries)
    path = write_locations(locations, out)
    elapsed = time.perf_counter() - began

    table = Table(title=f"{len(locations)} locations, {elapsed:.1f} s", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value")
    table.add_row("centres used", str(locations["centre"].nunique()))
    table.add_row("sigma", f"{sigma_km:g} km")
    table.add_row("median distance", f"{float(locations['distance_km'].median()):.2f} km")
    rejected = int(locations["draws"].sum()) - len(locations)
    table.add_row("rejected draws", f"{rejected} (off land)" if land_mask is not None else "0 (no land mask)")
    table.add_row("older dates", ", ".join(d.isoformat() for d in plan.older))
    table.add_row("recent dates", ", ".join(d.isoformat() for d in plan.recent))
    console.print(table)
    console.print(f"locations  {path}", highlight=False)


@train_app.command("ssl")
def ssl_command(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="YAML configuration; `changescope train default-config` writes one."),
    ],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in the out folder from its newest checkpoint.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder; overrides `out` of the configuration.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Overrides optim.epochs (with --resume: extend a finished run).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Train an in-domain encoder self-supervised on your own unlabelled series (MoCo v2, SeCo or CACo).

    Cuts the configured series into locations, trains a momentum-contrast encoder (ssl.mode: moco, seco or caco;
    CPU by default, CUDA when present) and writes a checkpoint every epoch into the out folder. An interrupted run
    continues with --resume and ends with the same encoder as an uninterrupted one. The final encoder,
    OUT/encoder.safetensors, is used as `--encoder checkpoint:OUT/encoder.safetensors` by embed, run and benchmark.
    """
    from changescope.train.config import load_config, with_overrides
    from changescope.train.ssl import train_ssl

    console = Console(quiet=quiet)
    cfg = with_overrides(load_config(config), out=out, epochs=epochs)
    began = time.perf_counter()
    result = train_ssl(cfg, resume=resume, progress=not quiet)
    elapsed = time.perf_counter() - began

    last = result.history[-1]
    table = Table(title=f"{cfg.ssl.mode} training, {result.epochs} epochs, {elapsed:.1f} s", show_header=False)
    table.title_justify = "left"
    table.add_column("what")
    table.add_column("value")
    table.add_row("final loss", f"{last['loss']:.4f}")
    if last.get("changed_fraction") is not None:
        table.add_row("changed locations", f"{last['changed_fraction']:.1%}")
    table.add_row("run folder", str(result.out))
    console.print(table)
    console.print(f"encoder  {result.encoder}", highlight=False, soft_wrap=True)
    console.print(
        f"use it   changescope run INPUT --encoder checkpoint:{result.encoder}", highlight=False, soft_wrap=True
    )


@train_app.command("default-config")
def default_config(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the configuration to this file instead of printing it.")
    ] = None,
) -> None:
    """Print (or write) a commented training configuration with every field at its default."""
    from changescope.train.config import DEFAULT_CONFIG_YAML
    from changescope.train.state import write_text

    if out is None:
        typer.echo(DEFAULT_CONFIG_YAML, nl=False)
        return
    write_text(DEFAULT_CONFIG_YAML, out)
    typer.echo(f"wrote {out}; edit data.inputs and out, then run `changescope train ssl --config {out}`")


def register(app: typer.Typer) -> None:
    """Add the ``train`` command group to ``app``."""
    app.add_typer(train_app)
