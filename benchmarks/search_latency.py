"""Benchmark: "find changes like this one" at catalog scale: index build time, query latency and recall@k.

Data: ``--n`` change vectors of dimension ``--dim``, a seeded mixture of ``--clusters`` Gaussian clusters (random
centres, Dirichlet cluster weights, per-cluster spread log-normal around ``--spread``), so the data has the
structure of real change types. The approximate index is built with the library defaults
(:class:`changescope.discover.IndexParams`, ``kind="ivf"`` unless ``--kind``), then ``--queries`` catalog events are
searched one at a time (k nearest, the query itself excluded) through

- the raw faiss index (``search_index``), and
- the full library path ``ChangeIndex.query(event_id, k)`` (event-id lookup, self exclusion, result DataFrame);

recall@k is measured against exact search (``IndexFlatIP``). ``--sweep`` also prints recall and latency for other
``nprobe`` (IVF) or ``efSearch`` (HNSW) values. Prints numbers and the targets (p50 <= 10 ms, recall@20 >= 0.95);
asserts nothing.

Usage: ``python benchmarks/search_latency.py [--n 1000000] [--dim 128] [--clusters 1000] [--queries 1000] [--k 20]
[--kind ivf|hnsw] [--nlist N] [--nprobe N] [--sweep] [--seed 0]``; ``--n 100000 --queries 200`` is a quick run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from changescope.discover import Catalog, ChangeIndex, IndexParams
from changescope.discover.index import build_index, load_faiss, normalize_rows, omp_threads, search_index

TARGET_P50_MS = 10.0
TARGET_RECALL = 0.95


def clustered_vectors(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Seeded mixture of Gaussian clusters, float32 ``(n, dim)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    weights = rng.dirichlet(np.full(clusters, 2.0))
    labels = rng.choice(clusters, size=n, p=weights)
    sigma = np.exp(rng.normal(np.log(spread), 0.4, size=clusters)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        lab = labels[start : start + 100_000]
        noise = rng.standard_normal((lab.size, dim), dtype=np.float32)
        out[start : start + lab.size] = centres[lab] + sigma[lab, None] * noise
    return out


def tiny_catalog(vectors: np.ndarray) -> Catalog:
    """A catalog frame around the vectors (ids, one AOI, a grid of 100 m patches over monthly dates)."""
    import geopandas as gpd
    import shapely

    n = len(vectors)
    cells = np.arange(n)
    t, rest = np.divmod(cells, 1024 * 1024)
    row, col = np.divmod(rest, 1024)
    times = pd.date_range("2018-01-01", periods=int(t.max()) + 1, freq="MS")[t]
    days = times.strftime("%Y-%m-%d")
    ids = [f"bench:{d}:r{r}c{c}" for d, r, c in zip(days, row, col, strict=True)]
    x0, y1 = 500_000.0 + col * 100.0, 5_000_000.0 - row * 100.0
    frame = gpd.GeoDataFrame(
        {"event_id": ids, "aoi": "bench", "row": row, "col": col, "time": times},
        geometry=shapely.box(x0, y1 - 100.0, x0 + 100.0, y1),
        crs="EPSG:32633",
    )
    return Catalog(frame=frame, vectors=vectors)


def measure(fn, queries: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-query wall times (s) and results of ``fn(i)`` for each query position ``i``."""
    times, results = [], []
    for i in queries:
        began = time.perf_counter()
        results.append(fn(int(i)))
        times.append(time.perf_counter() - began)
    return np.asarray(times), results


def recall(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    return float(
        np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0, help="typical cluster std relative to centre spread")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--kind", choices=["ivf", "hnsw"], default="ivf")
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--nprobe", type=int, default=None)
    parser.add_argument("--sweep", action="store_true", help="also try other nprobe / efSearch values")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    faiss = load_faiss()
    console = Console(highlight=False, width=120)
    console.print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"faiss {faiss.__version__}"
    )
    console.print(
        f"data: {args.n:,} vectors x {args.dim}, {args.clusters} clusters, spread {args.spread}, seed {args.seed}"
    )

    began = time.perf_counter()
    vectors = clustered_vectors(args.n, args.dim, args.clusters, args.spread, args.seed)
    unit = normalize_rows(vectors)
    console.print(f"generated in {time.perf_counter() - began:.1f} s")

    rng = np.random.default_rng(args.seed + 1)
    qpos = np.sort(rng.choice(args.n, args.queries, replace=False))
    k = args.k

    began = time.perf_counter()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(unit)
    with omp_threads(None):
        _, exact = flat.search(unit[qpos], k + 1)
    truth = np.stack([row[row != q][:k] for row, q in zip(exact, qpos, strict=True)])
    console.print(f"exact ground truth (IndexFlatIP, batched) in {time.perf_counter() - began:.1f} s")
    del flat

    params = IndexParams(kind=args.kind, nlist=args.nlist, nprobe=args.nprobe).resolve(args.n)
    began = time.perf_counter()
    index = build_index(unit, params)
    build_s = time.perf_counter() - began
    detail = (
        f"nlist {params.nlist}, nprobe {params.nprobe}"
        if params.kind == "ivf"
        else (f"M {params.hnsw_m}, efConstruction {params.ef_construction}, efSearch {params.ef_search}")
    )
    console.print(f"built {params.kind} index ({detail}) in {build_s:.1f} s")

    def raw(p: IndexParams):
        def run(i: int) -> np.ndarray:
            _, ids = search_index(index, unit[i : i + 1], k + 1, p)
            row = ids[0]
            return row[row != i][:k]

        return run

    catalog = tiny_catalog(vectors)
    change_index = ChangeIndex(catalog, index, params)
    ids_arr = catalog.frame["event_id"].to_numpy()
    positions = catalog.positions

    def library(i: int) -> np.ndarray:
        res = change_index.query(str(ids_arr[i]), k)
        return np.asarray([positions[e] for e in res["event_id"]])

    table = Table(title=f"search latency, k={k}, {args.queries} single queries, {args.n:,} x {args.dim}")
    table.caption = f"targets: p50 <= {TARGET_P50_MS:g} ms and recall@{k} >= {TARGET_RECALL} on this machine"
    for col in ("path", "setting", "p50 ms", "p99 ms", f"recall@{k}", "targets"):
        table.add_column(col, justify="left" if col in ("path", "setting", "targets") else "right", no_wrap=True)

    def add(path: str, setting: str, fn) -> None:
        with omp_threads(1):
            fn(int(qpos[0]))  # warm-up
            t, found = measure(fn, qpos)
        p50, p99 = np.percentile(t, 50) * 1e3, np.percentile(t, 99) * 1e3
        rec = recall(found, truth, k)
        ok = "met" if p50 <= TARGET_P50_MS and rec >= TARGET_RECALL else "MISSED"
        table.add_row(path, setting, f"{p50:.3f}", f"{p99:.3f}", f"{rec:.4f}", ok)

    add("faiss index", detail, raw(params))
    add("ChangeIndex.query", detail, library)
    if args.sweep:
        if params.kind == "ivf":
            for nprobe in (8, 16, 32, 64, 128):
                if nprobe != params.nprobe and nprobe <= (params.nlist or 1):
                    add("faiss index", f"nprobe {nprobe}", raw(replace(params, nprobe=nprobe)))
        else:
            for ef in (16, 32, 64, 128, 256):
                if ef != params.ef_search:
                    add("faiss index", f"efSearch {ef}", raw(replace(params, ef_search=ef)))
    console.print(table)
    console.print(f"index build: {build_s:.1f} s ({params.kind}, {detail})")


if __name__ == "__main__":
    main()
