"""The ``changescope synth`` command: write a synthetic AOI in the DynamicEarthNet layout.

With ``--from-pair`` it writes instead a semi-real labelled series built from a real before/after pair, as a
folder of dated GeoTIFFs (:func:`changescope.synthetic.series_from_pair`). With ``--bands`` it writes a whole
synthetic Sentinel-2 L2A tile, bands at their native grids, block by block
(:func:`changescope.synthetic.write_s2_tile`).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from changescope.cli.options import Quiet, Seed
from changescope.errors import ParameterError

__all__ = ["register"]


def synth(
    out: Annotated[
        Path,
        typer.Argument(
            help="Dataset root to write the AOI into, or the --from-pair series folder (created if missing)."
        ),
    ],
    seed: Seed = 0,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Image side in pixels (>= 64, 3 m pixels; default 1024). With --bands: the 10 m grid side, a "
            "multiple of 6 (default 10980, a whole Sentinel-2 tile).",
        ),
    ] = None,
    months: Annotated[int, typer.Option("--months", help="Number of monthly dates (>= 2).")] = 24,
    aoi: Annotated[str, typer.Option("--aoi", help="AOI id (letters, digits, underscores).")] = "aoi_0000",
    start: Annotated[
        str | None,
        typer.Option(
            "--start", help="First date, the first day of a month (default 2018-01-01; 2020-01-01 with --from-pair)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing AOI of the same id (or the --from-pair OUT).")
    ] = False,
    quiet: Quiet = False,
    bands: Annotated[
        str | None,
        typer.Option(
            "--bands",
            help="Write a synthetic Sentinel-2 L2A tile instead: s2 (the 12 L2A bands at 10/20/60 m), s2-10m "
            "(B02,B03,B04,B08) or L2A tokens such as B02,B8A,B11; with an SCL cloud mask and change truth.",
        ),
    ] = None,
    block: Annotated[
        int, typer.Option("--block", help="--bands: block side written at a time, px (a multiple of 256).")
    ] = 1024,
    from_pair: Annotated[
        tuple[Path, Path] | None,
        typer.Option(
            "--from-pair",
            metavar="BEFORE AFTER",
            help="Build a series from a real pair: two raster files, or two folders of *_B01.tif ... band files.",
        ),
    ] = None,
    mask: Annotated[
        Path | None, typer.Option("--mask", help="Change mask of the pair (0/1, 0/255 or OSCD 1 = no, 2 = change).")
    ] = None,
    dates: Annotated[int, typer.Option("--dates", help="--from-pair: number of monthly dates (>= 2).")] = 12,
    change_month: Annotated[
        int, typer.Option("--change-month", help="--from-pair: index of the first date showing the change.")
    ] = 6,
    no_change: Annotated[
        bool, typer.Option("--no-change", help="--from-pair: the same series without the change (all before).")
    ] = False,
    gain: Annotated[float | None, typer.Option("--gain", help="--from-pair: gain half-range (default 0.08).")] = None,
    offset: Annotated[
        float | None, typer.Option("--offset", help="--from-pair: offset half-range (default 0.01).")
    ] = None,
    haze: Annotated[
        float | None, typer.Option("--haze", help="--from-pair: largest haze strength (default 0.04).")
    ] = None,
    shift: Annotated[
        float | None, typer.Option("--shift", help="--from-pair: largest shift in px (default 0.5).")
    ] = None,
    noise: Annotated[float | None, typer.Option("--noise", help="--from-pair: noise sigma (default 0.005).")] = None,
    season: Annotated[
        float | None, typer.Option("--season", help="--from-pair: vegetation cycle (default 0.25).")
    ] = None,
    cloud_dates: Annotated[
        float | None, typer.Option("--cloud-dates", help="--from-pair: share of cloudy dates (default 0.4).")
    ] = None,
) -> None:
    """Write a synthetic AOI with known change events, in the DynamicEarthNet layout.

    Monthly 4-band images (with cloud/shadow mask sidecars), 7-class one-hot labels, the change events as
    GeoParquet and a log of the nuisances of every date. The same seed gives the same pixels.

    With --from-pair BEFORE AFTER --mask MASK, write instead a labelled series of --dates monthly dates built from
    a real pair (before until --change-month, after from it on, each date with its own gain/offset, haze, shift,
    seasonal cycle, clouds and noise) as dated GeoTIFFs in OUT, which `changescope run OUT` reads. An OSCD city:
    --from-pair city/imgs_1 city/imgs_2 --mask city/cm/city-cm.tif. The AOI options are then ignored.

    With --bands s2, write instead a whole synthetic Sentinel-2 L2A tile into OUT: every band of every month as a
    COG at its native grid (10, 20 or 60 m), an SCL cloud mask, and the change events with a change-month raster
    in OUT/truth. It is written block by block in bounded memory; `changescope run OUT` reads it.
    """
    if bands is not None:
        if from_pair is not None:
            raise ParameterError("--bands and --from-pair write different things; pass one of them")
        _synth_tile(
            out,
            seed=seed,
            size=10980 if size is None else size,
            months=months,
            start=start or "2018-01-01",
            bands=bands,
            block=block,
            overwrite=overwrite,
            quiet=quiet,
        )
        return
    size = 1024 if size is None else size
    if from_pair is not None:
        nuisances = {"gain": gain, "offset": offset, "haze": haze, "shift": shift, "noise": noise, "season": season}
        nuisances["cloud_dates"] = cloud_dates
        _synth_from_pair(
            out,
            from_pair,
            mask,
            dates=dates,
            change_month=change_month,
            start=start or "2020-01-01",
            change=not no_change,
            nuisances={k: v for k, v in nuisances.items() if v is not None},
            seed=seed,
            overwrite=overwrite,
            quiet=quiet,
        )
        return
    from changescope.synthetic import make_aoi

    start = start or "2018-01-01"
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


def _synth_tile(
    out: Path,
    *,
    seed: int,
    size: int,
    months: int,
    start: str,
    bands: str,
    block: int,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Write the ``--bands`` tile into ``out`` with a progress bar, then a summary."""
    from changescope.synthetic import write_s2_tile

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
        task = bar.add_task(f"tile {size} px", total=months)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        info = write_s2_tile(
            out, seed, size, months, start=start, bands=bands, block=block, overwrite=overwrite, progress=advance
        )
    elapsed = time.perf_counter() - began
    files = [p for p in info.root.rglob("*") if p.is_file()]
    size_mib = sum(p.stat().st_size for p in files) / 2**20
    title = f"{size}x{size} px at 10 m, {months} dates, {len(files)} files, {size_mib:.1f} MiB, {elapsed:.1f} s"
    table = Table(title=title, show_header=True)
    table.add_column("event type")
    table.add_column("events", justify="right")
    for kind, count in info.events["type"].value_counts(sort=False).items():
        table.add_row(str(kind), str(count))
    console.print(table)
    console.print(f"bands   {', '.join(b.token for b in info.params.bands)} + SCL -> {info.root}", highlight=False)
    console.print(f"truth   {info.events_path.parent}", highlight=False)


