"""Detection quality on semi-real series built from real Sentinel-2 pairs, with and without change.

For each OSCD city in ``../shared/data/oscd`` (each with its own seed), `changescope.synthetic.series_from_pair`
builds a 12-date monthly series from the city's real before and after images: the change appears at one known
date (index 6), and every date gets its own gain/offset, smooth haze, sub-pixel shift, noise, a seasonal vegetation
cycle and masked clouds (never on the change date). The same series *without* the change (every date from the
before image, the same nuisances) measures false alarms: there, every event is false. The default `run` is used
(spectral encoder, `--patch-size 16`, everything else default), and beside it CVA and IR-MAD on the same series.

Printed per city:
- patch ROC AUC of the score (a patch's highest score over the dates): changed = at least 5 % of its pixels in the
  OSCD mask, unchanged = none (patches in between left out), for changescope, CVA and IR-MAD;
- event recall (changed patches with a confirmed event) and false-positive rate (unchanged patches with one);
- date accuracy: detected changed patches whose earliest confirmed event is on the change date;
- confirmed and pending events per 1000 patches on the no-change series;
- patch AUC on the real two-date pair itself (no added nuisances), for changescope, CVA and IR-MAD;
- the share of unchanged patches with a confirmed event on the change series and on the no-change series (the same
  patches and nuisances), and how many of the former are dated at the change date: where the first is far above the
  second and the events fall on the change date, the two real images differ there (changes OSCD does not label).

Then the same code on synthetic AOIs (`changescope synth`, seeds given by `--synthetic-seeds`): patch AUC, events
per 1000 patches, recall, false-positive rate.

Mind the labels: OSCD marks urban change only, so fields and water that really changed between its two dates count
as unchanged; on the change series some "false positives" are real changes of another kind. The no-change series
has none.

Usage: python benchmarks/detection_real.py [--cities bercy paris] [--seed 0] [--synthetic-seeds 105 106]
    [--synthetic-size 1024] [--synthetic-patch-size 32] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from sklearn.metrics import roc_auc_score

import changescope
from changescope.evaluate.baselines import baseline_patch_scores
from changescope.grid import PatchGrid
from changescope.run import RunConfig, run_pipeline
from changescope.synthetic import make_aoi, series_from_pair
from changescope.truth import series_truth

CITIES = ("aguasclaras", "bercy", "bordeaux", "nantes", "paris", "rennes")
DATES, CHANGE_AT = 12, 6


def _auc(truth: np.ndarray, score: np.ndarray) -> float:
    pos, neg = truth >= 0.05, truth == 0
    keep = (pos | neg) & np.isfinite(truth)
    s = np.where(np.isfinite(score), score, np.nanmin(score) - 1.0)
    return float(roc_auc_score(pos[keep], s[keep])) if pos[keep].any() and neg[keep].any() else float("nan")


def _scores_cube(run: Path, shape: tuple[int, int, int]) -> np.ndarray:
    df = pd.read_parquet(run / "patch_scores.parquet", columns=["row", "col", "time", "score"])
    times = pd.DatetimeIndex(sorted(df["time"].unique()))
    cube = np.full(shape, np.nan)
    cube[times.get_indexer(df["time"]), df["row"].to_numpy(), df["col"].to_numpy()] = df["score"].to_numpy()
    return cube


def _changes(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "changes.parquet", columns=["row", "col", "time", "status"])


def _fraction(mask: np.ndarray, grid: PatchGrid) -> np.ndarray:
    """Changed share of each patch's pixels (NaN where any is unknown)."""
    m = np.where(mask < 0, np.nan, (mask > 0).astype(np.float64))
    return np.asarray(grid.aggregate(m, "mean"), dtype=np.float64)


def _baseline_auc(ds: xr.Dataset, grid: PatchGrid, frac: np.ndarray, name: str) -> float:
    cube = baseline_patch_scores(ds, grid, name)
    return _auc(frac.ravel(), np.nanmax(np.where(np.isfinite(cube), cube, -np.inf), axis=0).ravel())


