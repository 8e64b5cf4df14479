"""Scaling of ``changescope run`` with the AOI side and the number of dates, against the encoder's own limit.

For every side in ``--sides`` a synthetic Sentinel-2 L2A tile (``changescope.synthetic.write_s2_tile``: the 12 L2A
bands as COGs at 10/20/60 m and an SCL mask) is written once with the largest ``--dates``; each smaller dates count
runs on a folder of links to its first dates' files (the ``perband`` reader reads any such folder). For every
encoder, ``changescope run SERIES --no-report --quiet`` (random weights for learned encoders: nothing is downloaded)
runs in a fresh subprocess, itself wrapped in a small Python process that prints the run's peak RSS
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``) and wall time; the run's ``run.json`` gives the seconds of each stage
(open, embed, score, events, discover).

The encoder's FLOP limit is measured in the same session: a bare forward pass (``feature_map``) of the same encoder
(random weights, same torch threads and batch size) on pre-loaded, pre-normalised tiles cut from the series' own
pixels, counted for every tile the run feeds it (the patch store and the sub-patch store: every tile of every block
of every date that holds a patch clear enough to embed, from the stores' ``valid_fraction``). A seeded sample of
``--bare-sample`` tiles from whole blocks of random dates is pre-loaded and timed, repeatedly until every tile is
counted or ``--bare-budget`` seconds are spent, and the time per tile is multiplied by the count (the output says
how many were timed). The ratio run / bare is how far the whole run is from the encoder's limit (the issue's goal
for ``resnet18``: within 1.2x).

Prints a table (side, dates, encoder, wall, peak RSS, per-stage seconds, bare forward, ratios), a linearity summary
(seconds per megapixel-date for each configuration and a fitted exponent ``wall ~ (Mpx x dates)^b``), the issue's
goals beside the measurements (a whole 10980 px tile x 24 dates with ``spectral`` in <= 10 min at <= 2 GiB peak
RSS; ``resnet18`` within 1.2x of its bare forward) with an extrapolation to the whole tile when it was not measured,
and writes ``benchmarks/results/scale.csv`` and ``benchmarks/results/scale.png`` (log-log wall time and peak RSS
against Mpx x dates, one line per encoder).

``--cluster`` also runs the smallest configuration of every encoder on a 2-worker local dask cluster
(``--workers 2``) and compares its outputs with the single-process run: ``patch_scores.parquet``,
``changes.parquet`` and the values of ``embeddings.zarr`` and ``subpatches.zarr`` (identical yes/no). With workers,
the peak RSS is that of the largest single process (the client or one worker).

Everything is written into a temporary folder that is deleted at the end, unless ``--keep DIR`` (then kept, and
tiles already in DIR of the right size and enough months are reused). ``--append`` merges the rows into an existing
``scale.csv`` (a case measured again replaces its row), so a long grid can be measured one invocation at a time.
Asserts nothing.

Usage::

    python benchmarks/scale.py [--sides 1026 2052] [--dates 6 12] [--encoders spectral resnet18] [--cluster]
        [--threads N] [--device cpu] [--bare-budget 30] [--bare-sample 64] [--seed 0] [--keep DIR]
        [--results benchmarks/results] [--append]

The issue's full grid (AOI side ~1k, 4k, 11k px x 6, 12, 24 dates; writing the 10980 px x 24-month tile alone takes
about an hour and 25 GiB on a 2-core machine, and the runs take many hours there)::

    python benchmarks/scale.py --sides 1026 4104 10980 --dates 6 12 24 --encoders spectral resnet18 --cluster
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WHOLE_SIDE = 10980
WHOLE_DATES = 24
GOAL_SPECTRAL_S = 600.0
GOAL_SPECTRAL_RSS_GIB = 2.0
GOAL_RESNET_RATIO = 1.2
STAGES = ("open", "embed", "score", "events", "discover")
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"

# Runs one command, then prints its wall time and the peak RSS of its process tree (largest single process).
WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
with open(sys.argv[1], "w") as err:
    code = subprocess.run(sys.argv[2:], stderr=err, check=False).returncode
wall = time.perf_counter() - start
print(json.dumps({"rc": code, "wall_s": wall, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""
RUN_CLI = "import sys; from changescope.cli.app import main; main(sys.argv[1:])"


@dataclass
class Row:
    """One measured run."""

    side: int
    dates: int
    encoder: str
    mode: str
    mpx_dates: float
    wall_s: float
    peak_rss_gib: float
    rc: int
    stages: dict[str, float] = field(default_factory=dict)
    bare_s: float = math.nan
    bare_tiles: int = 0
    bare_timed_tiles: int = 0
    load1: float = math.nan
    identical: str = ""

    @property
    def ratio(self) -> float:
        """Run wall time / bare forward time."""
        return self.wall_s / self.bare_s if self.bare_s > 0 else math.nan

    @property
    def embed_ratio(self) -> float:
        """Embed-stage time / bare forward time."""
        embed = self.stages.get("embed", math.nan)
        return embed / self.bare_s if self.bare_s > 0 else math.nan

    @property
    def per_mpx_date(self) -> float:
        """Wall seconds per megapixel-date."""
        return self.wall_s / self.mpx_dates

    def csv_record(self) -> dict[str, Any]:
        """The row as a flat CSV record."""
        record = {k: v for k, v in asdict(self).items() if k != "stages"}
        for stage in STAGES:
            record[f"{stage}_s"] = self.stages.get(stage, math.nan)
        record["ratio_run_bare"] = self.ratio
        record["ratio_embed_bare"] = self.embed_ratio
        record["s_per_mpx_date"] = self.per_mpx_date
        return record


def read_rows(path: Path) -> list[Row]:
    """Rows of an earlier ``scale.csv`` (for ``--append``)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            rows.append(
                Row(
                    side=int(rec["side"]),
                    dates=int(rec["dates"]),
                    encoder=rec["encoder"],
                    mode=rec["mode"],
                    mpx_dates=float(rec["mpx_dates"]),
                    wall_s=float(rec["wall_s"]),
                    peak_rss_gib=float(rec["peak_rss_gib"]),
                    rc=int(rec["rc"]),
                    stages={s: float(rec[f"{s}_s"]) for s in STAGES if rec.get(f"{s}_s") not in (None, "", "nan")},
                    bare_s=float(rec["bare_s"]),
                    bare_tiles=int(rec["bare_tiles"]),
                    bare_timed_tiles=int(rec["bare_timed_tiles"]),
                    load1=float(rec["load1"]),
                    identical=rec.get("identical", ""),
                )
            )
    return rows


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[name] = str(threads)
    return env


