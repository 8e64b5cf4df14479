"""Option aliases shared by the commands, and :func:`open_options` for the reader options among them.

The reader options (``--reproject``, ``--align``, ``--date``, ``--city``, ``--drop-incomplete``, ``--aoi``) are the
flags that the readers' error messages name (``changescope.io.registry.CLI_FLAGS``); a command that opens a series
declares them with these aliases and hands them to ``changescope.open`` through :func:`open_options`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "Align",
    "City",
    "DateOpt",
    "DropIncomplete",
    "OutDir",
    "Quiet",
    "Reproject",
    "Seed",
    "SeriesPath",
    "TestTimeViews",
    "open_options",
]

SeriesPath = Annotated[Path, typer.Argument(help="A series: folder, file or store that changescope.open reads.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same output).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
TestTimeViews = Annotated[
    int,
    typer.Option(
        "--tta", help="Test-time views averaged per window: 1 (one pass), 2, 4 or 8 rotations and flips (x passes)."
    ),
]

Reproject = Annotated[
    bool, typer.Option("--reproject", help="Reproject dates in another CRS onto the first date's grid.")
]
Align = Annotated[
    bool,
    typer.Option("--align", help="Resample dates on another grid of the same CRS onto the first date's grid."),
]
DateOpt = Annotated[
    str | None,
    typer.Option("--date", metavar="YYYY-MM-DD", help="Date of a single GeoTIFF whose file name holds none."),
]
City = Annotated[
    str | None, typer.Option("--city", metavar="NAME", help="OSCD city to open in an OSCD images folder or root.")
]
DropIncomplete = Annotated[
    bool,
    typer.Option("--drop-incomplete", help="Per-band folders: drop dates that miss a band instead of refusing them."),
]


def open_options(
    *,
    reproject: bool = False,
    align: bool = False,
    date: str | None = None,
    city: str | None = None,
    drop_incomplete: bool = False,
    aoi: str | None = None,
) -> dict[str, Any]:
    """The reader options given on the command line, as keyword arguments for ``changescope.open``.

    Only options that differ from their defaults are returned, so that a reader is never handed an option the
    user did not set (``changescope.open`` refuses options that do not apply to the input's reader).

    Args:
        reproject: ``--reproject``.
        align: ``--align``.
        date: ``--date``.
        city: ``--city``.
        drop_incomplete: ``--drop-incomplete``.
        aoi: ``--aoi``.

    Returns:
        ``{name: value}`` of the options that were set.
    """
    given: dict[str, Any] = {
        "reproject": reproject,
        "align": align,
        "date": date,
        "city": city,
        "drop_incomplete": drop_incomplete,
        "aoi": aoi,
    }
    return {k: v for k, v in given.items() if v is not None and v is not False}
