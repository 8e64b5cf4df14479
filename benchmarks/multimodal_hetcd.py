"""Heterogeneous change detection on the real ``hetcd`` pairs: training-free baselines vs a tiny trained model.

For each real pair in ``../shared/data/hetcd`` (shuguang and yellowriver: SAR before, optical after; italy: one
near-infrared band before, read as the 1-band side, optical after; img7: optical/optical) and 2 seeded synthetic
optical/SAR pairs (:func:`changescope.multimodal.synthetic.make_pair`), the pixel ROC AUC of each baseline of
:mod:`changescope.multimodal.baselines` against the change map:

- ``lr``: :func:`~changescope.multimodal.baselines.log_ratio_cva` (``mode="log_ratio"``);
- ``cva``: the same with ``mode="rank"``;
- ``sc``: :func:`~changescope.multimodal.baselines.structure_consistency` (defaults);
- ``siam0``: :func:`~changescope.multimodal.baselines.untrained_siamese` (ResNet-34, seed 0, window 64, stride 32).

With ``--train`` (default on), a tiny pseudo-siamese model per scene, trained on one region of the scene and
evaluated on the other (``--split halves``: left trained, right evaluated; ``--split blocks``: a 4 x 4 grid, half
of the blocks, drawn with ``--split-seed``, held out; ROIs straddling a boundary dropped):

- ``--context`` px context around a ``--roi`` px ROI (16) at stride roi / 2;
- ``--arch`` backbones pooled at ``--stage`` with ``--pooling`` (default stage 3, ROI pooling; ours);
- Adam at ``--lr`` (1e-4, not the published 1e-5: minutes of CPU), ``--epochs`` x ``--steps`` batches of
  ``--batch`` at the published negative share 0.8, paired flips and rotations;
- InfoNCE with ``--negatives all`` (default here, ours: the other unchanged pairs of the batch are negatives too;
  ``changed``, the published choice, contrasts each unchanged pair with the changed pairs only);
- its map is :func:`~changescope.multimodal.predict.change_map` over the whole image (window = context), each
  window's score painted on its centred ROI at stride roi / 2 (``--paint roi``, the default here) or on the whole
  window at stride context / 4 (``--paint window``); ``--tta 1 8`` also paints the same model's map with each window
  averaged over 8 rotated and flipped views (one more column per value).

The synthetic scenes are not split: the model trains on ``--synthetic-train`` (4) other seeded pairs of the same
event and is evaluated on the whole held-out pair (``--synthetic-train 0``: split like the real scenes), as a user
trains on many images. Context windows of training ROIs near a boundary see held-out pixels (not their labels).

Two AUCs are printed per method: over the whole image and over the evaluated region (the pixels the model never
trained on; the columns to compare). Synthetic scenes get a second row: per method, the AUC of damaged and of
destroyed roofs against intact roofs in the evaluated region (does the map see damage, or only buildings?). Then the
ratio trained / best baseline there. img7 has no SAR side, so the model (which needs one optical and one SAR image)
is not trained on it. ``--save-maps DIR`` keeps every map. The README's table gives the measured numbers.

Usage: python benchmarks/multimodal_hetcd.py [--no-train] [--epochs 6] [--steps 30] [--context 64] [--lr 1e-4]
    [--paint roi] [--stage 3] [--pooling roi] [--negatives all] [--synthetic-train 4] [--split halves] [--blocks 4]
    [--val-share 0.5] [--split-seed 42] [--save-maps DIR] [--roi 16] [--arch resnet18] [--threads 2]
    [--tta 1 8] [--only shuguang italy] [--data ../shared/data/hetcd]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from changescope.multimodal import baselines as bl
from changescope.multimodal.pairs import read_side, read_truth


@dataclass(frozen=True)
class Scene:
    """One pair to score: its files (``None`` for synthetic) or arrays, modalities and truth."""

    name: str
    pre: NDArray[np.float32]
    post: NDArray[np.float32]
    pre_modality: str
    post_modality: str
    change: NDArray[np.bool_]
    valid: NDArray[np.bool_]
    files: tuple[Path, Path, Path] | None
    classes: NDArray[np.uint8] | None = None


REAL = {
    "shuguang": ("shuguang_1.bmp", "shuguang_2.bmp", "shuguang_gt.bmp", "sar", "optical"),
    "yellowriver": ("YellowRiver_1.jpg", "YellowRiver_2.jpg", "YellowRiver_gt.bmp", "sar", "optical"),
    "italy": ("Italy_1.bmp", "Italy_2.bmp", "Italy_gt.bmp", "sar", "optical"),
    "img7": ("Img7-Bc.tif", "Img7-Ac.tif", "Img7-C.tif", "optical", "optical"),
}


def real_scenes(root: Path) -> list[Scene]:
    """The hetcd pairs present under ``root``."""
    out = []
    for name, (a, b, gt, ma, mb) in REAL.items():
        folder = root / name
        if not (folder / a).exists():
            print(f"skip {name}: {folder / a} not found")
            continue
        pre = read_side(folder / a, ma, role="pre")  # type: ignore[arg-type]
        post = read_side(folder / b, mb, role="post")  # type: ignore[arg-type]
        shape = (int(pre.image.shape[1]), int(pre.image.shape[2]))
        truth = read_truth(folder / gt, "change", shape, folder / a)
        valid = pre.valid & post.valid & truth.valid
        out.append(
            Scene(name, pre.image, post.image, ma, mb, truth.damage, valid, (folder / a, folder / b, folder / gt))
        )
    return out


SYNTHETIC = ((11, "turkey-earthquake"), (12, "libya-flood"))


def synthetic_scene(seed: int, event: str) -> Scene:
    """One seeded synthetic optical-before / SAR-after pair of 256 px."""
    from changescope.multimodal.synthetic import make_pair

    p = make_pair(seed, size=256, event=event)
    ones = np.ones(p.change.shape, dtype=bool)
    name = f"synth-{event.split('-')[1]}"
    optical, sar = p.optical.astype(np.float32), p.sar.astype(np.float32)
    return Scene(name, optical, sar, "optical", "sar", p.change, ones, None, p.target)


def synthetic_scenes() -> list[Scene]:
    """The 2 seeded synthetic pairs that are evaluated (seeds 11 and 12)."""
    return [synthetic_scene(seed, event) for seed, event in SYNTHETIC]


def synthetic_training_pairs(scene: Scene, k: int) -> list[Scene]:
    """``k`` other seeded pairs of the same event as ``scene`` (seeds 1000 + 10 x seed + i: never an evaluated seed)."""
    seed, event = next((s, e) for s, e in SYNTHETIC if f"synth-{e.split('-')[1]}" == scene.name)
    return [synthetic_scene(1000 + 10 * seed + i, event) for i in range(k)]


def _auc(score: NDArray[np.float32], scene: Scene, region: NDArray[np.bool_]) -> float:
    m = scene.valid & region
    y = scene.change[m]
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, score[m]))


def by_class(scene: Scene, maps: dict[str, NDArray[np.float32]], region: NDArray[np.bool_]) -> list[str]:
    """Per map: AUC of damaged (2) and of destroyed (3) roofs against intact ones (1), ``damaged/destroyed``."""
    classes = cast(NDArray[np.uint8], scene.classes)
    cells = []
    for score in maps.values():
        aucs = []
        for damage in (2, 3):
            keep = region & ((classes == damage) | (classes == 1))
            y = classes[keep] == damage
            aucs.append(float(roc_auc_score(y, score[keep])) if y.any() and not y.all() else float("nan"))
        cells.append("/".join(f"{a:.3f}" for a in aucs))
    return cells


def _write_synthetic(scene: Scene, folder: Path) -> tuple[Path, Path, Path]:
    from changescope.io.writers import write_geotiff

    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "pre.tif", folder / "post.tif", folder / "gt.tif")
    from affine import Affine

    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_200_000.0)
    for path, array in zip(paths, (scene.pre, scene.post, scene.change[None]), strict=True):
        write_geotiff(path, array.astype(np.uint8), crs="EPSG:32633", transform=transform)
    return paths


def split_params(args: argparse.Namespace, context: int | None = None) -> Any:
    """The index parameters of the region split (``--split``, ``--blocks``, ``--val-share``)."""
    from changescope.multimodal.index import IndexParams

    return IndexParams(
        roi=args.roi,
        context=context or args.context,
        stride=max(1, args.roi // 2),
        split=args.split,
        blocks=args.blocks,
        val_share=args.val_share,
        seed=args.split_seed,
    )


def eval_region(scene: Scene, args: argparse.Namespace) -> NDArray[np.bool_]:
    """The pixels the trained model is evaluated on: the held-out region, or all of a held-out synthetic pair."""
    from changescope.multimodal.regions import val_region

    if scene.files is None and args.synthetic_train > 0:
        return np.ones(scene.change.shape, dtype=bool)
    return val_region(scene.change.shape, split_params(args))  # type: ignore[arg-type]


def trained_map(scene: Scene, work: Path, args: argparse.Namespace) -> dict[int, NDArray[np.float32]] | None:
    """Train on one region; the whole-image change map for each ``--tta`` (``None`` without an optical+SAR pair)."""
    if {scene.pre_modality, scene.post_modality} != {"optical", "sar"}:
        return None
    from changescope.multimodal.config import config_from_dict
    from changescope.multimodal.index import PatchDataset, build_index
    from changescope.multimodal.model import load_model
    from changescope.multimodal.pairs import normalise_pair, pair_sample, read_pair_arrays
    from changescope.multimodal.predict import change_map
    from changescope.multimodal.train import train_multimodal

    files = scene.files or _write_synthetic(scene, work / scene.name / "data")
    sample = pair_sample(*files, pre_modality=scene.pre_modality, post_modality=scene.post_modality)
    params = split_params(args)
    if scene.files is None and args.synthetic_train > 0:
        # A held-out seed: train on other seeded pairs of the same event, evaluate on all of this one.
        others = synthetic_training_pairs(scene, args.synthetic_train)
        train_samples = [
            replace(
                pair_sample(*_write_synthetic(o, work / scene.name / f"train{i}"), sample_id=f"train{i}"),
                split="train",
            )
            for i, o in enumerate(others)
        ]
        index = build_index(train_samples, params)
    else:
        index = build_index([sample], params)
    train_set = PatchDataset(index, split="train")
    config = config_from_dict(
        {
            "data": {"index": "in-memory"},
            "model": {
                "architecture": args.arch,
                "hidden_dim": 128,
                "proj_dim": 64,
                "context": args.context,
                "roi": args.roi,
                "pooling": args.pooling,
                "stage": args.stage,
            },
            "optim": {
                "epochs": args.epochs,
                "batch_size": args.batch,
                "lr": args.lr,
                "batches_per_epoch": args.steps,
                "augment": True,
                "negative_share": args.negative_share,
            },
            "loss": {"negatives": args.negatives, "symmetric": args.symmetric},
            "out": str(work / scene.name / "run"),
            "seed": 0,
            "device": "cpu",
            "threads": args.threads,
        }
    )
    result = train_multimodal(config, cast(Any, train_set), None, progress=False)
    model, _ = load_model(result.last)
    optical, sar, _ = normalise_pair(read_pair_arrays(sample))
    stride = args.map_stride or (max(1, args.roi // 2) if args.paint == "roi" else max(1, args.context // 4))
    return {
        tta: change_map(model, optical, sar, window=args.context, stride=stride, paint=args.paint, tta=tta)
        for tta in args.tta
    }


def main() -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared/data/hetcd")
    ap.add_argument("--no-train", dest="train", action="store_false")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pooling", choices=["global", "roi"], default="roi")
    ap.add_argument("--roi", type=int, default=16, help="ROI side (windows every roi / 2 px, painted at that stride)")
    ap.add_argument("--stage", type=int, default=3, help="backbone stage pooled (4: last, stride 32; 3: stride 16)")
    ap.add_argument("--paint", choices=["window", "roi"], default="roi")
    ap.add_argument(
        "--tta",
        type=int,
        nargs="+",
        default=[1],
        choices=[1, 2, 4, 8],
        help="test-time views averaged per window; several values: one column each (trained, tta N), one training",
    )
    ap.add_argument(
        "--negatives", choices=["changed", "all"], default="all", help="InfoNCE negatives (loss; 'changed': published)"
    )
    ap.add_argument("--symmetric", action="store_true", help="also anchor the SAR projections (loss)")
    ap.add_argument("--negative-share", type=float, default=0.8, help="share of changed pairs per batch")
    ap.add_argument("--map-stride", type=int, default=0, help="0: roi / 2 with --paint roi, else context / 4")
    ap.add_argument(
        "--synthetic-train",
        type=int,
        default=4,
        help="synthetic scenes: train on this many other seeded pairs of the event and evaluate the whole held-out "
        "pair (0: train on its left half like the real scenes)",
    )
    ap.add_argument("--split", choices=["halves", "blocks"], default="halves", help="region split of a scene")
    ap.add_argument("--blocks", type=int, default=4, help="--split blocks: blocks per side")
    ap.add_argument("--val-share", type=float, default=0.5, help="--split blocks: share of blocks evaluated")
    ap.add_argument("--split-seed", type=int, default=42, help="--split blocks: seed of the blocks drawn")
    ap.add_argument("--save-maps", type=Path, default=None, help="write each scene's maps to DIR/{scene}.npz")
    ap.add_argument("--only", nargs="*", default=None, help="scene names to run (default: all)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    scenes = real_scenes(args.data.resolve()) + synthetic_scenes()
    if args.only:
        scenes = [s for s in scenes if s.name in args.only]
    methods: dict[str, Callable[[Scene], NDArray[np.float32]]] = {
        "lr": lambda s: bl.log_ratio_cva(s.pre, s.post, valid=s.valid),
        "cva": lambda s: bl.log_ratio_cva(s.pre, s.post, mode="rank", valid=s.valid),
        "sc": lambda s: bl.structure_consistency(s.pre, s.post, valid=s.valid),
        "siam0": lambda s: bl.untrained_siamese(
            s.pre, s.post, pre_modality=s.pre_modality, post_modality=s.post_modality, stride=32, valid=s.valid
        ),
    }
    trained_cols = ["trained", *(f"tta {n}" for n in args.tta[1:])] if args.train else []
    header = f"{'scene':<14}{'size':>10}{'chg%':>6} | " + " ".join(f"{m:>11}" for m in [*methods, *trained_cols])
    print(
        f"pixel ROC AUC: whole image / evaluated region (split {args.split}: the model trains on the other region; "
        f"synthetic pairs: {args.synthetic_train} other seeds trained, the whole pair evaluated)"
    )
    print(header + f" | {'ratio':>6} {'secs':>24}")
    with tempfile.TemporaryDirectory() as tmp:
        for scene in scenes:
            h, w = scene.change.shape
            right = eval_region(scene, args)
            everywhere = np.ones((h, w), dtype=bool)
            cells, secs, best = [], [], 0.0
            maps: dict[str, NDArray[np.float32]] = {}
            for name, fn in methods.items():
                t0 = time.perf_counter()
                score = fn(scene)
                maps[name] = score
                secs.append(f"{name}={time.perf_counter() - t0:.1f}")
                full, half = _auc(score, scene, everywhere), _auc(score, scene, right)
                best = max(best, half)
                cells.append(f"{full:.3f}/{half:.3f}")
            trained_half = float("nan")
            if args.train:
                t0 = time.perf_counter()
                tmaps = trained_map(scene, Path(tmp), args)
                if tmaps is not None:
                    for col, tmap in zip(trained_cols, tmaps.values(), strict=True):
                        maps[col] = tmap
                        auc_half = _auc(tmap, scene, right)
                        trained_half = auc_half if col == "trained" else trained_half
                        cells.append(f"{_auc(tmap, scene, everywhere):.3f}/{auc_half:.3f}")
                    secs.append(f"train={time.perf_counter() - t0:.0f}")
                else:
                    cells.extend(f"{'n/a':>11}" for _ in trained_cols)
            if args.save_maps is not None:
                args.save_maps.mkdir(parents=True, exist_ok=True)
                arrays = {"change": scene.change, "valid": scene.valid, "evaluated": right, **maps}
                np.savez_compressed(args.save_maps / f"{scene.name}.npz", **arrays)
            ratio = trained_half / best if best > 0 else float("nan")
            row = f"{scene.name:<14}{f'{h}x{w}':>10}{100 * scene.change[scene.valid].mean():>6.1f} | "
            print(row + " ".join(f"{c:>11}" for c in cells) + f" | {ratio:>6.2f} {' '.join(secs)}", flush=True)
            if scene.classes is not None:
                print(f"{'':<14}{'by class':>16} | " + " ".join(f"{c:>11}" for c in by_class(scene, maps, right)))


if __name__ == "__main__":
    main()