def weights_for(encoder: str) -> str | None:
    """Random weights for encoders that have weights (nothing is downloaded); none for training-free ones."""
    from changescope.encoders import get_meta

    return None if get_meta(encoder).weights.kind == "none" else "random"


def tile_months(folder: Path) -> tuple[int, int] | None:
    """``(size, months)`` of a finished synthetic tile folder, or None."""
    meta = folder / "synth_tile.json"
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text())
    return int(info["size"]), int(info["months"])


def write_tile(folder: Path, side: int, months: int, seed: int) -> float:
    """Write the tile (unless a kept one of this side with enough months is there); returns the seconds it took."""
    found = tile_months(folder)
    if found is not None and found[0] == side and found[1] >= months:
        print(f"  reusing the {side} px x {found[1]}-month tile in {folder}")
        return 0.0
    if folder.exists():
        shutil.rmtree(folder)
    from changescope.synthetic import write_s2_tile

    start = time.perf_counter()
    write_s2_tile(folder, seed=seed, size=side, months=months, bands="s2")
    took = time.perf_counter() - start
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"  wrote a {side} px x {months}-month S2 tile in {took:.0f} s ({size / 2**20:.0f} MiB)")
    return took


def date_subset(tile: Path, dates: int, out: Path) -> Path:
    """A folder of links to the band and SCL files of the tile's first ``dates`` dates."""
    from changescope.synthetic.tile_spec import PREFIX

    stamps = sorted({p.stem.rsplit("_", 1)[-1] for p in tile.glob(f"{PREFIX}_*.tif")})[:dates]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for stamp in stamps:
        for src in tile.glob(f"{PREFIX}_*_{stamp}.tif"):
            (out / src.name).symlink_to(src.resolve())
    return out