def _synth_from_pair(
    out: Path,
    pair_paths: tuple[Path, Path],
    mask: Path | None,
    *,
    dates: int,
    change_month: int,
    start: str,
    change: bool,
    nuisances: dict[str, Any],
    seed: int,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Write the ``--from-pair`` series into ``out`` (replaced as a whole, atomically, with ``--overwrite``)."""
    import numpy as np

    from changescope.io.writers import atomic_path, write_series_folder
    from changescope.synthetic import PairNuisances, read_pair, series_from_pair

    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ParameterError(f"OUT {str(out)!r} exists and is not empty; pick a new folder or pass --overwrite")
    before, after = pair_paths
    pair = read_pair(before, after, mask)
    if "change" not in pair:
        raise ParameterError(
            f"--mask is missing: {str(before)!r} comes with no change mask; pass --mask FILE (0/1, 0/255 or OSCD 1/2)"
        )
    ds = series_from_pair(
        pair,
        dates=dates,
        change_month=change_month,
        start=start,
        change=change,
        nuisances=replace(PairNuisances(), **nuisances),
        seed=seed,
    )
    log = json.loads(ds.attrs["from_pair"])
    log |= {"before": str(before), "after": str(after), "mask": pair.attrs.get("mask_file")}
    with atomic_path(out) as tmp:
        write_series_folder(ds, tmp, cog=True)
        (tmp / "from_pair.json").write_text(json.dumps(log, indent=1))
    changed = int((np.asarray(ds["labels"].values[-1]) == 1).sum())
    cloudy = sum(1 for d in log["dates"] if d["cloud_fraction"] > 0)
    when = f"change on {log['change_date']}, {changed} changed pixels" if change else "no change"
    Console(quiet=quiet).print(
        f"{dates} dates {log['dates'][0]['date']} .. {log['dates'][-1]['date']}, {when}, {cloudy} cloudy -> {out}",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""
    app.command("synth")(synth)
