"""``changescope embed``: embed every patch of every date of a series into a resumable Zarr store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from changescope.cli.options import Quiet, SeriesPath

__all__ = ["embed", "register"]

StorePath = Annotated[Path, typer.Option("--out", "-o", help="Embeddings store to write (a .zarr folder).")]


def embed(
    series: SeriesPath,
    encoder: Annotated[
        str, typer.Option("--encoder", "-e", help="Encoder name (see changescope.encoders.list_encoders()).")
    ],
    patch_size: Annotated[int, typer.Option("--patch-size", "-p", help="Patch side in pixels.")],
    out: StorePath,
    stride: Annotated[
        int | None, typer.Option("--stride", "-s", help="Step between patches in pixels [default: the patch size].")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="Weights: a tag such as resnet18.sentinel2_all_moco (see changescope.encoders.list_weights()), "
            "a local path, a Hugging Face repo id or 'random'.",
        ),
    ] = None,
    format: Annotated[str | None, typer.Option("--format", help="Series reader; auto-detected when omitted.")] = None,
    aoi: Annotated[str | None, typer.Option("--aoi", help="AOI of a DynamicEarthNet root.")] = None,
    block: Annotated[
        int | None,
        typer.Option("--block", help="Block side in pixels: one task and one Zarr chunk per block and date."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Tiles per encoder forward pass.")] = 16,
    min_valid: Annotated[
        float,
        typer.Option("--min-valid", help="Patches with a smaller valid-pixel fraction get NaN embeddings."),
    ] = 0.5,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Run on a local dask cluster of N single-threaded processes.")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Address of an existing dask.distributed scheduler.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a store made with other parameters.")] = False,
    quiet: Quiet = False,
) -> None:
    """Embed every patch of every date of SERIES with an encoder into a Zarr store.

    The encoder runs on large tiles and its dense features are pooled onto the patch grid. Patches with fewer valid
    pixels than --min-valid get NaN embeddings. Rerunning the same command resumes an interrupted run: finished
    (date, block) tasks are skipped. A store made with other parameters is refused unless --overwrite.
    """
    from changescope.embed import embed_series, open_embeddings
    from changescope.io.registry import open_series

    start = time.perf_counter()
    ds = open_series(series, format=format, **({"aoi": aoi} if aoi is not None else {}))
    path = embed_series(
        ds,
        encoder,
        weights=weights,
        patch_size=patch_size,
        stride=stride,
        out=out,
        block=block,
        batch_size=batch_size,
        min_valid=min_valid,
        device=device,
        workers=workers,
        scheduler=scheduler,
        overwrite=overwrite,
        progress=not quiet,
    )
    if not quiet:
        with open_embeddings(path) as store:
            n_t, n_r, n_c, n_d = (store.sizes[k] for k in ("time", "row", "col", "dim"))
        typer.echo(
            f"wrote {path}: {n_t} dates x {n_r} x {n_c} patches x {n_d} dims "
            f"({encoder}, patch {patch_size} px) in {time.perf_counter() - start:.1f} s"
        )


def register(app: typer.Typer) -> None:
    """Add the ``embed`` command to ``app``."""
    app.command("embed")(embed)
