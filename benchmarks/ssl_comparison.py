"""Self-supervised pretraining compared: random init, MoCo v2, SeCo and CACo on synthetic AOIs (seeds not in tests).

Every mode trains the same ResNet-18 (stage 4) with ``changescope.train.train_ssl`` on the same data: all the
locations of the ``--train-seeds`` AOIs, with the same crops, input size, seed, epochs, batch, learning rate and
queue (``--queue-mult`` x batch). ``random`` is that network at its seeded initialisation (the weights every
trained mode starts from), saved with the same bands and normalisation. Each encoder is then scored on held-out
AOIs (``--eval-seeds``, generated separately, never trained on):

- **change-detection AUC**: ``changescope.evaluate.benchmark.benchmark`` runs each encoder as ``checkpoint:PATH``
  with the ``distance`` method on each evaluation AOI and reports the patch-level ROC AUC (a patch's score is its
  highest score over the dates; positive = its labels changed, negative = no pixel ever changed). The training-free
  ``spectral`` encoder is benchmarked beside them as a reference line;
- **linear-probe land-cover accuracy**: the patch embeddings the benchmark wrote (32 px patches) at
  ``--probe-dates`` evenly spaced dates are labelled with their majority land-cover class (the series ``labels``;
  patches whose majority covers under 60 % of the pixels, and cloudy patches with no embedding, are left out). A
  standardised ``LogisticRegression`` is trained on the left half of every evaluation AOI (columns
  ``< n_cols // 2``) and tested on the right half, so train and test patches are spatially disjoint.

Defaults, chosen on the training seeds and a separate development AOI (seed 250), never on the evaluation seeds,
to fit about 6 minutes of training per mode on a shared 2-core CPU: 32 px crops every 16 px, fed at 32 px (one
stage-4 feature per crop, as each 32 px patch is embedded), batch 64, queue 256, 20 epochs with the learning rate
divided by 10 at 60 % and 80 % of them, key momentum 0.99 (0.999 barely moves the key encoder in a few hundred
steps) and per-band brightness/contrast jitter 0.1 (0.4 scrambles the band ratios that tell land covers apart),
one torch thread (on a busy machine two threads ran 5 to 15 times slower).

It prints the budget actually used (training wall seconds per mode, threads, epochs, steps), one markdown table
(mode, train seconds, change AUC per evaluation seed and mean, linear-probe accuracy) and a JSON line with
everything. Timings are wall-clock on a shared CPU and therefore noisy.

Usage: python benchmarks/ssl_comparison.py [--train-seeds 201 202] [--eval-seeds 301 302 303] [--size 512]
    [--months 24] [--epochs 20] [--batch-size 64] [--threads 1] [--modes random moco seco caco] [--seed 0]
    [--out DIR]  (more options: --help)
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import changescope
from changescope.embed import open_embeddings
from changescope.encoders.base import BandSpec, EncoderMeta
from changescope.encoders.checkpoint import save_checkpoint_encoder
from changescope.evaluate.benchmark import benchmark
from changescope.grid import PatchGrid
from changescope.synthetic import PIXEL_SIZE, make_aoi
from changescope.train.config import TrainConfig, config_from_dict
from changescope.train.data import TemporalPatches
from changescope.train.moco import PooledBackbone
from changescope.train.ssl import train_ssl, training_patches

MODES = ("random", "moco", "seco", "caco")
PATCH = 32  # benchmark / probe patch side, px (one stage-4 feature cell of a ResNet-18)
MIN_MAJORITY = 0.6  # least share of a patch's pixels in its majority class for the probe


def make_data(root: Path, train_seeds: list[int], eval_seeds: list[int], size: int, months: int) -> dict[str, Any]:
    """Write the training AOIs into one DynamicEarthNet root and each evaluation AOI into its own root."""
    train_root = root / "train"
    for s in train_seeds:
        make_aoi(train_root, seed=s, size=size, months=months, aoi=f"aoi_{s}", overwrite=True)
    eval_roots = {}
    for s in eval_seeds:
        eval_roots[s] = root / f"eval_{s}"
        make_aoi(eval_roots[s], seed=s, size=size, months=months, overwrite=True)
    return {"train": train_root, "eval": eval_roots}


def train_config(mode: str, train_root: Path, out: Path, args: argparse.Namespace) -> TrainConfig:
    """The configuration shared by every mode; only ``ssl.mode`` and ``out`` differ."""
    epochs = args.epochs
    milestones = sorted({round(0.6 * epochs), round(0.8 * epochs)} - {0}) if epochs >= 5 else []
    return config_from_dict(
        {
            "data": {
                "inputs": [str(train_root)],
                "format": "dynamicearthnet",
                "size": args.crop,
                "stride": args.stride or args.crop // 2,
            },
            "model": {"architecture": "resnet18", "stage": 4},
            "ssl": {
                "mode": "caco" if mode == "random" else mode,
                "queue_size": args.queue_mult * args.batch_size,
                "momentum": args.momentum,
                "bn_splits": args.bn_splits,
            },
            "augment": {"out_size": args.out_size, "brightness": args.jitter, "contrast": args.jitter},
            "optim": {"epochs": epochs, "batch_size": args.batch_size, "lr": args.lr, "milestones": milestones},
            "out": str(out),
            "seed": args.seed,
            "device": "cpu",
            "threads": args.threads,
        },
        source="ssl_comparison",
    )


def save_random(config: TrainConfig, patches: TemporalPatches) -> Path:
    """Save the seeded initial backbone (what every trained mode starts from) with the trainer's normalisation."""
    with torch.random.fork_rng(devices=[]):  # as the trainer: the query backbone is the first thing drawn
        torch.manual_seed(config.seed)
        backbone = PooledBackbone(config.model.architecture, len(patches.bands), config.model.stage)
    meta = EncoderMeta(
        name=f"random-{config.model.architecture}",
        family="timm_cnn",
        bands=tuple(BandSpec(b.name, b.wavelength) for b in patches.bands),
        gsd=PIXEL_SIZE,
        input_size=config.augment.out_size,
        patch_size=backbone.stride,
        embed_dim=backbone.out_dim,
        normalization=patches.normalization(),
        licence="unspecified",
        description="random initialisation (seeded), the starting point of the trained modes",
    )
    return save_checkpoint_encoder(
        backbone.features,
        meta,
        Path(config.out) / "encoder.safetensors",
        architecture=f"timm:{config.model.architecture}",
        stage=config.model.stage,
        extra={"mode": "random", "epoch": 0, "config": config.model_dump(mode="json")},
    )