def _run(ds: xr.Dataset, out: Path, config: RunConfig) -> Path:
    run_pipeline(ds, out, config, progress=False)
    return out


def city_row(city: str, root: Path, seed: int, work: Path, config: RunConfig) -> dict[str, Any]:
    """Every number of one city (module docstring)."""
    pair = changescope.open(root / "images" / city)
    mask = np.asarray(pair["change"].values)
    grid = PatchGrid.for_series(pair, config.patch_size)
    frac = _fraction(mask, grid)
    row: dict[str, Any] = {"city": city, "seed": seed, "patches": grid.n_rows * grid.n_cols}
    changed, unchanged = frac.ravel() >= 0.05, frac.ravel() == 0
    row["changed"] = int(changed.sum())
    series = series_from_pair(pair, dates=DATES, change_month=CHANGE_AT, seed=seed)
    out = _run(series, work / f"{city}_change", config)
    cube = _scores_cube(out, (DATES, grid.n_rows, grid.n_cols))
    row["auc"] = _auc(frac.ravel(), np.nanmax(np.where(np.isfinite(cube), cube, -np.inf), axis=0).ravel())
    row["cva"] = _baseline_auc(series, grid, frac, "cva")
    row["irmad"] = _baseline_auc(series, grid, frac, "irmad")
    ev = _changes(out)
    done = ev[ev["status"] == "confirmed"]
    flat = done["row"].to_numpy() * grid.n_cols + done["col"].to_numpy()
    hit = np.zeros(frac.size, dtype=bool)
    hit[flat] = True
    row["recall"] = float(hit[changed].mean()) if changed.any() else float("nan")
    row["fpr"] = float(hit[unchanged].mean())
    first = done.assign(patch=flat).groupby("patch")["time"].min()
    when = pd.Timestamp(series["time"].values[CHANGE_AT])
    detected = [p for p in np.nonzero(changed)[0] if p in first.index]
    row["date_acc"] = float(np.mean([first[p] == when for p in detected])) if detected else float("nan")
    quiet = series_from_pair(pair, dates=DATES, change_month=CHANGE_AT, seed=seed, change=False)
    out0 = _run(quiet, work / f"{city}_nochange", config)
    ev0 = _changes(out0)
    row["fa_per_1000"] = 1000.0 * float((ev0["status"] == "confirmed").sum()) / row["patches"]
    done0 = ev0[ev0["status"] == "confirmed"]
    hit0 = np.zeros(frac.size, dtype=bool)
    hit0[done0["row"].to_numpy() * grid.n_cols + done0["col"].to_numpy()] = True
    row["fpr_nochange"] = float(hit0[unchanged].mean())  # the same patches, the same nuisances, no change
    false_hits = done[unchanged[flat]]
    row["fp_at_change"] = float((false_hits["time"] == when).mean()) if len(false_hits) else float("nan")
    row["pending_per_1000"] = 1000.0 * float((ev0["status"] == "pending").sum()) / row["patches"]
    outp = _run(pair, work / f"{city}_pair", config)
    cp = _scores_cube(outp, (2, grid.n_rows, grid.n_cols))
    row["pair_auc"] = _auc(frac.ravel(), np.nanmax(np.where(np.isfinite(cp), cp, -np.inf), axis=0).ravel())
    row["pair_cva"] = _baseline_auc(pair, grid, frac, "cva")
    row["pair_irmad"] = _baseline_auc(pair, grid, frac, "irmad")
    return row