def run_measured(cmd: list[str], env: dict[str, str], err_file: Path) -> dict[str, Any]:
    """Run ``cmd`` in a fresh wrapper process; its rc, wall seconds and peak RSS (KiB)."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(err_file), *cmd], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_cmd(series: Path, out: Path, encoder: str, device: str, workers: int | None) -> list[str]:
    cmd = [sys.executable, "-c", RUN_CLI, "--debug", "run", str(series), "--out", str(out), "--encoder", encoder]
    weights = weights_for(encoder)
    if weights:
        cmd += ["--weights", weights]
    cmd += ["--device", device, "--no-report", "--quiet"]
    if workers:
        cmd += ["--workers", str(workers)]
    return cmd


def run_one(
    series: Path, out: Path, side: int, dates: int, encoder: str, args: argparse.Namespace, workers: int | None
) -> Row:
    load1 = os.getloadavg()[0]
    err_file = out.with_suffix(".stderr.txt")
    cmd = run_cmd(series, out, encoder, args.device, workers)
    measured = run_measured(cmd, thread_env(args.threads), err_file)
    row = Row(
        side=side,
        dates=dates,
        encoder=encoder,
        mode=f"cluster{workers}" if workers else "single",
        mpx_dates=side * side * dates / 1e6,
        wall_s=float(measured["wall_s"]),
        peak_rss_gib=measured["maxrss_kib"] / 2**20,
        rc=int(measured["rc"]),
        load1=load1,
    )
    if row.rc != 0:
        tail = err_file.read_text()[-4000:] if err_file.exists() else "(no stderr)"
        print(f"  run FAILED (exit {row.rc}, {row.wall_s:.0f} s, peak RSS {row.peak_rss_gib:.2f} GiB):\n{tail}")
        return row
    info = json.loads((out / "run.json").read_text())
    row.stages = {k: float(v) for k, v in info.get("timings_s", {}).items()}
    return row


def fed_tiles(layout: Any, keep: np.ndarray) -> dict[tuple[int, int, int], list[tuple[int, int]]]:
    """The tiles ``(ky, kx)`` of every ``(date, block row, block col)`` that the run feeds the encoder.

    As :func:`changescope.embed.pipeline.embed_block` does: tiles of ``per_tile`` x ``per_tile`` patches step through
    each block; a tile none of whose patches is kept (valid fraction under ``min_valid``) is skipped.
    """
    pt = layout.per_tile
    out: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for t in range(keep.shape[0]):
        for br in range(layout.n_block_rows):
            for bc in range(layout.n_block_cols):
                r0, r1, c0, c1 = layout.block_patches(br, bc)
                tiles = [
                    (ky, kx)
                    for ky in range(layout.n_tiles(r1 - r0))
                    for kx in range(layout.n_tiles(c1 - c0))
                    if keep[
                        t, r0 + ky * pt : min(r1, r0 + (ky + 1) * pt), c0 + kx * pt : min(c1, c0 + (kx + 1) * pt)
                    ].any()
                ]
                if tiles:
                    out[(t, br, bc)] = tiles
    return out


def sample_tiles(
    source: Any, layout: Any, fed: dict[tuple[int, int, int], list[tuple[int, int]]], n: int, rng: Any
) -> list[np.ndarray]:
    """About ``n`` fed tiles' pixels, from blocks of random dates: each block read whole, as a task reads it."""
    per_block = max(1, -(-n // 4))  # from at least 4 blocks when they have tiles enough
    keys = list(fed)
    out: list[np.ndarray] = []
    for i in rng.permutation(len(keys)):
        t, br, bc = keys[i]
        r0, r1, c0, c1 = layout.block_patches(br, bc)
        ext_y, ext_x = layout.block_extent(r1 - r0), layout.block_extent(c1 - c0)
        ys = slice(r0 * layout.stride, min(layout.height, r0 * layout.stride + ext_y))
        xs = slice(c0 * layout.stride, min(layout.width, c0 * layout.stride + ext_x))
        refl, _ = source.read(t, ys, xs)
        pad = ((0, 0), (0, ext_y - refl.shape[1]), (0, ext_x - refl.shape[2]))
        pixels = np.pad(refl, pad, mode="reflect") if any(p[1] for p in pad) else refl
        tiles = fed[keys[i]]
        e, s = layout.tile_extent, layout.tile
        for j in rng.choice(len(tiles), size=min(len(tiles), per_block, n - len(out)), replace=False):
            ky, kx = tiles[j]
            out.append(np.ascontiguousarray(pixels[:, ky * s : ky * s + e, kx * s : kx * s + e]))
        if len(out) >= n:
            break
    return out


def bare_forward(series: Path, run_dir: Path, encoder_name: str, args: argparse.Namespace) -> tuple[float, int, int]:
    """Seconds the bare encoder forward needs for every tile the run fed it; (seconds, tiles, tiles timed).

    The tiles are counted from the run's stores (their grid, block and ``valid_fraction``); a seeded random sample
    of about ``--bare-sample`` of them (from whole blocks of random dates), read from the series and normalised as
    the pipeline does, is pre-loaded and run through ``feature_map`` in batches of ``--batch-size`` (after one
    warm-up batch) until every tile is counted or ``--bare-budget`` seconds are spent; the time per tile times the
    count is the bare forward time.
    """
    import torch

    import changescope
    from changescope.embed import BlockLayout, open_embeddings
    from changescope.embed.pipeline import EncoderSpec, SeriesSource, build_encoder
    from changescope.encoders import get_meta
    from changescope.encoders.bands import band_indices, normalize
    from changescope.grid import PatchGrid
    from changescope.series import band_infos

    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    ds = changescope.open(series)
    infos = band_infos(ds)
    registered = get_meta(encoder_name)
    kwargs = (("bands", infos),) if not registered.bands or registered.adaptive_bands else ()
    spec = EncoderSpec(encoder_name, weights_for(encoder_name), kwargs, "changescope.encoders", device)
    encoder = build_encoder(spec)
    meta = encoder.meta
    source = SeriesSource(ds, band_indices(infos, meta))
    rng = np.random.default_rng(args.seed)
    total_s, total_tiles, timed_tiles = 0.0, 0, 0
    for store in (run_dir / "embeddings.zarr", run_dir / "subpatches.zarr"):
        if not store.exists():
            continue
        emb = open_embeddings(store)
        attrs = emb.attrs
        vf = np.asarray(emb["valid_fraction"].values)
        keep = (vf >= float(attrs["min_valid"])) & (vf > 0)
        grid = PatchGrid.for_series(ds, int(attrs["patch_size"]), int(attrs["stride"]))
        layout = BlockLayout.plan(grid, meta.patch_size, meta.input_size, int(attrs["block"]))
        fed = fed_tiles(layout, keep)
        if not fed:
            continue
        tiles = sample_tiles(source, layout, fed, args.bare_sample, rng)
        batches = [
            normalize(
                torch.from_numpy(np.stack(tiles[i : i + args.batch_size])),
                meta.normalization,
                keep_nan=meta.accepts_nan,
            ).to(device)
            for i in range(0, len(tiles), args.batch_size)
        ]
        del tiles
        count, done, spent = sum(len(v) for v in fed.values()), 0, 0.0
        with torch.inference_mode():
            encoder.feature_map(batches[0])  # warm-up
            while done < count and (spent < args.bare_budget or done == 0):
                for x in batches:
                    if done >= count:
                        break
                    start = time.perf_counter()
                    encoder.feature_map(x[: count - done])
                    if x.is_cuda:
                        torch.cuda.synchronize()
                    spent += time.perf_counter() - start
                    done += min(len(x), count - done)
        total_s += spent / done * count
        total_tiles += count
        timed_tiles += done
        del batches
    return total_s, total_tiles, timed_tiles


def compare_runs(a: Path, b: Path) -> tuple[bool, list[str]]:
    """Whether two run folders hold the same scores, changes and embedding values; what differs."""
    import pandas as pd
    import xarray as xr

    notes = []
    for name in ("patch_scores.parquet", "changes.parquet"):
        fa, fb = pd.read_parquet(a / name), pd.read_parquet(b / name)
        if not fa.equals(fb):
            detail = f"{len(fa)} vs {len(fb)} rows"
            if fa.shape == fb.shape and list(fa.columns) == list(fb.columns):
                numeric = fa.select_dtypes("number").columns
                diff = np.nanmax(np.abs(fa[numeric].to_numpy(float) - fb[numeric].to_numpy(float)), initial=0.0)
                detail += f", largest numeric difference {diff:.3g}"
            notes.append(f"{name} differs ({detail})")
    for name in ("embeddings.zarr", "subpatches.zarr"):
        if not (a / name).exists() and not (b / name).exists():
            continue
        za, zb = xr.open_zarr(a / name), xr.open_zarr(b / name)
        for var in sorted(set(za.data_vars) | set(zb.data_vars)):
            if var not in za or var not in zb:
                notes.append(f"{name}/{var} only in one run")
                continue
            va, vb = za[var].values, zb[var].values
            same = va.shape == vb.shape and (
                np.array_equal(va, vb, equal_nan=True) if va.dtype.kind == "f" else np.array_equal(va, vb)
            )
            if not same:
                diff = np.nanmax(np.abs(va.astype(float) - vb.astype(float))) if va.shape == vb.shape else math.nan
                notes.append(f"{name}/{var} differs (largest difference {diff:.3g})")
    return not notes, notes


def fit_exponent(x: list[float], y: list[float]) -> float:
    """Slope of log y against log x (nan with fewer than two distinct x)."""
    if len(set(x)) < 2:
        return math.nan
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def fit_linear(x: list[float], y: list[float]) -> tuple[float, float]:
    """Intercept and slope of y = a + b x (nan with fewer than two distinct x)."""
    if len(set(x)) < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'side':>6} {'dates':>5} {'encoder':<9} {'mode':<8} {'Mpx*d':>7} {'wall s':>8} {'RSS GiB':>7} "
        + " ".join(f"{s + ' s':>10}" for s in STAGES)
        + f" {'bare s':>8} {'run/bare':>8} {'emb/bare':>8} {'s/Mpx*d':>7} {'load':>5}"
    )
    print(head)
    for r in rows:
        stages = " ".join(f"{r.stages.get(s, math.nan):>10.1f}" for s in STAGES)
        bare = f"{r.bare_s:>8.1f}" if r.bare_tiles else f"{'-':>8}"
        ratio = f"{r.ratio:>8.2f}" if r.bare_tiles else f"{'-':>8}"
        embed_ratio = f"{r.embed_ratio:>8.2f}" if r.bare_tiles else f"{'-':>8}"
        failed = "" if r.rc == 0 else f"  FAILED (exit {r.rc})"
        print(
            f"{r.side:>6} {r.dates:>5} {r.encoder:<9} {r.mode:<8} {r.mpx_dates:>7.1f} {r.wall_s:>8.1f} "
            f"{r.peak_rss_gib:>7.2f} {stages} {bare} {ratio} {embed_ratio} {r.per_mpx_date:>7.2f} {r.load1:>5.1f}"
            f"{failed}"
        )


