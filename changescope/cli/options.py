"""Option aliases shared by the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["OutDir", "Quiet", "Seed", "SeriesPath"]

SeriesPath = Annotated[Path, typer.Argument(help="A series: folder, file or store that changescope.open reads.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same output).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
