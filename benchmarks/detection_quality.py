"""Detection quality of `changescope run` on synthetic AOIs whose events are known (seeds not used in tests).

For each seed and each method it prints:
- patch-level ROC AUC: a patch's score is its highest normalised score over the dates; it is positive when its
  labels changed (the truth rules of changescope.truth: >= 5 % of its pixels), negative when no pixel changed
  (patches with a little change below 5 % are left out); overall and per change type (the event type covering
  most of the patch);
- precision of the top 20 ranked events (an event is right when its patch holds a true change) and what the wrong
  ones sit on (crop rotation on farmland, a gap-filled block, a cloud/haze date...);
- cluster purity of the change types against the event types;
- query-by-example: precision@10 of `search --like` from each deforestation event (same type = right, results
  on the query's own patch excluded), within its AOI and in the catalog of all the seeds' AOIs merged ("find
  changes like this one in other areas"), each beside its ceiling: the mean of min(10, deforestation events on
  other patches) / 10, the best any search could do with the events the run found (one AOI holds only about five
  clearings, so its own ceiling is often below 0.8).

Event types come from the patch: the event type covering most of the patch (see `patch_types`), so an event is a
"deforestation" event when it sits on a cleared patch, whatever its date.

Usage: python benchmarks/detection_quality.py [--seeds 105 106 107] [--size 1024] [--months 24] [--from-weight 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

import changescope
from changescope.discover import Catalog, ChangeIndex
from changescope.grid import PatchGrid
from changescope.run import RunConfig, run_pipeline
from changescope.synthetic import make_aoi
from changescope.truth import series_truth


def patch_types(events: gpd.GeoDataFrame, grid: PatchGrid) -> np.ndarray:
    """The event type covering most of each patch ('' where none)."""
    rows, cols = np.meshgrid(np.arange(grid.n_rows), np.arange(grid.n_cols), indexing="ij")
    polys = gpd.GeoSeries(grid.polygons(rows.ravel(), cols.ravel()), crs=events.crs)
    best = np.full(polys.size, "", dtype=object)
    best_area = np.zeros(polys.size)
    for _, ev in events.iterrows():
        area = polys.intersection(ev.geometry).area.to_numpy()
        better = area > best_area
        best[better] = ev["type"]
        best_area[better] = area[better]
    return best.reshape(grid.shape)


def query_precision(cat: Catalog, types: dict[str, np.ndarray], kind: str = "deforestation") -> tuple[float, float]:
    """Mean precision@10 of `search --like` from every ``kind`` event of a catalog, and its ceiling."""
    ev_types = np.array(
        [types[a][r, c] for a, r, c in zip(cat.frame["aoi"], cat.frame["row"], cat.frame["col"], strict=True)]
    )
    index = ChangeIndex.build(cat)
    keys = cat.patch_keys
    precisions, ceilings = [], []
    for i in np.nonzero(ev_types == kind)[0]:
        found = index.query(str(cat.frame["event_id"].iloc[i]), k=10, exclude_same_patch=True)
        got = [types[a][r, c] for a, r, c in zip(found["aoi"], found["row"], found["col"], strict=True)]
        precisions.append(np.mean([g == kind for g in got]) if got else 0.0)
        ceilings.append(min(10, int(((ev_types == kind) & (keys != keys[i])).sum())) / 10)
    if not precisions:
        return float("nan"), float("nan")
    return float(np.mean(precisions)), float(np.mean(ceilings))


def evaluate(root: Path, out: Path, config: RunConfig, aoi: str) -> tuple[dict[str, object], np.ndarray]:
    ds = changescope.open(root)
    run_pipeline(ds, out, config, progress=False)
    grid = PatchGrid.for_series(ds, config.patch_size, config.stride)
    truth = series_truth(ds.load(), grid, reference="previous")
    frac = np.nanmax(truth.fraction.values, axis=0)
    pos, neg = frac >= 0.05, frac == 0
    scores = pd.read_parquet(out / "patch_scores.parquet")
    smax = (
        scores.groupby(["row", "col"])["score"]
        .max()
        .unstack()
        .reindex(index=range(grid.n_rows), columns=range(grid.n_cols))
    )
    s = np.nan_to_num(smax.to_numpy(dtype=float), nan=-1e9)
    keep = pos | neg
    res: dict[str, object] = {"auc": roc_auc_score(pos[keep], s[keep]), "n_pos": int(pos.sum())}
    events = gpd.read_parquet(root / "events" / f"{aoi}.parquet")
    types = patch_types(events, grid)
    per_type = {}
    for kind in sorted(set(events["type"])):
        sel = (pos & (types == kind)) | neg
        if (pos & (types == kind)).sum():
            per_type[kind] = round(roc_auc_score(pos[sel], s[sel]), 3)
    res["auc_by_type"] = per_type
    changes = gpd.read_parquet(out / "changes.parquet")
    top = changes.sort_values("rank").head(20)
    hits = [bool(pos[r, c]) for r, c in zip(top["row"], top["col"], strict=True)]
    res["precision@20"] = float(np.mean(hits)) if hits else float("nan")
    labels0 = ds["labels"].isel(time=0).values
    farm = grid.aggregate(labels0 == 1, "fraction") > 0.5
    res["top20_false_on_farmland"] = int(
        sum(1 for h, r, c in zip(hits, top["row"], top["col"], strict=True) if not h and farm[r, c])
    )
    # cluster purity against the event types of true-change events
    ev_types = np.array([types[r, c] for r, c in zip(changes["row"], changes["col"], strict=True)])
    real = (ev_types != "") & (changes["cluster"].to_numpy() >= 0)
    purity = []
    for cl in np.unique(changes["cluster"].to_numpy()[real]):
        members = ev_types[real & (changes["cluster"].to_numpy() == cl)]
        purity.append(pd.Series(members).value_counts().iloc[0])
    res["cluster_purity"] = float(np.sum(purity) / max(1, real.sum())) if purity else float("nan")
    # query by example from deforestation events, within this AOI
    name = str(changes["aoi"].iloc[0]) if len(changes) else aoi
    res["deforestation_p@10"], res["deforestation_p@10_ceiling"] = query_precision(Catalog.open(out), {name: types})
    return res, types


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[105, 106, 107])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--methods", nargs="+", default=["distance", "lof"])
    ap.add_argument("--context", default="peers")
    ap.add_argument("--from-weight", type=float, default=RunConfig.from_weight)
    ap.add_argument("--rebase", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, list[Path]] = {m: [] for m in args.methods}
        types: dict[str, np.ndarray] = {}
        for seed in args.seeds:
            root = Path(tmp) / f"aoi_{seed}"
            aoi = f"aoi_{seed}"
            make_aoi(root, seed=seed, size=args.size, months=args.months, aoi=aoi)
            for method in args.methods:
                cfg = RunConfig(
                    method=method,  # type: ignore[arg-type]
                    context=args.context,
                    from_weight=args.from_weight,
                    rebase=args.rebase,
                )
                out = Path(tmp) / f"run_{seed}_{method}"
                res, types[aoi] = evaluate(root, out, cfg, aoi)
                runs[method].append(out)
                settings = {"context": args.context, "from_weight": args.from_weight, "rebase": args.rebase}
                print(json.dumps({"seed": seed, "method": method, **settings, **res}, default=float), flush=True)
        if len(args.seeds) > 1:  # search in other areas: all the seeds' catalogs merged
            for method, outs in runs.items():
                merged = Catalog.merge([Catalog.open(o) for o in outs])
                p10, ceiling = query_precision(merged, types)
                print(
                    json.dumps(
                        {
                            "seeds": args.seeds,
                            "method": method,
                            "merged_catalog_events": len(merged),
                            "deforestation_p@10_merged": round(p10, 3),
                            "ceiling": round(ceiling, 3),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
