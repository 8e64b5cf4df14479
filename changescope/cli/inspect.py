"""``changescope inspect``: a series' summary and per-date quality (valid pixels, co-registration, radiometry)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from changescope.cli.options import Align, City, DateOpt, DropIncomplete, Reproject, open_options
from changescope.errors import ChangescopeError, ParameterError
from changescope.types import ShiftReference

if TYPE_CHECKING:
    import xarray as xr

    from changescope.quality import QualityReport

__all__ = ["inspect_series", "register"]

_MAX_MEDIAN_BANDS = 6


def _fmt(value: float, spec: str = "+.2f") -> str:
    return format(value, spec) if math.isfinite(value) else "n/a"


def _summary(ds: xr.Dataset, path: Path) -> Table:
    from changescope.series import series_crs, series_transform

    crs = series_crs(ds)
    epsg = crs.to_epsg()
    res = series_transform(ds)
    import pandas as pd

    times = pd.DatetimeIndex(ds["time"].values)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("series", escape(str(path)))
    grid.add_row("sensor", escape(f"{ds.attrs.get('sensor', 'unknown')}  (format {ds.attrs.get('format', '?')})"))
    grid.add_row(
        "size",
        f"{ds.sizes['time']} dates x {ds.sizes['band']} bands x {ds.sizes['y']} x {ds.sizes['x']} px"
        f"  ({abs(res.a):g} x {abs(res.e):g} CRS units per px)",
    )
    grid.add_row("CRS", f"EPSG:{epsg}" if epsg is not None else escape(crs.name))
    grid.add_row("bands", escape(", ".join(str(b) for b in ds["band"].values)))
    grid.add_row("dates", f"{times[0]:%Y-%m-%d} .. {times[-1]:%Y-%m-%d}")
    return grid


def _quality_table(report: QualityReport, band_names: list[str]) -> Table:
    table = Table(title=f"Quality against {report.reference:%Y-%m-%d} ({report.reference_mode})", title_justify="left")
    for name in ("date", "valid %", "dy", "dx", "|shift|", "corr", "brightness"):
        table.add_column(name, justify="left" if name == "date" else "right", no_wrap=name == "date")
    show_medians = len(band_names) <= _MAX_MEDIAN_BANDS
    if show_medians:
        table.add_column(escape("median " + "/".join(band_names)), justify="right")
    table.add_column("flag")
    for d in report.dates:
        flags = []
        if d.is_reference:
            flags.append("[dim]ref[/]")
        if d.shift_exceeded:
            flags.append("[yellow]SHIFT?[/]" if d.shift.doubtful else "[bold yellow]SHIFT[/]")
        if d.low_valid:
            flags.append("[bold yellow]LOW VALID[/]")
        if not d.shift.measured:
            flags.append("[yellow]no shift[/]")
        row = [
            d.date,
            _fmt(100 * d.valid_fraction, ".1f"),
            _fmt(d.shift.dy),
            _fmt(d.shift.dx),
            _fmt(d.shift.magnitude, ".2f"),
            _fmt(d.shift.correlation, ".2f"),
            _fmt(d.brightness, ".4g"),
        ]
        if show_medians:
            row.append("/".join(_fmt(b.median, ".4g") for b in d.bands))
        table.add_row(*row, " ".join(flags))
    return table


def inspect_series(
    path: Annotated[Path, typer.Argument(help="A series: folder, file or store that changescope.open reads.")],
    reader_format: Annotated[
        str | None, typer.Option("--format", "-f", help="Reader name (geotiff_folder, oscd, ...); auto when omitted.")
    ] = None,
    aoi: Annotated[str | None, typer.Option("--aoi", help="AOI id inside a DynamicEarthNet root.")] = None,
    reference: Annotated[
        ShiftReference, typer.Option("--reference", help="Date the shifts are measured against.")
    ] = "first",
    max_shift: Annotated[float, typer.Option("--max-shift", help="Flag dates shifted by more pixels than this.")] = 0.5,
    band: Annotated[str | None, typer.Option("--band", help="Band to measure shifts on (default: band mean).")] = None,
    fix_dir: Annotated[
        Path | None,
        typer.Option("--fix-shift", metavar="OUT_DIR", help="Write a co-registered copy as dated GeoTIFFs here."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", metavar="FILE", help="Write the report as JSON.")] = None,
    reproject: Reproject = False,
    align: Align = False,
    date: DateOpt = None,
    city: City = None,
    drop_incomplete: DropIncomplete = False,
) -> None:
    """Summarise a series and check each date: valid pixels, shift against a reference date, radiometry.

    Shifts are sub-pixel displacements measured by phase correlation (then refined) on the central
    1024 x 1024 px; dy > 0 means the date's content lies lower (south), dx > 0 further right (east). Dates shifted
    by more than --max-shift are flagged; --fix-shift writes a copy with every date moved back onto the reference
    (dates whose shift is missing or doubtful are copied as they are).
    """
    import changescope
    from changescope.io.writers import atomic_path, write_series_folder
    from changescope.quality import check_series, fix_shift

    if fix_dir is not None and fix_dir.exists() and (not fix_dir.is_dir() or any(fix_dir.iterdir())):
        raise ParameterError(f"--fix-shift {str(fix_dir)!r} exists and is not an empty folder; choose a new folder")
    console = Console(highlight=False)
    if not console.is_terminal:  # files and pipes: do not squeeze the table into 80 columns
        console.width = max(console.width, 120)
    if aoi is None and _list_aois(console, path, reader_format):
        return
    options = open_options(
        reproject=reproject, align=align, date=date, city=city, drop_incomplete=drop_incomplete, aoi=aoi
    )
    ds = changescope.open(path, format=reader_format, **options)
    console.print(_summary(ds, path))
    report = check_series(ds, reference=reference, max_shift=max_shift, band=band)
    console.print(_quality_table(report, [str(b) for b in ds["band"].values]))
    for d in report.shifted:
        doubt = escape(f"; {d.shift.note}") if d.shift.doubtful else ""
        console.print(
            f"[yellow]warning: {d.date} is shifted by {d.shift.magnitude:.2f} px (dy {d.shift.dy:+.2f}, "
            f"dx {d.shift.dx:+.2f}) against {report.reference:%Y-%m-%d}, above --max-shift {max_shift:g}{doubt}[/]",
            soft_wrap=True,
        )
    for d in report.dates:
        if d.low_valid or not d.shift.measured:
            notes = escape("; ".join(n for n in d.notes if n != "reference date"))
            console.print(f"[yellow]note: {d.date}: {notes}[/]", soft_wrap=True)
    if not report.flagged:
        console.print(f"[green]all {len(report)} dates within {max_shift:g} px of {report.reference:%Y-%m-%d}[/]")
    if json_path is not None:
        console.print(f"report written to {escape(str(report.to_json(json_path)))}")
    if fix_dir is not None:
        fixed = fix_shift(ds, report)
        with atomic_path(fix_dir) as tmp:
            write_series_folder(fixed, tmp)
        kept = [d.date for d in report.dates if d.shift.doubtful or not d.shift.measured]
        console.print(
            f"co-registered series written to {escape(str(fix_dir))} (every date moved back by its measured shift"
            + (f"; left as they were, shift missing or doubtful: {', '.join(kept)})" if kept else ")"),
            soft_wrap=True,
        )


def _list_aois(console: Console, path: Path, reader_format: str | None) -> bool:
    """Print the AOIs of a DynamicEarthNet root holding several; return whether it did."""
    from changescope.io.dynamicearthnet import list_aois
    from changescope.io.registry import detect_format

    if reader_format not in (None, "dynamicearthnet") or not path.is_dir():
        return False
    if (reader_format or detect_format(path)) != "dynamicearthnet":
        return False
    try:
        aois = list_aois(path)
    except ChangescopeError:
        return False
    if len(aois) < 2:
        return False
    table = Table(title=f"{len(aois)} AOIs in {path}; inspect one with --aoi ID")
    for col in ("aoi", "zone", "tile", "images", "label months", "image folder"):
        table.add_column(col)
    for ref in aois:
        table.add_row(ref.aoi, ref.zone or "", ref.tile or "", str(ref.n_images), str(ref.n_labels), str(ref.image_dir))
    console.print(table)
    return True


def register(app: typer.Typer) -> None:
    """Add the ``inspect`` command to ``app``."""
    app.command("inspect")(inspect_series)