def summarise(rows: list[Row]) -> None:
    """Linearity per encoder, the issue's goals and the whole-tile extrapolation."""
    whole = WHOLE_SIDE**2 * WHOLE_DATES / 1e6
    print("\nlinearity (linear scaling = a constant time per megapixel-date):")
    for enc in sorted({r.encoder for r in rows}):
        mine = sorted(
            (r for r in rows if r.encoder == enc and r.mode == "single" and r.rc == 0), key=lambda r: r.mpx_dates
        )
        if not mine:
            continue
        per = ", ".join(f"{r.side}x{r.dates}: {r.per_mpx_date:.2f}" for r in mine)
        print(f"  {enc}: s per Mpx*date {per}")
        x = [r.mpx_dates for r in mine]
        for label, y in (
            ("wall", [r.wall_s for r in mine]),
            ("embed", [r.stages.get("embed", math.nan) for r in mine]),
            ("score+events", [r.stages.get("score", 0) + r.stages.get("events", 0) for r in mine]),
            ("peak RSS", [r.peak_rss_gib for r in mine]),
        ):
            a, b = fit_linear(x, y)
            unit = "GiB" if label == "peak RSS" else "s"
            print(
                f"    {label:<12} ~ (Mpx*dates)^{fit_exponent(x, y):.2f}; linear fit {a:.2f} {unit} + "
                f"{b:.4f} {unit} per Mpx*date"
            )
        for fixed, vary, name in (
            (lambda r: r.dates, lambda r: r.side, "side"),
            (lambda r: r.side, lambda r: r.dates, "dates"),
        ):
            groups: dict[int, list[Row]] = {}
            for r in mine:
                groups.setdefault(fixed(r), []).append(r)
            for key, group in sorted(groups.items()):
                if len({vary(r) for r in group}) > 1:
                    b = fit_exponent([r.mpx_dates for r in group], [r.wall_s for r in group])
                    other = "dates" if name == "side" else "side"
                    print(f"    wall against {name} at {other} {key}: ~ (Mpx*dates)^{b:.2f}")

    print(
        f"\ngoals (issue 15) beside the measurements; whole tile = {WHOLE_SIDE}^2 px x {WHOLE_DATES} dates "
        f"({whole:.0f} Mpx*dates):"
    )
    spectral = sorted(
        (r for r in rows if r.encoder == "spectral" and r.mode == "single" and r.rc == 0), key=lambda r: r.mpx_dates
    )
    exact = [r for r in spectral if r.side == WHOLE_SIDE and r.dates == WHOLE_DATES]
    if exact:
        r = exact[0]
        ok = r.wall_s <= GOAL_SPECTRAL_S and r.peak_rss_gib <= GOAL_SPECTRAL_RSS_GIB
        verdict = "met" if ok else "NOT met"
        print(
            f"  spectral whole tile: measured {r.wall_s / 60:.1f} min, {r.peak_rss_gib:.2f} GiB "
            f"(goal <= 10 min, <= 2 GiB: {verdict})"
        )
    elif spectral:
        big = spectral[-1]
        x = [r.mpx_dates for r in spectral]
        fixed, slope = fit_linear(x, [r.wall_s for r in spectral])
        rss0, rss1 = fit_linear(x, [r.peak_rss_gib for r in spectral])
        rss_whole = max(big.peak_rss_gib, rss0 + rss1 * whole)  # never below the largest measured
        print(
            f"  spectral whole tile: NOT measured; at the {big.side}x{big.dates} rate ({big.per_mpx_date:.2f} s per "
            f"Mpx*date) {big.per_mpx_date * whole / 60:.0f} min; on the fit wall = {fixed:.1f} s + {slope:.2f} s x "
            f"Mpx*dates {(fixed + slope * whole) / 60:.0f} min; peak RSS on the fit {rss0:.2f} GiB + "
            f"{rss1 * 1024:.2f} MiB x Mpx*dates: {rss_whole:.2f} GiB (goal <= 10 min, <= 2 GiB)"
        )
    for r in rows:
        if r.encoder == "resnet18" and r.mode == "single" and r.rc == 0 and r.bare_tiles:
            verdict = "met" if r.ratio <= GOAL_RESNET_RATIO else "NOT met"
            print(
                f"  resnet18 {r.side}x{r.dates}: run / bare forward {r.ratio:.2f} "
                f"(embed stage / bare {r.embed_ratio:.2f}; goal <= {GOAL_RESNET_RATIO}: {verdict})"
            )


