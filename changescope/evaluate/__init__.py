"""Evaluation: metrics against ground truth, the encoder x method benchmark, and classical baselines.

- :func:`evaluate_run` scores a finished run against labels or change masks and writes ``metrics.json``;
- :func:`benchmark` runs encoders x methods (and the classical baselines) on one input and tabulates them;
- :mod:`changescope.evaluate.metrics` holds the plain metric functions.
"""

from __future__ import annotations

from changescope.evaluate.benchmark import benchmark
from changescope.evaluate.evaluate import Truth, evaluate_run, load_truth, score_metrics
from changescope.evaluate.metrics import best_f1, binary_metrics, pixel_metrics

__all__ = [
    "Truth",
    "benchmark",
    "best_f1",
    "binary_metrics",
    "evaluate_run",
    "load_truth",
    "pixel_metrics",
    "score_metrics",
]
