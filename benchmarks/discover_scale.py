"""Benchmark: the discover stage at catalog scale (wall time, peak RSS, cluster quality) per number of events.

Data: a seeded synthetic :class:`~changescope.change.events.Events` of ``N`` events with ``D``-dimensional before and
after states, laid out on a patch grid of ``ceil(N / 24)`` patches x 24 monthly dates (one event per patch and
date). ``--types`` planted change types (a "from" land cover, a centre in embedding space, and a change direction;
Dirichlet sizes, the smallest type forced to 0.5 % of the events so that a rare type is present) plus
``--noise`` of scattered events (random before state and change). Each ``(N, D)`` runs
:func:`changescope.stages.discover_stage` on a temporary :class:`~changescope.rundir.RunDir` (the whole stage:
catalog frame, clustering, rarity, ranking, ``changes.parquet``, ``change_vectors.npy``, ``clusters.json`` and
``maps/change_date.tif``) in a fresh subprocess, which prints:

- ``wall_s``: the stage's wall time;
- ``rss_in_mib``: the RSS once the events are built (imports + inputs), ``peak_mib``: the peak RSS of the stage
  (``resource.getrusage``; the peak is first reset to the current RSS through ``/proc/self/clear_refs``, so the
  building of the synthetic events does not count; where that is refused, the peak includes it), and their
  difference, what the stage itself added at its peak;
- ``ari``: adjusted Rand index of the clusters against the planted types (noise events left out), ``noise``: the
  share of events labelled noise, ``k``: clusters found, ``rare_top``: the share of the rare type's events among
  the first ``len(rare type)`` planted (non-noise) events by rarity.

``--profile`` prints the child's top cProfile entries (cumulative time), ``--tracemalloc`` its largest allocation
sites still alive at the end (numpy buffers; faiss's own memory is not traced), ``--peak-trace`` the changescope
frames that were running when the RSS peaked (polled every 20 ms). Asserts nothing.

Usage: ``python benchmarks/discover_scale.py [--n 10000 50000 200000] [--dim 24 384] [--cluster hdbscan|kmeans]
[--profile] [--tracemalloc] [--peak-trace] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd

N_DATES = 24


def synthetic_events(n: int, dim: int, *, types: int = 6, noise: float = 0.03, seed: int = 0) -> tuple[Any, Any]:
    """Seeded events with planted change types; returns ``(events, planted)`` (``planted`` -1 = noise)."""
    from changescope.change.events import Events

    rng = np.random.default_rng(seed)
    covers = rng.normal(size=(types, dim)).astype(np.float32) * 3.0
    moves = rng.normal(size=(types, dim)).astype(np.float32) * 2.0
    share = rng.dirichlet(np.full(types, 3.0))
    share[-1] = 0.005
    share[:-1] *= (1.0 - noise - 0.005) / share[:-1].sum()
    labels = rng.choice(np.arange(-1, types), size=n, p=np.concatenate([[noise], share]))
    before = np.empty((n, dim), dtype=np.float32)
    after = np.empty((n, dim), dtype=np.float32)
    step = 50_000
    for s in range(0, n, step):
        lab = labels[s : s + step]
        m = lab.size
        b = covers[np.maximum(lab, 0)] + 0.6 * rng.standard_normal((m, dim), dtype=np.float32)
        d = moves[np.maximum(lab, 0)] + 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
        wild = lab < 0
        b[wild] = 3.0 * rng.standard_normal((int(wild.sum()), dim), dtype=np.float32)
        d[wild] = 2.0 * rng.standard_normal((int(wild.sum()), dim), dtype=np.float32)
        before[s : s + m] = b
        after[s : s + m] = b + d
    n_patches = -(-n // N_DATES)
    cell = rng.permutation(n_patches * N_DATES)[:n]
    patch, t = cell // N_DATES, cell % N_DATES
    dates = pd.date_range("2018-01-01", periods=N_DATES, freq="MS")
    score = rng.gamma(4.0, 2.0, size=n)
    frame = pd.DataFrame(
        {
            "patch": patch.astype(np.int64),
            "t": t.astype(np.int64),
            "time": dates[t],
            "score": score,
            "p_value": np.exp(-score),
            "nfa": np.exp(-score) * n_patches,
            "confirmed": t < N_DATES - 1,
            "status": np.where(t < N_DATES - 1, "confirmed", "pending"),
            "date_earliest": dates[np.maximum(t - 1, 0)],
            "date_latest": dates[t],
            "magnitude": np.linalg.norm(after - before, axis=1).astype(np.float64),
            "n_after": np.full(n, 2, dtype=np.int64),
            "score_threshold": np.full(n, 4.0),
        }
    )
    return Events(frame, before, after, 4.0, None), labels


def _grid(n: int) -> Any:
    from affine import Affine

    from changescope.grid import PatchGrid

    n_patches = -(-n // N_DATES)
    cols = int(np.ceil(np.sqrt(n_patches)))
    rows = -(-n_patches // cols)
    return PatchGrid(32, 32, rows * 32, cols * 32, Affine(10.0, 0, 500_000.0, 0, -10.0, 5_000_000.0), "EPSG:32633")


def _rss_mib() -> float:
    """Peak RSS of this process so far (``getrusage``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_mib() -> float:
    """Current RSS, MiB (``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Reset the peak RSS to the current RSS (Linux ``clear_refs`` 5), so the peak is the stage's own."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


class PeakWatch:
    """Poll the RSS every 20 ms and keep the main thread's stack (changescope frames) at its highest value."""

    def __init__(self) -> None:
        import threading

        self.main = threading.main_thread().ident
        self.peak, self.where = 0.0, ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import traceback

        while not self.stop.wait(0.02):
            now = _current_mib()
            if now > self.peak:
                frame = sys._current_frames().get(self.main or 0)
                stack = traceback.extract_stack(frame) if frame is not None else []
                mine = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in stack if "scope/" in f.filename]
                self.peak, self.where = now, " <- ".join(reversed(mine[-4:]))

    def close(self) -> str:
        """Stop polling; the peak and where it was."""
        self.stop.set()
        self.thread.join()
        return f"RSS peak {self.peak:.0f} MiB at {self.where}"


