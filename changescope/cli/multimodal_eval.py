"""``changescope multimodal evaluate | explore | report`` (methods.md §3), on ``mm_app``.

- ``evaluate`` predicts every pair of a BRIGHT / DFC25 split (or one ``--pre/--post/--truth`` pair) with a trained
  model, writes the change maps (and damage class maps, with a class head) and scores them over all pixels: the
  threshold sweep, the baselines and, on BRIGHT targets, the DFC25 4-class mIoU
  (:func:`changescope.multimodal.evaluate.evaluate_samples`); then writes the report.
- ``explore`` maps the optical and SAR projections of indexed windows to 2-D with PCA, t-SNE and UMAP
  (:func:`changescope.multimodal.explore.explore_projections`).
- ``report`` (re)writes ``OUT/report.html`` from an evaluation folder (:func:`changescope.multimodal.report
  .build_report`), with the explorer's figures when ``OUT/explore`` (or ``--explore``) holds them.

Registered on :data:`changescope.cli.multimodal.mm_app` when this module is imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from changescope.cli.multimodal import _samples, mm_app
from changescope.cli.options import Quiet, TestTimeViews
from changescope.errors import ParameterError

if TYPE_CHECKING:
    from changescope.multimodal.pairs import Sample

__all__ = ["evaluate_command", "explore_command", "report_command"]

_ModalityOpt = Literal["optical", "sar"]


def _eval_samples(
    root: Path | None,
    pair: tuple[Path | None, Path | None, Path | None],
    modalities: tuple[_ModalityOpt, _ModalityOpt],
    truth_kind: Literal["change", "damage"],
    *,
    split: str | None,
    select_disaster: str | None,
    blacklist: Path | None,
    include_blacklist: bool,
    limit: int | None,
) -> list[Sample]:
    """The samples to evaluate: ``_samples`` with a truth required; a pair's truth is read as ``truth_kind``."""
    samples = _samples(
        root,
        pair,
        modalities,
        select_disaster=select_disaster,
        blacklist=blacklist,
        include_blacklist=include_blacklist,
        limit=limit,
        split=split,
        need_truth=True,
    )
    return samples if root is not None else [replace(s, target_kind=truth_kind) for s in samples]


@mm_app.command("evaluate")
def evaluate_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="Trained model (OUT/best.safetensors of train).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the maps, evaluation.json and the report.")],
    root: Annotated[Path | None, typer.Option("--root", help="BRIGHT root (flat or DFC25 layout).")] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="DFC25 split to evaluate: train, val or test (default all).")
    ] = None,
    pre: Annotated[Path | None, typer.Option("--pre", help="Pre-event image of one pair.")] = None,
    post: Annotated[Path | None, typer.Option("--post", help="Post-event image of the pair.")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="Truth raster of the pair.")] = None,
    truth_kind: Annotated[
        Literal["change", "damage"],
        typer.Option("--truth-kind", help="--truth is a change mask, or BRIGHT damage classes 0-3."),
    ] = "change",
    pre_modality: Annotated[_ModalityOpt, typer.Option("--pre-modality", help="What --pre is.")] = "optical",
    post_modality: Annotated[_ModalityOpt, typer.Option("--post-modality", help="What --post is.")] = "sar",
    select_disaster: Annotated[
        str | None, typer.Option("--select-disaster", metavar="NAME", help="Evaluate only this event.")
    ] = None,
    blacklist: Annotated[Path | None, typer.Option("--blacklist", help="Blacklist file (--root).")] = None,
    include_blacklist: Annotated[bool, typer.Option("--include-blacklist", help="Keep blacklisted images.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate at most N images.")] = None,
    window: Annotated[int | None, typer.Option("--window", help="Window side (default: the model's context).")] = None,
    stride: Annotated[
        int | None,
        typer.Option("--stride", help="Step between change-map windows in px (default: 64; ROI / 2 with --paint roi)."),
    ] = None,
    class_stride: Annotated[
        int | None, typer.Option("--class-stride", help="Step between class-map ROIs (default: the ROI side).")
    ] = None,
    weighting: Annotated[
        Literal["uniform", "dome"], typer.Option("--weighting", help="How overlapping windows are averaged.")
    ] = "uniform",
    paint: Annotated[
        Literal["window", "roi"],
        typer.Option("--paint", help="Pixels a window's score goes to: its whole window, or only its centred ROI."),
    ] = "window",
    tta: TestTimeViews = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.")] = 32,
    holdout: Annotated[
        Path | None,
        typer.Option(
            "--holdout",
            metavar="INDEX",
            help="The model's training index: score a pair it split by region (halves, blocks) only on the region "
            "held out from training.",
        ),
    ] = None,
    baselines: Annotated[
        bool, typer.Option("--baselines/--no-baselines", help="Also score the training-free baselines.")
    ] = True,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write OUT/report.html.")] = True,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")] = "auto",
    quiet: Quiet = False,
) -> None:
    """Predict a BRIGHT split (or one pair) and score it: ROC AUC, threshold sweep, baselines, 4-class mIoU.

    Writes OUT/maps/{id}_change.tif (and {id}_damage.tif with a class head), OUT/sweep.json and .png,
    OUT/evaluation.json and OUT/report.html. The mIoU is computed as the DFC25 evaluator does: one 4 x 4 confusion
    matrix over all pixels of all images.
    """
    from changescope.multimodal.evaluate import EvalSettings, evaluate_samples

    if limit is not None and limit < 1:
        raise ParameterError(f"--limit {limit!r} must be at least 1")
    samples = _eval_samples(
        root,
        (pre, post, truth),
        (pre_modality, post_modality),
        truth_kind,
        split=split,
        select_disaster=select_disaster,
        blacklist=blacklist,
        include_blacklist=include_blacklist,
        limit=limit,
    )
    console = Console(quiet=quiet)
    settings = EvalSettings(window, stride, class_stride, weighting, batch_size, baselines, paint, tta)

    def say(n: int, total: int, sample_id: str) -> None:
        console.print(f"[{n}/{total}] {sample_id}", highlight=False)

    frame = None
    if holdout is not None:
        from changescope.multimodal.index import read_index

        if not holdout.is_file():
            raise ParameterError(f"--holdout {str(holdout)!r} does not exist; pass the index the model trained from")
        frame = read_index(holdout)
    result = evaluate_samples(model, samples, out, settings, device=device, on_sample=say, holdout=frame)
    table = Table(title=f"multimodal evaluation  {out}", title_justify="left")
    table.add_column("method")
    table.add_column("ROC AUC", justify="right")
    table.add_row("trained pseudo-siamese", f"{result['auc']:.4f}")
    for b in result["baselines"]:
        table.add_row(b["name"], "n/a" if b["auc"] is None else f"{b['auc']:.4f}")
    console.print(table)
    console.print(f"best F1  {result['best']['f1']['value']:.4f} at {result['best']['f1']['threshold']:.4f}")
    if result["miou"] is not None:
        ious = ", ".join("n/a" if v is None else f"{v:.3f}" for v in result["miou"]["iou"])
        console.print(f"mIoU     {result['miou']['miou']:.4f} (DFC25, 4 classes; per class {ious})", highlight=False)
    if report:
        from changescope.multimodal.report import build_report

        console.print(f"report   {build_report(out)}", highlight=False, soft_wrap=True)


