"""Does the analyst's feedback improve "find changes like this one"? Precision@10 per change type.

On seeded synthetic AOIs (`changescope synth`, known event types), each run's changes get a true type: the
synthetic event whose footprint covers most of the change's patch (changes on no event are "none", false alarms).
Then, for every change of a real type used as a query:

1. **Unlabelled:** the 10 most similar changes over every served run (the web app's search, no labels).
2. **One relevant and one irrelevant label**, as an analyst would give them from that first page: the best
   result of the query's type is marked relevant, the best result of another type irrelevant. The search is
   rerun with the labels (query ``2 * mean(positives) - mean(negatives)``, irrelevant changes dropped).

Precision@10 is the share of the top 10 with the query's type. The two labelled changes are left out of *both*
result lists before the top 10 are taken, so marking cannot win by merely dropping the one it dismissed or by
keeping the one it confirmed. Queries without a same-type and an other-type result in the first page are
skipped (there is nothing to mark). Labels are cleared between queries.

Printed: per type, the number of queries and the mean precision@10 unlabelled and with feedback, and the share of
queries where feedback did at least as well.

Usage: python benchmarks/feedback_search.py [--seeds 0 1 2 3] [--size 512] [--months 24] [--patch-size 16]
    [--work DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

import changescope
from changescope.run import RunConfig, run_pipeline
from changescope.serve.workbench import Workbench
from changescope.synthetic import make_aoi

K = 10


def true_types(run_dir: Path, events: gpd.GeoDataFrame) -> dict[str, str]:
    """``{event_id: type}``: the synthetic event covering most of each change's patch ("none" if none)."""
    changes = gpd.read_parquet(run_dir / "changes.parquet", columns=["event_id", "geometry"])
    events = events.to_crs(changes.crs)
    out = {}
    for eid, geom in zip(changes["event_id"], changes.geometry, strict=True):
        areas = events.geometry.intersection(geom).area.to_numpy()
        out[str(eid)] = str(events["type"].iloc[int(np.argmax(areas))]) if areas.size and areas.max() > 0 else "none"
    return out


def build(seeds: list[int], size: int, months: int, patch_size: int, work: Path) -> tuple[list[Path], dict]:
    """Synthesise and run one AOI per seed under ``work``; ``(run folders, {run: {event_id: true type}})``."""
    runs, truth = [], {}
    for seed in seeds:
        t0 = time.perf_counter()
        root = work / f"aoi_{seed}"
        info = make_aoi(root, seed, size, months, aoi=f"aoi_{seed:04d}", overwrite=True)
        out = work / f"run_{seed}"
        ds = changescope.open(root, aoi=info.aoi)
        run_pipeline(ds, out, RunConfig(seed=0, patch_size=patch_size), progress=False)
        (out / "feedback.sqlite").unlink(missing_ok=True)
        runs.append(out)
        truth[out.name] = true_types(out, info.events)
        print(f"seed {seed}: {len(truth[out.name])} changes, run in {time.perf_counter() - t0:.0f} s", flush=True)
    return runs, truth


def evaluate(runs: list[Path], truth: dict) -> pd.DataFrame:
    """One row per query: its type, precision@10 unlabelled and with one relevant + one irrelevant label."""
    bench = Workbench(runs)
    rows = []
    for rid, served in bench.runs.items():
        for eid in served.events["event_id"]:
            kind = truth[rid][eid]
            if kind == "none":
                continue
            plain = bench.similar(rid, eid, k=3 * K, use_feedback=False)["items"]
            types = [truth[it["run"]][it["event_id"]] for it in plain]
            same = next((it for it, t in zip(plain[:K], types[:K], strict=True) if t == kind), None)
            other = next((it for it, t in zip(plain[:K], types[:K], strict=True) if t != kind), None)
            if same is None or other is None:
                continue
            bench.set_label(same["run"], same["event_id"], None, "relevant")
            bench.set_label(other["run"], other["event_id"], None, "irrelevant")
            steered = bench.similar(rid, eid, k=3 * K, use_feedback=True)["items"]
            bench.set_label(same["run"], same["event_id"], None, "none")
            bench.set_label(other["run"], other["event_id"], None, "none")
            marked = {(same["run"], same["event_id"]), (other["run"], other["event_id"])}

            def precision(items: list[dict], kind: str = kind, marked: set = marked) -> float:
                kept = [it for it in items if (it["run"], it["event_id"]) not in marked][:K]
                return float(np.mean([truth[it["run"]][it["event_id"]] == kind for it in kept])) if kept else 0.0

            rows.append({"type": kind, "plain": precision(plain), "feedback": precision(steered)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cs_feedback_") as tmp:
        runs, truth = build(args.seeds, args.size, args.months, args.patch_size, args.work or Path(tmp))
        frame = evaluate(runs, truth)
        if frame.empty:
            print("no query had both a same-type and an other-type result to mark")
            return
        table = frame.groupby("type").agg(
            queries=("plain", "size"),
            p10_unlabelled=("plain", "mean"),
            p10_feedback=("feedback", "mean"),
        )
        table["feedback_at_least_as_good"] = (
            frame.assign(ok=frame["feedback"] >= frame["plain"]).groupby("type")["ok"].mean()
        )
        print(
            f"\nprecision@{K}, {len(args.seeds)} AOI(s) of {args.size} px, {args.months} dates, patch {args.patch_size}"
        )
        print(table.round(3).to_string())
        print(
            f"all: unlabelled {frame['plain'].mean():.3f}, with one relevant + one irrelevant label "
            f"{frame['feedback'].mean():.3f} ({len(frame)} queries)"
        )


if __name__ == "__main__":
    main()
