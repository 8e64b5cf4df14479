"""The benchmark: encoders x change methods, plus classical baselines, on one input, in one table.

For each encoder, :func:`~changescope.run.run_pipeline` runs once per method into ``OUT/<encoder>_<method>/``; the
embeddings store of the encoder's first successful run is copied into the next run folders first, so each encoder
embeds the series once (``run_pipeline`` resumes a store made with the same parameters). Each run is then
evaluated with :func:`~changescope.evaluate.evaluate.evaluate_run` (its ``metrics.json`` stays in its folder).

Classical baselines (``changescope.evaluate.baselines``: CVA, IR-MAD, PCA-kmeans) give per-patch scores per date;
they are written as ``OUT/baseline_<name>/patch_scores.parquet`` and evaluated with the same patch-level code.

A row whose run fails with a changescope error (missing weights or dependency, a method the input cannot take)
records the error in ``status``; the other rows still run.

Columns of the table: ``name, kind (encoder|baseline), encoder, method, auc, ap, best_f1, pixel_f1, runtime_s``
(the run's total from ``run.json`` timings, or the baseline's scoring time), ``embed_s`` (the encoder's embedding
time, measured on its first run), ``patches_per_s`` (patch observations = dates x patches, embedded per second;
for baselines, scored per second), ``status`` (``ok`` or why the row has no numbers) and ``run_dir``.

Outputs: ``OUT/benchmark.csv``, ``benchmark.md`` (markdown table), ``benchmark.json`` (rows and ROC curves) and
``roc.png`` (ROC curves of every row, overlaid).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from changescope.errors import ChangescopeError, ParameterError
from changescope.evaluate.evaluate import Truth, evaluate_run, load_truth, score_metrics, write_curves
from changescope.io.writers import atomic_path
from changescope.patch_scores import PatchScores
from changescope.truth import DEFAULT_MIN_FRACTION
from changescope.types import PathLike

__all__ = ["COLUMNS", "available_baselines", "benchmark", "markdown_table"]

COLUMNS = [
    "name",
    "kind",
    "encoder",
    "method",
    "auc",
    "ap",
    "best_f1",
    "pixel_f1",
    "runtime_s",
    "embed_s",
    "patches_per_s",
    "status",
    "run_dir",
]


def available_baselines() -> tuple[list[str], str | None]:
    """Names of the classical baselines, and why there are none (``None`` when importable)."""
    try:
        from changescope.evaluate.baselines import BASELINES
    except ImportError as err:
        return [], f"classical baselines unavailable ({err})"
    return list(BASELINES), None


def _row(name: str, kind: str, encoder: str, method: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(name=name, kind=kind, encoder=encoder, method=method, status="ok")
    row.update(kw)
    return row


def _fill_metrics(row: dict[str, Any], metrics: Mapping[str, Any]) -> None:
    row["auc"] = metrics["patch"]["auc"]
    row["ap"] = metrics["patch"]["ap"]
    row["best_f1"] = metrics["patch"]["best_f1"]
    row["pixel_f1"] = metrics["pixel"]["f1"]


def _run_encoder(
    input: PathLike,
    out: Path,
    encoder: str,
    methods: Sequence[str],
    truth: Truth,
    config_kw: dict[str, Any],
    progress: bool,
    curves: dict[str, tuple[list[float], list[float]]],
) -> list[dict[str, Any]]:
    from changescope.run import RunConfig, load_run, run_pipeline

    rows: list[dict[str, Any]] = []
    store: Path | None = None
    embed_s: float | None = None
    for method in methods:
        name = f"{encoder}_{method}"
        run_dir = out / name
        row = _row(name, "encoder", encoder, method, run_dir=str(run_dir))
        rows.append(row)
        try:
            config = RunConfig(encoder=encoder, method=method, **config_kw)
            run_pipeline(input, run_dir, config, progress=progress, embeddings=store)
            metrics = evaluate_run(run_dir, truth)
        except ChangescopeError as err:
            row["status"] = f"error: {type(err).__name__}: {err}"
            continue
        run = load_run(run_dir)
        timings = run.get("timings_s", {})
        if embed_s is None:
            embed_s = float(timings.get("embed", 0.0))
            store = run_dir  # the next methods reuse this run's stores
        n_obs = int(run.get("n_dates", 0)) * int(run["grid"]["rows"]) * int(run["grid"]["cols"])
        row["runtime_s"] = round(float(sum(timings.values())), 3)
        row["embed_s"] = embed_s
        row["patches_per_s"] = round(n_obs / embed_s, 1) if embed_s else None
        _fill_metrics(row, metrics)
        curves[name] = (metrics["patch"]["roc"]["fpr"], metrics["patch"]["roc"]["tpr"])
    return rows


def _run_baseline(
    ds: Any, truth: Truth, name: str, out: Path, curves: dict[str, tuple[list[float], list[float]]]
) -> dict[str, Any]:
    from changescope.evaluate.baselines import baseline_patch_scores

    run_dir = out / f"baseline_{name}"
    row = _row(f"baseline_{name}", "baseline", "-", name, run_dir=str(run_dir))
    try:
        t0 = time.perf_counter()
        cube = np.asarray(baseline_patch_scores(ds, truth.grid, name, reference="first"), dtype=np.float64)
        elapsed = time.perf_counter() - t0
    except ChangescopeError as err:
        row["status"] = f"error: {type(err).__name__}: {err}"
        return row
    if cube.shape[1:] != truth.grid.shape:
        row["status"] = f"error: baseline {name!r} returned shape {cube.shape!r}, expected (T, *{truth.grid.shape!r})"
        return row
    scores = PatchScores(
        pd.DatetimeIndex(ds["time"].values), cube, size=truth.grid.size, stride=truth.grid.stride, method=name
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    scores.write(run_dir / "patch_scores.parquet")
    metrics = score_metrics(scores, truth)
    with atomic_path(run_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, default=str))
    row["runtime_s"] = round(elapsed, 3)
    row["patches_per_s"] = round(cube.size / elapsed, 1) if elapsed > 0 else None
    _fill_metrics(row, metrics)
    curves[row["name"]] = (metrics["patch"]["roc"]["fpr"], metrics["patch"]["roc"]["tpr"])
    return row


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table of the benchmark (numbers to 3 decimals, empty cells for missing values)."""
    cols = [c for c in COLUMNS if c != "run_dir"]

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in df.to_dict("records")]
    return "\n".join(lines) + "\n"


