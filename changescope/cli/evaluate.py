"""The ``changescope evaluate`` and ``changescope benchmark`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from changescope.cli.options import OutDir, Quiet
from changescope.errors import ParameterError

__all__ = ["benchmark", "evaluate", "register"]

TruthPath = Annotated[
    Path | None,
    typer.Option("--truth", help="Labels series (e.g. DynamicEarthNet AOI) or change mask (*-cm.tif) on the grid."),
]
MinFraction = Annotated[
    float, typer.Option("--min-fraction", help="Share of a patch's pixels that must change for it to count.")
]


def _console(quiet: bool) -> Console:
    console = Console(quiet=quiet)
    if not console.is_terminal:
        console.width = max(console.width, 140)
    return console


def _num(v: Any) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A folder written by `changescope run`.")],
    truth: TruthPath = None,
    min_fraction: MinFraction = 0.05,
    quiet: Quiet = False,
) -> None:
    """Score a run against ground truth; write metrics.json and figures/roc.png, pr.png into the run folder."""
    from changescope.evaluate.evaluate import evaluate_run

    metrics = evaluate_run(run_dir, truth, min_fraction)
    console = _console(quiet)
    p, px = metrics["patch"], metrics["pixel"]
    table = Table(title=f"evaluation of {run_dir} ({metrics['params']['truth_kind']})")
    for col in ("group", "n_pos", "n_neg", "AUC", "AP", "best F1", "threshold"):
        table.add_column(col, justify="left" if col == "group" else "right")

    def add(name: str, m: dict[str, Any]) -> None:
        table.add_row(
            name,
            str(m["n_pos"]),
            str(m["n_neg"]),
            _num(m["auc"]),
            _num(m["ap"]),
            _num(m["best_f1"]),
            _num(m["threshold"]),
        )

    add("all patches", p)
    for kind, m in metrics["by_type"].items():
        add(f"type {kind}", m)
    for when, m in metrics["by_date"].items():
        add(f"date {when}", m)
    console.print(table)
    console.print(
        f"pixel level at the best-F1 threshold: F1 {_num(px['f1'])}, precision {_num(px['precision'])}, "
        f"recall {_num(px['recall'])}",
        highlight=False,
    )
    console.print(f"metrics in {Path(run_dir) / 'metrics.json'}", highlight=False)


def _parse_weights(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ParameterError(f"--weights {item!r} must be ENCODER=PATH, e.g. --weights resnet18=ckpt.pth")
        out[name.strip()] = path.strip()
    return out


def benchmark(
    input: Annotated[Path, typer.Argument(help="A series that changescope.open reads.")],
    out: OutDir = Path("changescope_benchmark"),
    encoders: Annotated[str, typer.Option("--encoders", help="Comma-separated encoder names.")] = "spectral",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated methods: distance, lof.")] = "distance,lof",
    baselines: Annotated[
        str | None, typer.Option("--baselines", help="Comma-separated classical baselines: cva, irmad, pcakmeans.")
    ] = None,
    truth: TruthPath = None,
    patch_size: Annotated[int, typer.Option("--patch-size", "-p", help="Patch side in pixels.")] = 32,
    weights: Annotated[
        list[str] | None, typer.Option("--weights", help="ENCODER=PATH weights for one encoder (repeatable).")
    ] = None,
    format: Annotated[str | None, typer.Option("--format", help="Input format (auto-detected).")] = None,
    aoi: Annotated[str | None, typer.Option("--aoi", help="AOI id of a multi-AOI dataset root.")] = None,
    min_fraction: MinFraction = 0.05,
    quiet: Quiet = False,
) -> None:
    """Run every encoder x method (and classical baselines) on one input; tabulate AUC, AP, F1 and speed."""
    from changescope.evaluate.benchmark import benchmark as run_benchmark

    df = run_benchmark(
        input,
        out,
        encoders,
        methods,
        baselines,
        truth=truth,
        patch_size=patch_size,
        weights=_parse_weights(weights),
        format=format,
        aoi=aoi,
        min_fraction=min_fraction,
        progress=not quiet,
    )
    console = _console(quiet)
    table = Table(title=f"benchmark of {input}")
    for col in ("name", "AUC", "AP", "best F1", "pixel F1", "runtime s", "patches/s", "status"):
        table.add_column(col, justify="left" if col in ("name", "status") else "right")
    for row in df.to_dict("records"):
        table.add_row(
            str(row["name"]),
            _num(row["auc"]),
            _num(row["ap"]),
            _num(row["best_f1"]),
            _num(row["pixel_f1"]),
            _num(row["runtime_s"]),
            _num(row["patches_per_s"]),
            str(row["status"]),
        )
    console.print(table)
    console.print(f"tables and roc.png in {out}", highlight=False)
    failed = [str(row["status"]) for row in df.to_dict("records") if row["status"] != "ok"]
    if len(df) and len(failed) == len(df):
        from changescope.errors import ChangescopeError

        raise ChangescopeError(f"every row of the benchmark failed (first: {failed[0]}); see {out}/benchmark.csv")


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` and ``benchmark`` commands to ``app``."""
    app.command("evaluate")(evaluate)
    app.command("benchmark")(benchmark)
