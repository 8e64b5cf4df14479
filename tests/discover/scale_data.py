"""Seeded synthetic events with planted change types, for the catalog-scale discovery tests.

Kept apart from the tests so that the same seeded inputs can be fed to the code of another commit (to compare
sampled clustering with the code before it) and to ``benchmarks/discover_scale.py``'s smaller runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

N_DATES = 12


def planted_events(
    seed: int,
    type_sizes: tuple[int, ...],
    dim: int,
    *,
    n_rare: int = 0,
    n_noise: int = 0,
    spread: float = 1.0,
) -> tuple[Any, Any, np.ndarray]:
    """``(events, grid, planted)``: events of planted types, a rare far type and scattered noise.

    Each type is a "from" state and a change direction (random); its events add Gaussian noise to both. The rare
    type (``n_rare`` events, label ``len(type_sizes)``) is built the same way; noise events (label ``-1``) have a
    random before state and change; ``spread`` scales the within-type noise. Events sit at distinct (patch, date)
    cells of a small grid.
    """
    from affine import Affine

    from changescope.change.events import Events
    from changescope.grid import PatchGrid

    rng = np.random.default_rng(seed)
    n_types = len(type_sizes) + (1 if n_rare else 0)
    covers = 3.0 * rng.normal(size=(n_types, dim))
    moves = 2.0 * rng.normal(size=(n_types, dim))
    sizes = [*type_sizes, *([n_rare] if n_rare else [])]
    planted = np.concatenate([np.repeat(np.arange(n_types), sizes), np.full(n_noise, -1)]).astype(np.int64)
    n = planted.size
    typ = np.maximum(planted, 0)
    before = covers[typ] + 0.5 * spread * rng.normal(size=(n, dim))
    change = moves[typ] + 0.4 * spread * rng.normal(size=(n, dim))
    wild = planted < 0
    before[wild] = 3.0 * rng.normal(size=(int(wild.sum()), dim))
    change[wild] = 2.0 * rng.normal(size=(int(wild.sum()), dim))
    n_patches = -(-n // N_DATES)
    cols = int(np.ceil(np.sqrt(n_patches)))
    rows = -(-n_patches // cols)
    cell = rng.permutation(rows * cols * N_DATES)[:n]
    patch, t = cell // N_DATES, cell % N_DATES
    dates = pd.date_range("2019-01-01", periods=N_DATES, freq="MS")
    score = rng.gamma(4.0, 2.0, size=n)
    frame = pd.DataFrame(
        {
            "patch": patch,
            "t": t,
            "time": dates[t],
            "score": score,
            "p_value": np.exp(-score),
            "nfa": np.exp(-score) * n_patches,
            "confirmed": t < N_DATES - 1,
            "status": np.where(t < N_DATES - 1, "confirmed", "pending"),
            "date_earliest": dates[np.maximum(t - 1, 0)],
            "date_latest": dates[t],
            "magnitude": np.linalg.norm(change, axis=1),
            "n_after": np.full(n, 2),
            "score_threshold": np.full(n, 4.0),
        }
    )
    events = Events(frame, before.astype(np.float32), (before + change).astype(np.float32), 4.0, None)
    grid = PatchGrid(8, 8, rows * 8, cols * 8, Affine(10.0, 0, 500_000.0, 0, -10.0, 5_000_000.0), "EPSG:32633")
    return events, grid, planted