def child(args: argparse.Namespace) -> None:
    """Build the events, run the discover stage once, print one JSON line of measurements."""
    from sklearn.metrics import adjusted_rand_score

    from changescope.config import DiscoverConfig
    from changescope.rundir import RunDir
    from changescope.stages import discover_stage

    events, planted = synthetic_events(args.n, args.dim, seed=args.seed)
    grid = _grid(args.n)
    cfg = DiscoverConfig(cluster=args.cluster, seed=args.seed)
    reset = _reset_peak()
    rss_in = _current_mib()
    watch = PeakWatch() if args.peak_trace else None
    with tempfile.TemporaryDirectory() as tmp:
        rd = RunDir(tmp)
        rd.prepare()
        if args.tracemalloc:
            import tracemalloc

            tracemalloc.start(8)
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        changes = discover_stage(rd, events, grid, cfg, aoi="bench", score_key="bench")
        wall = time.perf_counter() - t0
        if watch is not None:
            print(watch.close(), file=sys.stderr)
        if prof is not None:
            import pstats

            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(args.top)
        if args.tracemalloc:
            import tracemalloc

            snap = tracemalloc.take_snapshot()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"tracemalloc peak {peak / 2**20:.0f} MiB; largest live allocations at the end:", file=sys.stderr)
            for stat in snap.statistics("traceback")[: args.top // 3]:
                print(f"  {stat.size / 2**20:8.1f} MiB", stat.traceback.format()[-1].strip(), file=sys.stderr)
        files = sorted(os.listdir(tmp))
    labels = changes["cluster"].to_numpy()
    keep = planted >= 0
    rare = planted == planted.max()
    typed = np.nonzero(keep)[0]  # among the planted (non-noise) events, the rare type should come first
    order = typed[np.argsort(-changes["rarity"].to_numpy()[typed], kind="stable")[: int(rare.sum())]]
    out = {
        "n": args.n,
        "dim": args.dim,
        "cluster": args.cluster,
        "wall_s": round(wall, 2),
        "rss_in_mib": round(rss_in),
        "peak_reset": reset,
        "peak_mib": round(_rss_mib()),
        "ari": round(float(adjusted_rand_score(planted[keep], labels[keep])), 3),
        "noise": round(float((labels < 0).mean()), 3),
        "k": int(labels.max()) + 1,
        "rare_top": round(float(rare[order].mean()), 3),
        "files": len(files),
    }
    print(json.dumps(out), flush=True)


def main() -> None:
    """Run every ``(N, D)`` in its own subprocess and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--dim", type=int, nargs="+", default=[24, 384])
    parser.add_argument("--cluster", default="hdbscan", choices=["hdbscan", "kmeans"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print the child's cProfile (cumulative)")
    parser.add_argument("--tracemalloc", action="store_true", help="print the child's largest allocations")
    parser.add_argument("--peak-trace", action="store_true", help="print where (changescope frames) RSS peaked")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.n, args.dim = args.n[0], args.dim[0]
        child(args)
        return
    print(f"{'N':>8} {'D':>4} {'wall s':>8} {'RSS in':>8} {'peak':>8} {'added':>8} {'ARI':>6} {'noise':>6} k  rare")
    for dim in args.dim:
        for n in args.n:
            cmd = [sys.executable, __file__, "--child", "--n", str(n), "--dim", str(dim)]
            cmd += ["--cluster", args.cluster, "--seed", str(args.seed), "--top", str(args.top)]
            cmd += ["--profile"] * args.profile + ["--tracemalloc"] * args.tracemalloc
            cmd += ["--peak-trace"] * args.peak_trace
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.stderr.strip() and (args.profile or args.tracemalloc or args.peak_trace or done.returncode):
                print(done.stderr, file=sys.stderr)
            if done.returncode:
                print(f"{n:>8} {dim:>4} failed (exit {done.returncode})")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            added = r["peak_mib"] - r["rss_in_mib"]
            print(
                f"{n:>8} {dim:>4} {r['wall_s']:>8.1f} {r['rss_in_mib']:>8} {r['peak_mib']:>8} {added:>8} "
                f"{r['ari']:>6.3f} {r['noise']:>6.3f} {r['k']:<2} {r['rare_top']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