def train_mode(mode: str, config: TrainConfig, patches: TemporalPatches) -> dict[str, Any]:
    """Train (or, for ``random``, save) one encoder; returns its path, wall seconds, steps and history."""
    t0 = time.perf_counter()
    if mode == "random":
        path = save_random(config, patches)
        return {"encoder": path, "seconds": time.perf_counter() - t0, "steps": 0, "history": []}
    result = train_ssl(config, progress=False)
    seconds = time.perf_counter() - t0
    steps = result.epochs * (patches.n_locations // config.optim.batch_size)
    history = [{k: h[k] for k in ("epoch", "loss", "changed_fraction", "seconds")} for h in result.history]
    return {"encoder": result.encoder, "seconds": seconds, "steps": steps, "history": history}


def probe_data(store: Path, ds: Any, n_dates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, majority classes and left-half flags of the clear, well-labelled patches at ``n_dates`` dates."""
    emb = open_embeddings(store)
    grid = PatchGrid.for_series(ds, PATCH)
    times = np.unique(np.linspace(0, ds.sizes["time"] - 1, n_dates).round().astype(int))
    left = np.broadcast_to(np.arange(grid.n_cols) < grid.n_cols // 2, grid.shape)
    xs, ys, sides = [], [], []
    for t in times:
        labels = np.asarray(ds["labels"].isel(time=int(t)).values)
        classes = np.unique(labels[labels >= 0])
        frac = np.stack([grid.aggregate(labels == c, "fraction") for c in classes])
        major, share = classes[frac.argmax(axis=0)], frac.max(axis=0)
        e = np.asarray(emb["embedding"].sel(time=ds["time"].values[t]).values, dtype=np.float64)
        keep = (share >= MIN_MAJORITY) & np.isfinite(e).all(axis=-1)
        xs.append(e[keep])
        ys.append(major[keep])
        sides.append(left[keep])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(sides)


def linear_probe(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Accuracy of a standardised logistic regression trained on left halves and tested on right halves."""
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    left = np.concatenate([p[2] for p in parts])
    res: dict[str, Any] = {"accuracy": None, "n_train": int(left.sum()), "n_test": int((~left).sum())}
    res["majority_baseline"] = None
    if len(np.unique(y[left])) < 2 or not (~left).any():  # tiny AOIs (smoke runs): nothing to probe
        return res
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    clf.fit(x[left], y[left])
    res["accuracy"] = float((clf.predict(x[~left]) == y[~left]).mean())
    res["majority_baseline"] = float((y[~left] == np.bincount(y[left]).argmax()).mean())
    return res


def fmt(v: float | None, digits: int = 3) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[201, 202])
    ap.add_argument("--eval-seeds", type=int, nargs="+", default=[301, 302, 303])
    ap.add_argument("--size", type=int, default=512, help="AOI side, px")
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--queue-mult", type=int, default=4, help="queue size = this x batch size")
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--momentum", type=float, default=0.99, help="key encoder momentum (0.999 for long schedules)")
    ap.add_argument("--bn-splits", type=int, default=1, help="ssl.bn_splits (shuffled-BatchNorm emulation)")
    ap.add_argument("--crop", type=int, default=32, help="location crop side, px (data.size)")
    ap.add_argument("--stride", type=int, default=None, help="step between locations, px (default crop / 2)")
    ap.add_argument("--out-size", type=int, default=32, help="network input side, px (augment.out_size)")
    ap.add_argument("--jitter", type=float, default=0.1, help="per-band brightness and contrast jitter (augment)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--seed", type=int, default=0, help="training seed (initialisation, batches, augmentations)")
    ap.add_argument("--probe-dates", type=int, default=4, help="evenly spaced dates whose patches the probe uses")
    ap.add_argument("--out", type=Path, default=None, help="keep everything here (default: a temporary folder)")
    args = ap.parse_args()
    if set(args.train_seeds) & set(args.eval_seeds):
        ap.error(f"--train-seeds {args.train_seeds} and --eval-seeds {args.eval_seeds} must not overlap")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out if args.out is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        data = make_data(root / "data", args.train_seeds, args.eval_seeds, args.size, args.months)
        data_s = time.perf_counter() - t0

        configs = {m: train_config(m, data["train"], root / "runs" / m, args) for m in args.modes}
        cfg0 = configs[args.modes[0]]
        patches = training_patches(cfg0)
        n_loc = patches.n_locations
        runs: dict[str, dict[str, Any]] = {}
        for mode in args.modes:
            runs[mode] = r = train_mode(mode, configs[mode], patches)
            print(f"trained {mode}: {r['seconds']:.1f} s, {r['steps']} steps on {n_loc} locations", flush=True)
        del patches

        encoders = {"spectral": "spectral"} | {m: f"checkpoint:{runs[m]['encoder']}" for m in args.modes}
        auc: dict[str, dict[int, float | None]] = {name: {} for name in encoders}
        probes: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {name: [] for name in encoders}
        t0 = time.perf_counter()
        for s, eval_root in data["eval"].items():
            df = benchmark(
                eval_root, root / "bench" / f"eval_{s}", encoders=list(encoders.values()), methods=["distance"]
            )
            ds = changescope.open(eval_root)
            for name, enc in encoders.items():
                row = df[df["encoder"] == enc].iloc[0]
                if row["status"] != "ok":
                    raise RuntimeError(f"benchmark of {name} on eval seed {s} failed: {row['status']}")
                auc[name][s] = float(row["auc"])
                probes[name].append(probe_data(Path(row["run_dir"]) / "embeddings.zarr", ds, args.probe_dates))
        eval_s = time.perf_counter() - t0
        probe = {name: linear_probe(parts) for name, parts in probes.items()}

    seeds = list(data["eval"])
    mean_auc = {name: float(np.mean([v for v in a.values() if v is not None])) for name, a in auc.items()}
    print()
    print(
        f"budget: {args.threads} torch threads, device cpu; {args.epochs} epochs x batch {args.batch_size} "
        f"(queue {cfg0.ssl.queue_size}, lr {args.lr}, milestones {cfg0.optim.milestones}); "
        f"{n_loc} locations ({args.crop} px crops every {cfg0.data.stride} px, "
        f"input {args.out_size} px) from train seeds {args.train_seeds} ({args.size} px, {args.months} months)"
    )
    for m in args.modes:
        r = runs[m]
        print(f"  {m}: {r['seconds']:.1f} s training wall time, {r['steps']} steps")
    print(f"data generation {data_s:.1f} s, evaluation (benchmark + probe) {eval_s:.1f} s; eval seeds {seeds}")
    print()
    head = ["mode", "train s", *[f"AUC {s}" for s in seeds], "AUC mean", "probe acc"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name in encoders:
        secs = fmt(runs[name]["seconds"], 0) if name in runs else "-"
        cells = [name, secs, *[fmt(auc[name][s]) for s in seeds], fmt(mean_auc[name]), fmt(probe[name]["accuracy"])]
        print("| " + " | ".join(cells) + " |")
    p0 = next(iter(probe.values()))
    print(
        f"\nprobe: {p0['n_train']} train / {p0['n_test']} test patches (left / right halves), majority-class "
        f"baseline {fmt(p0['majority_baseline'])}"
    )
    payload = {
        "train_seeds": args.train_seeds,
        "eval_seeds": seeds,
        "size": args.size,
        "months": args.months,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "queue_size": cfg0.ssl.queue_size,
        "lr": args.lr,
        "crop": args.crop,
        "stride": cfg0.data.stride,
        "out_size": args.out_size,
        "threads": args.threads,
        "seed": args.seed,
        "locations": n_loc,
        "train": {m: {k: v for k, v in r.items() if k != "encoder"} for m, r in runs.items()},
        "auc": {name: {str(s): v for s, v in a.items()} for name, a in auc.items()},
        "auc_mean": mean_auc,
        "probe": probe,
        "data_s": data_s,
        "eval_s": eval_s,
    }
    print(json.dumps(payload, default=float))


if __name__ == "__main__":
    main()
