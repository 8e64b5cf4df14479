"""``changescope multimodal default-config | train | predict | threshold`` (methods.md §3), on ``mm_app``.

- ``default-config`` prints (or writes, atomically, never over a file without ``--force``) the commented YAML.
- ``train`` builds the training and validation :class:`~changescope.multimodal.index.PatchDataset` from the index
  named in ``data.index`` (splits ``data.train_split`` / ``data.val_split``) and runs
  :func:`~changescope.multimodal.train.train_multimodal`.
- ``predict`` scores a pair with a trained model by sliding windows and writes the map with
  :func:`changescope.multimodal.io.write_change_map`: a COG in the optical image's georeference, or a plain GeoTIFF
  in pixel coordinates (no CRS) when the optical image has none; with a damage head also the class map
  (:func:`changescope.multimodal.io.write_class_map`, same georeference rule).
- ``threshold`` sweeps the decision threshold over a score map against a truth mask and writes the JSON and a
  ROC / PR figure; ``--classes`` adds the DFC25 4-class mIoU of a class map.

The commands are registered on :data:`changescope.cli.multimodal.mm_app` when this module is imported (the group's
``register`` does that).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from changescope.cli.multimodal import mm_app
from changescope.cli.options import Quiet, TestTimeViews
from changescope.errors import GridMismatchError, ParameterError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from changescope.multimodal.config import MultimodalConfig
    from changescope.multimodal.index import PatchDataset

__all__ = ["default_config_command", "predict_command", "threshold_command", "train_command"]

_ModalityOpt = Literal["optical", "sar"]


@mm_app.command("default-config")
def default_config_command(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the configuration here instead of printing it.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Print (or write) the commented training configuration with every field at its published default."""
    from changescope.multimodal.config import DEFAULT_CONFIG_YAML
    from changescope.train.state import write_text

    if out is None:
        typer.echo(DEFAULT_CONFIG_YAML, nl=False)
        return
    if out.exists() and not force:
        raise ParameterError(f"--out {str(out)!r} already exists; pass --force to replace it or choose another file")
    if out.is_dir():
        raise ParameterError(f"--out {str(out)!r} is a folder; give a file name such as cfg.yaml")
    write_text(DEFAULT_CONFIG_YAML, out)
    typer.echo(f"wrote {out}; edit data.index and out, then run `changescope multimodal train --config {out}`")


def _datasets(cfg: MultimodalConfig) -> tuple[PatchDataset, PatchDataset]:
    """The training and validation datasets of ``cfg`` (checked against the model's window sizes)."""
    from changescope.multimodal.index import PatchDataset, read_index

    path = Path(cfg.data.index).expanduser()
    if not path.is_file():
        raise ParameterError(
            f"data.index {str(path)!r} does not exist; build it with `changescope multimodal index --out {path}`"
        )
    frame = read_index(path)
    cache = cfg.data.cache_size
    train = PatchDataset(frame, split=cfg.data.train_split, cache_size=cache)
    val = PatchDataset(frame, split=cfg.data.val_split, cache_size=cache)
    if (train.context, train.roi) != (cfg.model.context, cfg.model.roi):
        raise ParameterError(
            f"the index {str(path)!r} holds ROIs of {train.roi} px in contexts of {train.context} px but the "
            f"configuration has model.roi={cfg.model.roi}, model.context={cfg.model.context}; make them equal "
            "(edit the config or rebuild the index with --roi/--context)"
        )
    return train, val


