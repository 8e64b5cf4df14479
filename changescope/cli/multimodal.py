"""The ``changescope multimodal`` command group: optical-before / SAR-after change detection (methods.md §3).

``index`` builds the window index (patch metadata, no stored patches) of a BRIGHT / DFC25 root or of one pair of
co-registered rasters. Defaults come from :class:`changescope.multimodal.index.IndexParams`. ``default-config``,
``train``, ``predict`` and ``threshold`` live in :mod:`changescope.cli.multimodal_train`, ``evaluate``, ``explore``
and ``report`` in :mod:`changescope.cli.multimodal_eval`, all registered on the same :data:`mm_app` by
:func:`register`.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from changescope.cli.options import Quiet
from changescope.errors import ParameterError

if TYPE_CHECKING:
    import pandas as pd

    from changescope.multimodal.pairs import Modality, Sample

__all__ = ["index_command", "mm_app", "register"]

mm_app = typer.Typer(
    name="multimodal",
    help="Optical-before / SAR-after change detection: BRIGHT / DFC25 data or any co-registered pair.",
    no_args_is_help=True,
)

_ModalityOpt = Literal["optical", "sar"]
_SplitOpt = Literal["random", "halves", "blocks"]


def _samples(
    root: Path | None,
    pair: tuple[Path | None, Path | None, Path | None],
    modalities: tuple[Modality, Modality],
    *,
    select_disaster: str | None,
    blacklist: Path | None,
    include_blacklist: bool,
    limit: int | None,
    split: str | None = None,
    need_truth: bool = False,
) -> list[Sample]:
    """The samples the options name: a BRIGHT root (one DFC25 ``split`` or all), or one ``--pre``/``--post`` pair.

    Raises:
        ParameterError: Both or neither given, a root-only option with a pair, or no ``--truth`` when
            ``need_truth``.
    """
    from changescope.multimodal.layout import read_bright
    from changescope.multimodal.pairs import pair_sample

    pre, post, truth = pair
    if root is not None:
        if pre is not None or post is not None or truth is not None:
            raise ParameterError("--root cannot be combined with --pre/--post/--truth; give a root or a pair")
        return list(
            read_bright(
                root,
                splits=None if split is None else [split],
                select_disaster=select_disaster,
                blacklist=blacklist,
                include_blacklist=include_blacklist,
                limit=limit,
            )
        )
    if pre is None or post is None or (need_truth and truth is None):
        files = "--pre FILE, --post FILE and --truth FILE" if need_truth else "both --pre FILE and --post FILE"
        raise ParameterError(f"give --root DIR (a BRIGHT / DFC25 root) or {files}")
    for flag, value in (("--split", split), ("--select-disaster", select_disaster), ("--blacklist", blacklist)):
        if value is not None:
            raise ParameterError(f"{flag} applies to --root only; drop it with --pre/--post")
    return [pair_sample(pre, post, truth, pre_modality=modalities[0], post_modality=modalities[1])]


def _summary(frame: pd.DataFrame, out: Path) -> Table:
    table = Table(title=f"window index  {out}", title_justify="left")
    for column in ("split", "images", "windows", "changed", "unchanged", "no truth", "building"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, part in frame.groupby("split", sort=False):
        table.add_row(
            str(split),
            str(part["image"].nunique()),
            str(len(part)),
            str(int((part["label"] == 1).sum())),
            str(int((part["label"] == 0).sum())),
            str(int((part["label"] < 0).sum())),
            str(int(part["building"].sum())),
        )
    return table


@mm_app.command("index")
def index_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Index file to write (Parquet).")],
    root: Annotated[
        Path | None, typer.Option("--root", help="BRIGHT root: flat pre-event/ post-event/ target/, or DFC25.")
    ] = None,
    pre: Annotated[Path | None, typer.Option("--pre", help="Pre-event image of a pair (any raster format).")] = None,
    post: Annotated[Path | None, typer.Option("--post", help="Post-event image of the pair, on the same grid.")] = None,
    truth: Annotated[
        Path | None, typer.Option("--truth", help="Change mask of the pair (0/1, 0/255 or 1/2), same shape.")
    ] = None,
    pre_modality: Annotated[_ModalityOpt, typer.Option("--pre-modality", help="What --pre is.")] = "optical",
    post_modality: Annotated[_ModalityOpt, typer.Option("--post-modality", help="What --post is.")] = "sar",
    split: Annotated[
        _SplitOpt,
        typer.Option("--split", help="random: 80/20 by image; halves or blocks: by region (single scenes)."),
    ] = "random",
    blocks: Annotated[int, typer.Option("--blocks", help="Blocks per side for --split blocks.")] = 4,
    val_share: Annotated[
        float, typer.Option("--val-share", help="Share of images (random) or blocks (blocks) in validation.")
    ] = 0.2,
    val_half: Annotated[
        Literal["left", "right"], typer.Option("--val-half", help="Half kept for validation (--split halves).")
    ] = "right",
    limit: Annotated[int | None, typer.Option("--limit", help="Index at most N images (BRIGHT root).")] = None,
    include_blacklist: Annotated[
        bool, typer.Option("--include-blacklist", help="Keep the blacklisted images (marked in the index).")
    ] = False,
    blacklist: Annotated[
        Path | None, typer.Option("--blacklist", help="Blacklist file (default: ROOT/blacklist.txt if present).")
    ] = None,
    select_disaster: Annotated[
        str | None, typer.Option("--select-disaster", metavar="NAME", help="Index only this event.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split (same seed, same split).")] = 42,
    roi: Annotated[int, typer.Option("--roi", help="Region of interest side in pixels.")] = 16,
    context: Annotated[int, typer.Option("--context", help="Context window side in pixels.")] = 256,
    stride: Annotated[int, typer.Option("--stride", help="Step between ROIs in pixels.")] = 8,
    min_valid: Annotated[float, typer.Option("--min-valid", help="Smallest share of valid ROI pixels.")] = 0.8,
    class_rule: Annotated[
        Literal["majority", "maximum"],
        typer.Option("--class-rule", help="ROI damage class: most frequent class (ties: more severe), or most severe."),
    ] = "majority",
    quiet: Quiet = False,
) -> None:
    """Build the window index: ROIs in context windows with damage and building ratios, and a split."""
    from changescope.multimodal.index import IndexParams, build_index, write_index

    params = IndexParams(
        roi=roi,
        context=context,
        stride=stride,
        min_valid=min_valid,
        split=split,
        seed=seed,
        blocks=blocks,
        val_share=val_share,
        val_half=val_half,
        class_rule=class_rule,
    )
    if limit is not None and limit < 1:
        raise ParameterError(f"--limit {limit!r} must be at least 1")
    samples = _samples(
        root,
        (pre, post, truth),
        (pre_modality, post_modality),
        select_disaster=select_disaster,
        blacklist=blacklist,
        include_blacklist=include_blacklist,
        limit=limit,
    )
    inputs = {s.pre.resolve() for s in samples} | {s.post.resolve() for s in samples}
    inputs |= {s.target.resolve() for s in samples if s.target is not None}
    if out.resolve() in inputs:
        raise ParameterError(f"--out {str(out)!r} is an input file; write the index elsewhere")
    frame = build_index(samples, params)
    write_index(frame, out)
    console = Console(quiet=quiet)
    console.print(_summary(frame, out))


def register(app: typer.Typer) -> None:
    """Add the ``multimodal`` command group to ``app``, with the commands of ``changescope.cli.multimodal_train``."""
    import_module("changescope.cli.multimodal_train")  # registers default-config, train, predict, threshold
    import_module("changescope.cli.multimodal_eval")  # registers evaluate, explore, report
    app.add_typer(mm_app, name="multimodal")