@mm_app.command("explore")
def explore_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="Trained model (OUT/best.safetensors of train).")],
    index: Annotated[Path, typer.Option("--index", help="Window index (from `changescope multimodal index`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for explore_*.png and explore.json.")],
    split: Annotated[
        str | None, typer.Option("--split", help="Index split to sample (default: every labelled window).")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option("--method", help="Comma-separated pca,tsne,umap (default: all; umap when umap-learn is in)."),
    ] = None,
    max_points: Annotated[int, typer.Option("--max-points", help="Most windows in the seeded sample.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample, t-SNE and UMAP.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")] = "auto",
    quiet: Quiet = False,
) -> None:
    """Map the optical and SAR projections of indexed windows to 2-D (PCA, t-SNE, UMAP), coloured by label."""
    from changescope.multimodal.explore import METHODS, explore_projections

    console = Console(quiet=quiet)
    if method is None:
        methods = [m for m in METHODS if m != "umap" or importlib.util.find_spec("umap") is not None]
        if "umap" not in methods:
            console.print("UMAP left out: the optional 'umap-learn' package is not installed", highlight=False)
    else:
        methods = method.split(",")
    result = explore_projections(
        model, index, out, split=split, methods=methods, max_points=max_points, seed=seed, device=device
    )
    console.print(f"{result['n']} windows mapped with {', '.join(result['coordinates'])}", highlight=False)
    for fig in result["figures"]:
        console.print(f"figure   {fig}", highlight=False, soft_wrap=True)


@mm_app.command("report")
def report_command(
    out: Annotated[Path, typer.Argument(help="Folder written by `changescope multimodal evaluate`.")],
    explore: Annotated[
        Path | None, typer.Option("--explore", help="Folder of `changescope multimodal explore` (default OUT/explore).")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Patches per gallery row.")] = 8,
    patch: Annotated[int, typer.Option("--patch", help="Gallery square side in px.")] = 32,
    quiet: Quiet = False,
) -> None:
    """Write OUT/report.html: sweep, baselines, full-image overview, patch-pair gallery and explorer figures."""
    from changescope.multimodal.report import build_report

    path = build_report(out, explore_dir=explore, top=top, patch=patch)
    Console(quiet=quiet).print(f"report   {path}", highlight=False, soft_wrap=True)