@mm_app.command("train")
def train_command(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="YAML configuration; `changescope multimodal default-config` writes one."),
    ],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in the out folder from its newest checkpoint.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Train the pseudo-siamese optical/SAR network on the windows of a window index.

    Reads the index named in data.index, trains on data.train_split and keeps, as OUT/best.safetensors, the model
    of the epoch with the lowest loss on data.val_split. A killed run continues with --resume to the same weights.
    """
    from changescope.multimodal.config import load_config
    from changescope.multimodal.train import train_multimodal

    console = Console(quiet=quiet)
    cfg = load_config(config)
    train, val = _datasets(cfg)
    began = time.perf_counter()
    result = train_multimodal(cfg, train, val, resume=resume, progress=not quiet)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - began
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), None)
    table = Table(title=f"multimodal training, {result.epochs} epochs, {elapsed:.1f} s", show_header=False)
    table.title_justify = "left"
    table.add_column("what")
    table.add_column("value")
    table.add_row("windows", f"{len(train)} train, {len(val)} val")
    table.add_row("best epoch", str(result.best_epoch))
    table.add_row("best val loss", f"{result.best_val_loss:.4f}")
    if best is not None and best.get("val_auc") is not None:
        table.add_row("its val AUC", f"{best['val_auc']:.3f}")
    table.add_row("run folder", str(result.out))
    console.print(table)
    console.print(f"model    {result.best}", highlight=False, soft_wrap=True)
    console.print(
        f"use it   changescope multimodal predict --model {result.best} --pre PRE --post POST --out map.tif",
        highlight=False,
        soft_wrap=True,
    )


@mm_app.command("predict")
def predict_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="Trained model (OUT/best.safetensors of train).")],
    pre: Annotated[Path, typer.Option("--pre", help="Pre-event image (any raster format).")],
    post: Annotated[Path, typer.Option("--post", help="Post-event image, co-registered on the same grid.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Change map to write (GeoTIFF; COG when georeferenced).")],
    pre_modality: Annotated[_ModalityOpt, typer.Option("--pre-modality", help="What --pre is.")] = "optical",
    post_modality: Annotated[_ModalityOpt, typer.Option("--post-modality", help="What --post is.")] = "sar",
    window: Annotated[
        int | None, typer.Option("--window", help="Window side in px (default: the model's context).")
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option("--stride", help="Step between windows in px (default: 64; half the ROI with --paint roi)."),
    ] = None,
    weighting: Annotated[
        Literal["uniform", "dome"], typer.Option("--weighting", help="How overlapping window scores are averaged.")
    ] = "uniform",
    paint: Annotated[
        Literal["window", "roi"],
        typer.Option(
            "--paint",
            help="Pixels a window's score goes to: its whole window, or only its centred ROI (sharper, more windows).",
        ),
    ] = "window",
    tta: TestTimeViews = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.")] = 32,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")] = "auto",
    classes: Annotated[
        Path | None,
        typer.Option("--classes", help="Damage class map to write (model with a class head; default OUT_damage.tif)."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Score a pre/post pair with a trained model: a per-pixel change map (1 - cos, 0 = same, 2 = opposite).

    The map is a Cloud-Optimised GeoTIFF in the optical image's CRS and transform; when the optical image has no
    georeference (PNG, JPEG, plain TIFF) it is a plain GeoTIFF without CRS, in the inputs' pixel grid. A model
    trained with a damage class head also gets its class map (0 background, 1 intact, 2 damaged, 3 destroyed,
    255 nodata; ROIs tiled at the ROI side), in the same georeference.
    """
    from changescope.multimodal.io import optical_georeference, write_change_map, write_class_map
    from changescope.multimodal.model import load_model
    from changescope.multimodal.pairs import normalise_pair, pair_sample, read_pair_arrays
    from changescope.multimodal.predict import change_map, class_map, damage_classes, default_stride
    from changescope.train.ssl import resolve_device

    if {pre_modality, post_modality} != {"optical", "sar"}:
        raise ParameterError(
            f"--pre-modality {pre_modality} and --post-modality {post_modality}: the model scores one optical and one "
            "SAR image; set one of them to the other modality"
        )
    if out.resolve() in {pre.resolve(), post.resolve()}:
        raise ParameterError(f"--out {str(out)!r} is an input image; write the map elsewhere")
    classes_out = out.with_name(out.stem + "_damage.tif") if classes is None else classes
    if classes_out.resolve() in {pre.resolve(), post.resolve(), out.resolve()}:
        raise ParameterError(f"--classes {str(classes_out)!r} is an input image or --out; write it elsewhere")
    sample = pair_sample(pre, post, pre_modality=pre_modality, post_modality=post_modality)
    net, _ = load_model(model, device=resolve_device(device))
    if classes is not None and net.class_head is None:
        raise ParameterError(f"--classes: {str(model)!r} has no damage class head; train with model.n_classes: 4")
    size = net.config.context if window is None else window
    optical, sar, valid = normalise_pair(read_pair_arrays(sample))
    began = time.perf_counter()
    step = default_stride(paint, int(net.config.roi)) if stride is None else stride
    scores = change_map(
        net, optical, sar, window=size, stride=step, weighting=weighting, batch_size=batch_size, paint=paint, tta=tta
    )
    crs, transform = optical_georeference(sample)
    tags = {
        "model": str(model),
        "window": str(size),
        "stride": str(step),
        "weighting": weighting,
        "paint": paint,
        "tta": str(tta),
    }
    write_change_map(out, scores, crs=crs, transform=transform, valid=valid, tags=tags)
    console = Console(quiet=quiet)
    where = f"COG in {crs.to_string()}" if crs is not None else "GeoTIFF without georeference (pixel grid)"
    console.print(
        f"change map {out}  {scores.shape[1]} x {scores.shape[0]} px, {where}, {time.perf_counter() - began:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    if net.class_head is not None:
        probs = class_map(net, optical, sar, window=size, stride=int(net.config.roi), batch_size=batch_size, tta=tta)
        write_class_map(classes_out, damage_classes(probs, valid), crs=crs, transform=transform, tags=tags)
        console.print(f"class map  {classes_out}  0-3 (255 = nodata), {where}", highlight=False, soft_wrap=True)


def _read_band(path: Path, flag: str = "--scores") -> NDArray[np.float32]:
    """The single band of a score raster as float32, its nodata (and non-finite values) as NaN."""
    import warnings

    import numpy as np
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    from changescope.io.raster import damaged, open_raster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(path) as src:
            if src.count != 1:
                raise ParameterError(
                    f"{flag} {str(path)!r} has {src.count} bands; give the 1-band map of `changescope multimodal "
                    "predict`"
                )
            try:
                band: NDArray[np.float32] = src.read(1).astype(np.float32)
            except RasterioError as err:
                raise damaged(path, err) from err
            nodata = src.nodata
    if nodata is not None and np.isfinite(nodata):
        band[band == np.float32(nodata)] = np.nan
    return band


@mm_app.command("threshold")
def threshold_command(
    scores: Annotated[Path, typer.Option("--scores", help="Change map from `changescope multimodal predict`.")],
    truth: Annotated[Path, typer.Option("--truth", help="Truth raster of the same shape.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sweep JSON to write.")],
    truth_kind: Annotated[
        Literal["change", "damage"],
        typer.Option(
            "--truth-kind", help="change: a 0/1, 0/255 or 1/2 mask; damage: BRIGHT classes 0-3 (> 1 = changed)."
        ),
    ] = "change",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="ROC / PR figure to write (default: --out with .png).")
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(
            "--classes", help="Damage class map of predict: also the DFC25 4-class mIoU (--truth-kind damage)."
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Sweep the decision threshold over a change map against the truth: metrics per threshold and the best ones.

    Pixels that are NaN (nodata) in the map or invalid in the truth are left out. The JSON holds the ROC AUC, the
    best threshold per metric and the curves (at most 2001 thresholds kept); the figure shows ROC and PR. With
    --classes and a BRIGHT damage truth it also holds the 4-class mIoU (every truth pixel scored, as the DFC25
    evaluator does; nodata pixels of the class map count as background). For a whole BRIGHT split use `evaluate`.
    """
    import numpy as np

    from changescope.multimodal.io import sweep_json, write_sweep_figure
    from changescope.multimodal.metrics import threshold_sweep
    from changescope.multimodal.pairs import read_truth
    from changescope.train.state import write_json

    plot_path = out.with_suffix(".png") if plot is None else plot
    if plot_path.resolve() == out.resolve():
        raise ParameterError(f"--plot and --out are both {str(out)!r}; give them different files")
    score = _read_band(scores)
    mask = read_truth(truth, truth_kind, (int(score.shape[0]), int(score.shape[1])), scores)
    keep = mask.valid & np.isfinite(score)
    if not keep.any():
        raise GridMismatchError(f"no pixel is valid in both {str(scores)!r} and {str(truth)!r}; check the inputs")
    sweep = threshold_sweep(score[keep], mask.damage[keep])
    inputs: dict[str, object] = {
        "scores": str(scores),
        "truth": str(truth),
        "truth_kind": truth_kind,
        "pixels": int(keep.sum()),
    }
    if classes is not None:
        inputs["miou"] = _miou(classes, truth, truth_kind, mask.valid.shape)
    write_json(sweep_json(sweep, extra=inputs), out)
    write_sweep_figure(plot_path, sweep)
    console = Console(quiet=quiet)
    table = Table(title=f"threshold sweep  {out}  ROC AUC {sweep.auc:.4f}", title_justify="left")
    for column in ("metric", "best threshold", "value"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, best in sweep.best.items():
        table.add_row(name, f"{best['threshold']:.4f}", f"{best['value']:.4f}")
    console.print(table)
    if classes is not None:
        console.print(f"mIoU     {inputs['miou']['miou']:.4f} (DFC25, 4 classes)", highlight=False)  # type: ignore[index]
    console.print(f"figure   {plot_path}", highlight=False, soft_wrap=True)


def _miou(classes: Path, truth: Path, truth_kind: str, shape: tuple[int, ...]) -> dict[str, object]:
    """The DFC25 4-class mIoU of a class map against a BRIGHT damage raster (NaN IoUs as ``None``)."""
    import math

    import numpy as np

    from changescope.multimodal.metrics import miou_4class
    from changescope.multimodal.pairs import read_truth

    if truth_kind != "damage":
        raise ParameterError("--classes needs --truth-kind damage (a BRIGHT raster of classes 0-3)")
    pred = _read_band(classes, "--classes")
    if pred.shape != shape:
        raise GridMismatchError(
            f"--classes {str(classes)!r} is {pred.shape!r} px but --scores is {shape!r}; give the maps of one predict"
        )
    target = read_truth(truth, "damage", (int(shape[0]), int(shape[1])), classes).classes
    if target is None:  # a damage truth always has classes; keeps the type checker informed
        raise ParameterError(f"--truth {str(truth)!r} holds no damage classes")
    labels = np.where(np.isfinite(pred) & (pred <= 3), pred, 0).astype(np.uint8)
    result = miou_4class(labels, target)
    result["iou"] = [None if math.isnan(v) else v for v in result["iou"]]
    return result