def merged(rows: list[Row], earlier: list[Row]) -> list[Row]:
    """``earlier`` rows not measured again, with ``rows``, in grid order."""
    new = {(r.side, r.dates, r.encoder, r.mode) for r in rows}
    kept = [r for r in earlier if (r.side, r.dates, r.encoder, r.mode) not in new]
    return sorted(kept + rows, key=lambda r: (r.side, r.dates, r.encoder, r.mode != "single"))


def write_csv(rows: list[Row], results: Path) -> None:
    """Write ``scale.csv`` (after every run, so that an interrupted grid keeps what it measured)."""
    results.mkdir(parents=True, exist_ok=True)
    records = [r.csv_record() for r in rows]
    tmp = results / "scale.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    tmp.replace(results / "scale.csv")


def write_plot(rows: list[Row], results: Path) -> None:
    """Write ``scale.png``: log-log wall time (and bare forward) and peak RSS against Mpx x dates."""
    results.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for enc in sorted({r.encoder for r in rows}):
        mine = sorted(
            (r for r in rows if r.encoder == enc and r.mode == "single" and r.rc == 0), key=lambda r: r.mpx_dates
        )
        if not mine:
            continue
        x = [r.mpx_dates for r in mine]
        (line,) = ax_t.plot(x, [r.wall_s for r in mine], "o-", label=f"{enc} run")
        bare = [(r.mpx_dates, r.bare_s) for r in mine if r.bare_tiles]
        if bare:
            ax_t.plot(*zip(*bare, strict=True), "x--", color=line.get_color(), label=f"{enc} bare forward")
        ax_m.plot(x, [r.peak_rss_gib for r in mine], "o-", color=line.get_color(), label=enc)
    for ax, label in ((ax_t, "wall time (s)"), (ax_m, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("megapixels x dates")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("changescope run on synthetic S2 tiles (benchmarks/scale.py)")
    fig.tight_layout()
    fig.savefig(results / "scale.png", dpi=110)
    plt.close(fig)
    print(f"\nwrote {results / 'scale.csv'} and {results / 'scale.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[1026, 2052], help="10 m grid sides, multiples of 6")
    parser.add_argument("--dates", type=int, nargs="+", default=[6, 12])
    parser.add_argument("--encoders", nargs="+", default=["spectral", "resnet18"])
    parser.add_argument("--cluster", action="store_true", help="also the smallest case on a 2-worker local cluster")
    parser.add_argument("--workers", type=int, default=2, help="workers of the --cluster run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP/torch threads of every run")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=16, help="tiles per bare forward pass (the run's default)")
    parser.add_argument("--bare-budget", type=float, default=30.0, help="seconds of bare forward timed per store")
    parser.add_argument("--bare-sample", type=int, default=64, help="tiles sampled per store for the bare forward")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="write into DIR and keep it")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument(
        "--summary",
        action="store_true",
        help="measure nothing: print the table and summary of scale.csv, redraw the plot",
    )
    parser.add_argument(
        "--append", action="store_true", help="merge into the rows of an existing scale.csv (same case: replaced)"
    )
    args = parser.parse_args()
    bad = [s for s in args.sides if s % 6]
    if bad:
        parser.error(f"--sides {bad} are not multiples of 6 (the S2 tile's 60 m grid); try 1026 2052 4104 10980")

    if args.summary:
        rows = read_rows(args.results / "scale.csv")
        print_table(rows)
        summarise(rows)
        write_plot(rows, args.results)
        return
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
        + f"; runs with {args.threads} threads, device {args.device}"
    )
    root = args.keep or Path(tempfile.mkdtemp(prefix="changescope_scale_"))
    root.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    earlier = read_rows(args.results / "scale.csv") if args.append else []
    try:
        for side in sorted(args.sides):
            months = max(args.dates)
            tile = root / f"tile_{side}"
            write_tile(tile, side, months, args.seed)
            for dates in sorted(args.dates):
                series = date_subset(tile, dates, root / f"series_{side}_{dates}")
                for enc in args.encoders:
                    out = root / f"run_{side}_{dates}_{enc}"
                    if out.exists():
                        shutil.rmtree(out)
                    print(f"run {side} px x {dates} dates, {enc} ...", flush=True)
                    row = run_one(series, out, side, dates, enc, args, None)
                    if row.rc == 0:
                        row.bare_s, row.bare_tiles, row.bare_timed_tiles = bare_forward(series, out, enc, args)
                        sampled = "" if row.bare_timed_tiles >= row.bare_tiles else f" ({row.bare_timed_tiles} timed)"
                        print(
                            f"  wall {row.wall_s:.1f} s, peak RSS {row.peak_rss_gib:.2f} GiB, stages {row.stages}; "
                            f"bare forward {row.bare_s:.1f} s for {row.bare_tiles} tiles{sampled}",
                            flush=True,
                        )
                    rows.append(row)
                    write_csv(merged(rows, earlier), args.results)
                    if args.cluster and side == min(args.sides) and dates == min(args.dates) and row.rc == 0:
                        cout = root / f"run_{side}_{dates}_{enc}_cluster"
                        if cout.exists():
                            shutil.rmtree(cout)
                        print(f"run {side} px x {dates} dates, {enc}, --workers {args.workers} ...", flush=True)
                        crow = run_one(series, cout, side, dates, enc, args, args.workers)
                        crow.bare_s, crow.bare_tiles, crow.bare_timed_tiles = (
                            row.bare_s,
                            row.bare_tiles,
                            row.bare_timed_tiles,
                        )
                        if crow.rc == 0:
                            same, notes = compare_runs(out, cout)
                            crow.identical = "yes" if same else "no"
                            print(f"  cluster outputs identical to the single-process run: {crow.identical}")
                            for note in notes:
                                print(f"    {note}")
                        rows.append(crow)
                        write_csv(merged(rows, earlier), args.results)
        if args.append:
            measured = len(rows)
            rows = merged(rows, earlier)
            print(f"\n--append: {len(rows) - measured} earlier rows from {args.results / 'scale.csv'} kept")
        print()
        print_table(rows)
        summarise(rows)
        for r in rows:
            if r.mode != "single" and r.identical:
                print(f"  --cluster ({r.mode}) {r.side}x{r.dates} {r.encoder}: outputs identical {r.identical}")
        print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        if rows:
            write_csv(rows, args.results)
            write_plot(rows, args.results)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept in {root}")


if __name__ == "__main__":
    main()