def _parse_list(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s.strip()]


def benchmark(
    input: PathLike,
    out: PathLike,
    encoders: Sequence[str] | str = ("spectral",),
    methods: Sequence[str] | str = ("distance", "lof"),
    baselines: Sequence[str] | str | None = None,
    *,
    truth: PathLike | None = None,
    patch_size: int = 32,
    weights: Mapping[str, str] | None = None,
    format: str | None = None,
    aoi: str | None = None,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    progress: bool = False,
) -> pd.DataFrame:
    """Benchmark encoders x methods and classical baselines on one input (see the module docstring).

    Args:
        input: A series ``changescope.open`` reads.
        out: Output folder (one run folder per row, and the tables).
        encoders: Encoder names (list or comma-separated string).
        methods: Change methods (``distance``, ``lof``).
        baselines: Classical baselines (``cva``, ``irmad``, ``pcakmeans``); ``None`` for none.
        truth: Truth override (see :func:`~changescope.evaluate.evaluate.load_truth`).
        patch_size: Patch side in pixels.
        weights: Weights per encoder, ``{encoder: path}``.
        format: Input format override.
        aoi: AOI id of a multi-AOI input.
        min_fraction: Changed share from which a patch counts as changed.
        progress: Show the runs' progress bars.

    Returns:
        The table (columns :data:`COLUMNS`), also written to ``out``.

    Raises:
        ParameterError: No encoder or baseline, an unknown method, or weights for an encoder not benchmarked.
    """
    import changescope

    enc = _parse_list(encoders)
    meth = _parse_list(methods)
    base = _parse_list(baselines)
    wts = dict(weights or {})
    if not enc and not base:
        raise ParameterError("encoders and baselines are both empty; pass --encoders spectral (or --baselines cva)")
    bad = [m for m in meth if m not in ("distance", "lof")]
    if bad or (enc and not meth):
        raise ParameterError(f"methods={meth!r} must be a non-empty list of 'distance' and 'lof'")
    extra = sorted(set(wts) - set(enc))
    if extra:
        raise ParameterError(f"weights given for {extra!r}, which are not in encoders={enc!r}; fix --weights ENC=PATH")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = changescope.open(input, format=format, **({} if aoi is None else {"aoi": aoi}))
    tr = load_truth(ds, truth, patch_size, min_fraction=min_fraction, aoi=aoi)
    curves: dict[str, tuple[list[float], list[float]]] = {}
    rows: list[dict[str, Any]] = []
    base_kw: dict[str, Any] = {"patch_size": patch_size, "format": format, "aoi": aoi}
    for name in enc:
        kw = {**base_kw, "weights": wts.get(name)}
        rows += _run_encoder(input, out_dir, name, meth, tr, kw, progress, curves)
    if base:
        known, why = available_baselines()
        for name in base:
            if why is not None or name not in known:
                reason = why or f"unknown baseline {name!r}; choose from {known!r}"
                rows.append(_row(f"baseline_{name}", "baseline", "-", name, status=reason))
                continue
            rows.append(_run_baseline(ds, tr, name, out_dir, curves))
    df = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(out_dir / "benchmark.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out_dir / "benchmark.md") as tmp:
        tmp.write_text(markdown_table(df))
    payload = {
        "input": str(input),
        "truth": tr.source,
        "patch_size": patch_size,
        "min_fraction": min_fraction,
        "rows": json.loads(df.to_json(orient="records")),
        "roc": {k: {"fpr": v[0], "tpr": v[1]} for k, v in curves.items()},
    }
    with atomic_path(out_dir / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str))
    labels = {r["name"]: r["auc"] for r in rows}
    write_curves(
        out_dir / "roc.png",
        [(f"{k} (AUC {labels[k]:.3f})" if labels.get(k) is not None else k, v[0], v[1]) for k, v in curves.items()],
        "roc",
    )
    return df
