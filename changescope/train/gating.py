"""CACo change awareness: a per-location change estimate and its Gaussian-mixture gating.

CACo (Mall, Hariharan, Bala, CVPR 2023) uses a location's long-term pair (two dates years apart) as a negative only
if the location really changed. The change estimate of a location is the ratio of the long-term to the short-term
(seasonal) embedding distance, kept as a running average ``new = (1 - ema)·old + ema·current`` (``ema=0.2`` is the
published ``(4·old + current) / 5``). After each epoch a 2-component Gaussian mixture on the ratios of the locations
seen so far labels each as changed (the component with the higher mean) or unchanged.

The mixture is fitted to ``log(1 + ratio)``, not to the ratios themselves. Ratios are positive and heavy-tailed: a
location whose two short-term dates embed almost identically gets a ratio of hundreds, and a mixture on raw ratios
then spends its second component on that one outlier and labels nobody else changed (seen twice in a 20-epoch run:
1 of 1922 locations "changed" at epochs 5 and 15, 12-15 % at the others). On the log scale the tail is compressed
and the two components describe the bulk.

Typical use in a training loop::

    tracker = ChangeTracker(n_locations, seed=cfg.seed)
    for epoch in range(epochs):
        for batch in loader:
            ...
            loss = model.loss(q, k, extra_neg=k_long, extra_mask=torch.from_numpy(tracker.mask(locs)))
            tracker.update(locs, long_dist, short_dist)
        summary = tracker.fit()
        tracker.plot_histogram(run_dir / f"ratios_{epoch:04d}.png", epoch=epoch)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from changescope.errors import ParameterError
from changescope.types import PathLike

__all__ = ["MIN_SEEN", "SHORT_EPS", "ChangeTracker", "GatingSummary"]

MIN_SEEN = 10
"""Fewest seen locations for which :meth:`ChangeTracker.fit` fits a mixture; below it nobody is changed."""
SHORT_EPS = 1e-6
"""Floor of the short-term distance in the ratio, so identical short-term embeddings do not divide by zero."""
_STATE_VERSION = 1


@dataclass(frozen=True)
class GatingSummary:
    """Outcome of one :meth:`ChangeTracker.fit`.

    Attributes:
        n_seen: Locations with a change estimate.
        n_changed: Locations labelled changed.
        changed_fraction: ``n_changed / n_seen`` (0.0 when nothing was seen).
        threshold: Smallest ratio labelled changed; NaN when nobody is changed.
        means: ``(low, high)`` component means; NaN when no mixture was fitted.
        converged: Whether the mixture's EM converged (False when no mixture was fitted).
    """

    n_seen: int
    n_changed: int
    changed_fraction: float
    threshold: float
    means: tuple[float, float]
    converged: bool


class ChangeTracker:
    """Running change ratios per location and the changed / unchanged labels fitted on them.

    Args:
        n_locations: Number of locations (indices ``0 .. n_locations - 1``).
        ema: Weight of the new observation in the running average, in ``(0, 1]``.
        seed: ``random_state`` of the Gaussian mixture.

    Attributes:
        ratios: ``(n_locations,)`` float64 running ratios; NaN = never seen.
        changed: ``(n_locations,)`` bool labels; all False until the first :meth:`fit`.
        threshold: Smallest ratio labelled changed by the last fit (NaN if none).
        means: ``(low, high)`` component means of the last fit (NaN if none).

    Raises:
        ParameterError: ``n_locations < 1``, ``ema`` outside ``(0, 1]`` or a non-integer seed.
    """

    def __init__(self, n_locations: int, *, ema: float = 0.2, seed: int = 0) -> None:
        if isinstance(n_locations, bool) or not isinstance(n_locations, int) or n_locations < 1:
            raise ParameterError(f"n_locations={n_locations!r} must be an integer >= 1")
        if isinstance(ema, bool) or not isinstance(ema, int | float) or not 0.0 < ema <= 1.0:
            raise ParameterError(f"ema={ema!r} must be in (0, 1]; CACo uses 0.2, i.e. (4·old + current) / 5")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ParameterError(f"seed={seed!r} must be an integer")
        self.n_locations = n_locations
        self.ema = float(ema)
        self.seed = seed
        self.ratios = np.full(n_locations, np.nan, dtype=np.float64)
        self.changed = np.zeros(n_locations, dtype=bool)
        self.threshold = math.nan
        self.means = (math.nan, math.nan)

    def _locations(self, locs: np.ndarray) -> np.ndarray:
        arr = np.asarray(locs)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ParameterError(f"locs has shape {arr.shape!r} and dtype {arr.dtype}; pass a 1-D integer array")
        idx = arr.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_locations):
            raise ParameterError(
                f"locs range over [{idx.min()}, {idx.max()}]; location indices must lie in [0, {self.n_locations})"
            )
        return idx

    def update(self, locs: np.ndarray, long_dist: np.ndarray, short_dist: np.ndarray) -> None:
        """Fold one batch of distances into the running ratios.

        ``ratio = long_dist / max(short_dist, SHORT_EPS)``. The first observation of a location sets its ratio;
        later ones update ``(1 - ema)·old + ema·ratio``. A location repeated within one call is updated
        sequentially, in the order given, exactly as if the entries came in separate calls.

        Args:
            locs: ``(B,)`` integer location indices.
            long_dist: ``(B,)`` long-term embedding distances, >= 0.
            short_dist: ``(B,)`` short-term embedding distances, >= 0.

        Raises:
            ParameterError: Mismatched lengths, indices out of range, or negative / non-finite distances.
        """
        idx = self._locations(locs)
        dists = []
        for name, value in (("long_dist", long_dist), ("short_dist", short_dist)):
            d = np.asarray(value, dtype=np.float64)
            if d.shape != idx.shape:
                raise ParameterError(f"{name} has shape {d.shape!r}; it must match locs {idx.shape!r}")
            if not np.isfinite(d).all() or (d < 0).any():
                raise ParameterError(f"{name} holds negative or non-finite values; pass distances >= 0")
            dists.append(d)
        ratio = dists[0] / np.maximum(dists[1], SHORT_EPS)
        if np.unique(idx).size == idx.size:
            old = self.ratios[idx]
            self.ratios[idx] = np.where(np.isnan(old), ratio, (1.0 - self.ema) * old + self.ema * ratio)
            return
        for i, r in zip(idx.tolist(), ratio.tolist(), strict=True):
            old_i = self.ratios[i]
            self.ratios[i] = r if np.isnan(old_i) else (1.0 - self.ema) * old_i + self.ema * r

    def fit(self) -> GatingSummary:
        """Label the seen locations with a 2-component Gaussian mixture on their ratios.

        A location is changed when the mixture assigns it to the component with the higher mean and its ratio
        exceeds the lower mean (a broad high component may otherwise claim the far low tail). Never-seen locations
        stay unchanged. Nobody is changed with fewer than :data:`MIN_SEEN` seen locations, when the ratios are all
        (nearly) equal, or when the fit leaves one component empty.

        Returns:
            The summary of the new labels.
        """
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        seen = np.flatnonzero(~np.isnan(self.ratios))
        values = self.ratios[seen]
        self.changed = np.zeros(self.n_locations, dtype=bool)
        self.threshold, self.means = math.nan, (math.nan, math.nan)
        converged = False
        spread = float(np.ptp(values)) if values.size else 0.0
        if values.size >= MIN_SEEN and spread > 1e-9 * max(1.0, float(np.abs(values).max())):
            gm = GaussianMixture(n_components=2, random_state=self.seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                labels = gm.fit_predict(np.log1p(values)[:, None])
            converged = bool(gm.converged_)
            comp_means = np.expm1(gm.means_[:, 0])  # back on the ratio scale
            high = int(np.argmax(comp_means))
            low_mean, high_mean = float(comp_means.min()), float(comp_means.max())
            is_changed = (labels == high) & (values > low_mean)
            if high_mean > low_mean and 0 < int(is_changed.sum()) < values.size:
                self.changed[seen[is_changed]] = True
                self.threshold = float(values[is_changed].min())
                self.means = (low_mean, high_mean)
        return self.summary(converged=converged)

    def summary(self, *, converged: bool = False) -> GatingSummary:
        """Summary of the current labels (``converged`` is reported as given)."""
        n_seen = int((~np.isnan(self.ratios)).sum())
        n_changed = int(self.changed.sum())
        return GatingSummary(
            n_seen=n_seen,
            n_changed=n_changed,
            changed_fraction=n_changed / n_seen if n_seen else 0.0,
            threshold=self.threshold,
            means=self.means,
            converged=converged,
        )

    def mask(self, locs: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: True where the long-term pair of ``locs`` may be a negative (the location changed)."""
        out: np.ndarray = self.changed[self._locations(locs)].copy()
        return out

    def state_dict(self) -> dict[str, Any]:
        """State storable by ``torch.save`` and loadable with ``torch.load(weights_only=True)``."""
        return {
            "version": _STATE_VERSION,
            "n_locations": self.n_locations,
            "ema": self.ema,
            "seed": self.seed,
            "ratios": torch.from_numpy(self.ratios.copy()),
            "changed": torch.from_numpy(self.changed.copy()),
            "threshold": self.threshold,
            "means": list(self.means),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output exactly.

        Raises:
            ParameterError: A state of another version or location count, or one missing keys.
        """
        missing = {"version", "n_locations", "ema", "seed", "ratios", "changed", "threshold", "means"} - set(state)
        if missing:
            raise ParameterError(f"state lacks {sorted(missing)!r}; pass the output of ChangeTracker.state_dict()")
        if state["version"] != _STATE_VERSION:
            raise ParameterError(f"state version {state['version']!r} is not {_STATE_VERSION}; it cannot be loaded")
        if int(state["n_locations"]) != self.n_locations:
            raise ParameterError(
                f"state has n_locations={state['n_locations']!r} but this tracker has {self.n_locations}; "
                "build the tracker on the same locations"
            )
        ratios = torch.as_tensor(state["ratios"]).numpy().astype(np.float64, copy=True)
        changed = torch.as_tensor(state["changed"]).numpy().astype(bool, copy=True)
        if ratios.shape != (self.n_locations,) or changed.shape != (self.n_locations,):
            raise ParameterError(f"state arrays must have shape ({self.n_locations},); the state is corrupt")
        self.ema, self.seed = float(state["ema"]), int(state["seed"])
        self.ratios, self.changed = ratios, changed
        self.threshold = float(state["threshold"])
        low, high = (float(v) for v in state["means"])
        self.means = (low, high)

    def plot_histogram(self, path: PathLike, *, epoch: int) -> Path:
        """Write a PNG histogram of the seen ratios, stacked by label, with the threshold line.

        Drawn with :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot state) and written atomically.

        Args:
            path: Output PNG path (parent folders are created).
            epoch: Epoch shown in the title.

        Returns:
            ``path`` as a :class:`~pathlib.Path`.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from changescope.io.writers import atomic_path

        out = Path(path)
        seen = ~np.isnan(self.ratios)
        values = self.ratios[seen]
        labels = self.changed[seen]
        s = self.summary()
        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if values.size:
            edges = np.histogram_bin_edges(values, bins=min(50, max(5, values.size // 5))).tolist()
            ax.hist(
                [values[~labels], values[labels]],
                bins=edges,
                stacked=True,
                color=["tab:blue", "tab:red"],
                label=[f"unchanged ({s.n_seen - s.n_changed})", f"changed ({s.n_changed})"],
            )
            ax.legend(loc="upper right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no location seen yet", ha="center", va="center", transform=ax.transAxes)
        if math.isfinite(self.threshold):
            ax.axvline(self.threshold, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("change ratio (long-term / short-term distance)")
        ax.set_ylabel("locations")
        ax.set_title(f"epoch {epoch}: {s.changed_fraction:.1%} of {s.n_seen} seen locations changed")
        fig.tight_layout()
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
        return out