def synthetic_row(seed: int, size: int, months: int, work: Path, config: RunConfig) -> dict[str, Any]:
    """Patch AUC, events per 1000 patches, recall and false-positive rate on one synthetic AOI."""
    info = make_aoi(work / f"synth_{seed}", seed, size, months, aoi=f"aoi_{seed:04d}", overwrite=True)
    ds = changescope.open(work / f"synth_{seed}", aoi=info.aoi)
    out = _run(ds, work / f"synth_{seed}_run", replace(config, aoi=info.aoi))
    grid = PatchGrid.for_series(ds, config.patch_size)
    truth = series_truth(ds, grid)
    frac = np.nanmax(np.asarray(truth["fraction"].values, dtype=np.float64), axis=0).ravel()
    cube = _scores_cube(out, (ds.sizes["time"], grid.n_rows, grid.n_cols))
    ev = _changes(out)
    done = ev[ev["status"] == "confirmed"]
    hit = np.zeros(frac.size, dtype=bool)
    hit[done["row"].to_numpy() * grid.n_cols + done["col"].to_numpy()] = True
    changed, unchanged = frac >= 0.05, frac == 0
    return {
        "seed": seed,
        "auc": _auc(frac, np.nanmax(np.where(np.isfinite(cube), cube, -np.inf), axis=0).ravel()),
        "events_per_1000": 1000.0 * len(done) / frac.size,
        "recall": float(hit[changed].mean()),
        "fpr": float(hit[unchanged].mean()),
    }


def _print(rows: list[dict[str, Any]], columns: list[str]) -> None:
    print(" | ".join(f"{c:>11}" for c in columns))
    for r in rows:
        print(" | ".join(f"{r[c]:>11.3f}" if isinstance(r[c], float) else f"{r[c]!s:>11}" for c in columns))
    if rows:
        means = [np.nanmean([r[c] for r in rows]) if isinstance(rows[0][c], float) else "mean" for c in columns]
        print(" | ".join(f"{m:>11.3f}" if isinstance(m, float) else f"{m!s:>11}" for m in means[: len(columns)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities", nargs="*", default=list(CITIES))
    parser.add_argument("--seed", type=int, default=0, help="city i uses seed + i")
    parser.add_argument(
        "--oscd", type=Path, default=Path(os.environ.get("CHANGESCOPE_SHARED_DATA", "../shared/data")) / "oscd"
    )
    parser.add_argument("--synthetic-seeds", nargs="*", type=int, default=[105, 106])
    parser.add_argument("--synthetic-size", type=int, default=1024)
    parser.add_argument("--synthetic-months", type=int, default=24)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--synthetic-patch-size", type=int, default=32, help="the run default, as detection_quality")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    config = RunConfig(patch_size=args.patch_size)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        began = time.perf_counter()
        rows = [
            city_row(city, args.oscd, args.seed + CITIES.index(city), work, config)
            for city in args.cities
            if (args.oscd / "images" / city).is_dir()
        ]
        print(f"semi-real series ({DATES} dates, change at date {CHANGE_AT}); patch {args.patch_size} px")
        _print(rows, ["city", "seed", "patches", "changed", "auc", "cva", "irmad", "recall", "fpr", "date_acc"])
        print("\nno-change series (every event false) and the real two-date pairs")
        _print(rows, ["city", "fa_per_1000", "pending_per_1000", "pair_auc", "pair_cva", "pair_irmad"])
        print(
            "\nunchanged patches (no OSCD change pixel) with a confirmed change: on the change series (fpr), on the"
            "\nno-change series (fpr_nochange: same patches, same nuisances), and the share of the change series' ones"
            "\ndated at the change date (fp_at_change: the two real images differ there, e.g. fields OSCD leaves out)"
        )
        _print(rows, ["city", "fpr", "fpr_nochange", "fp_at_change"])
        synth = [
            synthetic_row(
                s,
                args.synthetic_size,
                args.synthetic_months,
                work,
                replace(config, patch_size=args.synthetic_patch_size),
            )
            for s in args.synthetic_seeds
        ]
        print(
            f"\nsynthetic AOIs ({args.synthetic_size} px, {args.synthetic_months} months, "
            f"patch {args.synthetic_patch_size} px)"
        )
        _print(synth, ["seed", "auc", "events_per_1000", "recall", "fpr"])
        print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
