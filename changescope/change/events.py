"""From change scores to change events.

1. **Threshold**: a score is a candidate when it reaches a threshold chosen automatically from all scored
   observations (``"otsu"``, ``"gmm"``: the boundary of a 2-component Gaussian mixture, ``"quantile"``) or given
   as a number.
2. **Runs**: consecutive candidate observations of a patch (ignoring unscored dates in between) form one run; the
   event is dated at the run's first observation.
3. **Persistence**: the event is *confirmed* when each of the next ``persistence`` valid observations of the patch
   is closer to the new state (the observation at the event date) than to the state before (the mean of the
   reference observations). A one-date glitch (a missed cloud, a haze burst) returns to the old state and is
   rejected. Events too close to the end of the series to be checked are kept with ``confirmed=False``.
4. Each event carries its before and after embedding means (after = the event observation and its confirming
   observations), its **change vector** (after - before), its **magnitude** (norm of the change vector), its score,
   date and patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.change.reference import Reference, reference_mask
from changescope.errors import ParameterError

__all__ = ["Events", "ThresholdMethod", "extract_events", "pick_threshold"]

ThresholdMethod: TypeAlias = Literal["otsu", "gmm", "quantile"]


def pick_threshold(scores: NDArray[np.floating], method: ThresholdMethod | float = "otsu", q: float = 0.99) -> float:
    """Choose the candidate threshold from the finite scores.

    Args:
        scores: Any-shaped scores, NaN = unscored.
        method: ``"otsu"`` (maximises between-class variance), ``"gmm"`` (where a 2-component Gaussian mixture's
            high component becomes more likely), ``"quantile"`` (the ``q`` quantile), or a number used as is.
        q: Quantile for ``"quantile"``.

    Raises:
        ParameterError: Unknown method or no finite score.
    """
    if isinstance(method, int | float) and not isinstance(method, bool):
        return float(method)
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size < 2:
        raise ParameterError("no scores to threshold: every observation is unscored (all cloudy or too few dates?)")
    if method == "otsu":
        from skimage.filters import threshold_otsu

        return float(threshold_otsu(s, nbins=512))
    if method == "quantile":
        if not 0 < q < 1:
            raise ParameterError(f"q={q!r} must be in (0, 1)")
        return float(np.quantile(s, q))
    if method == "gmm":
        from sklearn.mixture import GaussianMixture

        sample = s if s.size <= 200_000 else np.random.default_rng(0).choice(s, 200_000, replace=False)
        gmm = GaussianMixture(2, random_state=0).fit(sample[:, None])
        high = int(np.argmax(gmm.means_[:, 0]))
        grid = np.linspace(float(gmm.means_.min()), float(gmm.means_.max()), 2048)
        post = gmm.predict_proba(grid[:, None])[:, high]
        above = np.nonzero(post >= 0.5)[0]
        return float(grid[above[0]]) if above.size else float(gmm.means_.max())
    raise ParameterError(f"threshold={method!r} must be 'otsu', 'gmm', 'quantile' or a number")


@dataclass(frozen=True)
class Events:
    """Change events and their vectors (rows aligned).

    Attributes:
        frame: One row per event: ``patch`` (flat index), ``time``, ``t`` (date index), ``score``, ``magnitude``,
            ``confirmed``, ``n_after`` (observations averaged into the after state).
        before: ``(E, D)`` mean embedding before.
        after: ``(E, D)`` mean embedding after.
        threshold: The candidate threshold used.
    """

    frame: pd.DataFrame
    before: NDArray[np.float32]
    after: NDArray[np.float32]
    threshold: float

    @property
    def vectors(self) -> NDArray[np.float32]:
        """``(E, D)`` change vectors ``after - before``."""
        return np.asarray(self.after - self.before, dtype=np.float32)

    def descriptors(self, from_weight: float = 1.0) -> NDArray[np.float32]:
        """From-to change descriptors ``(E, 2D)``: ``[unit(after - before), from_weight * unit(before)]``.

        A change is a transition *from* a state *to* another. The change vector alone confuses transitions that
        move the embedding the same way from different states (a clearing in a forest and a field drying out both
        lose vegetation); adding the before state (what the land was), as change-type maps do with from-to classes,
        keeps them apart. Each half is scaled to unit length, so the cosine of two descriptors is
        ``(cos(change_1, change_2) + w**2 cos(before_1, before_2)) / (1 + w**2)``: the direction of the change and
        the state it started from, weighted by ``w`` whatever the magnitudes (kept in the ``magnitude`` column).
        Clustering, rarity and search all compare these descriptors by cosine. ``from_weight=0`` gives the change
        vectors ``after - before`` (``(E, D)``, unscaled).

        Raises:
            ParameterError: ``from_weight`` negative or not finite.
        """
        if not np.isfinite(from_weight) or from_weight < 0:
            raise ParameterError(f"from_weight={from_weight!r} must be a finite number >= 0 (0 = change vector only)")
        if from_weight == 0:
            return self.vectors
        parts = [_unit(self.vectors), np.float32(from_weight) * _unit(self.before)]
        return np.hstack(parts).astype(np.float32)

    def breaks(self, n_times: int, n_patches: int) -> NDArray[np.bool_]:
        """``(T, N)`` mask of the confirmed events' dates: the segment starts of a rescoring pass.

        Args:
            n_times: Dates of the series.
            n_patches: Patches of the series.
        """
        out = np.zeros((n_times, n_patches), dtype=bool)
        done = self.frame[self.frame["confirmed"].to_numpy(dtype=bool)]
        out[done["t"].to_numpy(dtype=int), done["patch"].to_numpy(dtype=int)] = True
        return out

    def __len__(self) -> int:
        return len(self.frame)


def _unit(x: NDArray[np.floating]) -> NDArray[np.float32]:
    """Rows scaled to unit length (zero rows stay zero)."""
    v = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.asarray(v / np.where(norm > 0, norm, 1.0), dtype=np.float32)


def extract_events(
    X: NDArray[np.floating],
    valid: NDArray[np.bool_],
    times: pd.DatetimeIndex | NDArray[np.datetime64],
    scores: NDArray[np.floating],
    *,
    reference: Reference = "first",
    k: int = 3,
    season_window: int = 45,
    threshold: ThresholdMethod | float = "otsu",
    q: float = 0.99,
    persistence: int = 1,
    keep_unconfirmed: bool = True,
    breaks: NDArray[np.bool_] | None = None,
) -> Events:
    """Turn per-patch scores into events (see the module docstring for the rules).

    Args:
        X: ``(T, N, D)`` embeddings.
        valid: ``(T, N)`` usable observations.
        times: ``T`` dates.
        scores: ``(T, N)`` change scores (NaN = unscored).
        reference: The reference strategy the scores used (defines the before state).
        k: Reference size of that strategy.
        season_window: Window of the ``"season"`` strategy.
        threshold: Threshold method or value (:func:`pick_threshold`).
        q: Quantile for ``threshold="quantile"``.
        persistence: Following valid observations that must confirm the new state (0 = no check).
        keep_unconfirmed: Keep events that could not be checked (series end) with ``confirmed=False``.
        breaks: ``(T, N)`` segment starts the scores used (:func:`~changescope.change.reference.reference_mask`):
            the before state of an event is then its segment's reference.
    """
    if persistence < 0:
        raise ParameterError(f"persistence={persistence!r} must be >= 0 following dates")
    X = np.asarray(X, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(X).all(axis=2)
    if s.shape != valid.shape:
        raise ParameterError(f"scores have shape {s.shape!r}, expected {valid.shape!r}")
    seg = None if breaks is None else np.asarray(breaks, dtype=bool)
    if seg is not None and seg.shape != valid.shape:
        raise ParameterError(f"breaks have shape {seg.shape!r}, expected {valid.shape!r}")
    thr = pick_threshold(s, threshold, q)
    idx = pd.DatetimeIndex(times)
    cand = np.isfinite(s) & (s >= thr)
    scored = np.isfinite(s)
    rows: list[tuple[int, int, float, bool, int]] = []
    befores, afters = [], []
    for p in np.nonzero(cand.any(axis=0))[0]:
        obs = np.nonzero(scored[:, p])[0]
        prev_cand = False
        for t in obs:
            is_cand = bool(cand[t, p])
            if is_cand and not prev_cand:
                own = None if seg is None else seg[:, p : p + 1]
                ref, _ = reference_mask(valid[:, p : p + 1], idx, reference, k, season_window, own)
                before = X[ref[t, :, 0], p].mean(axis=0)
                follow = [u for u in np.nonzero(valid[:, p])[0] if u > t][:persistence]
                after_obs = [t]
                ok = True
                for u in follow:
                    if np.linalg.norm(X[u, p] - X[t, p]) < np.linalg.norm(X[u, p] - before):
                        after_obs.append(u)
                    else:
                        ok = False
                        break
                complete = len(follow) == persistence
                if ok and (complete or keep_unconfirmed):
                    after = X[after_obs, p].mean(axis=0)
                    rows.append((int(p), int(t), float(s[t, p]), bool(ok and complete), len(after_obs)))
                    befores.append(before)
                    afters.append(after)
            prev_cand = is_cand
    dim = X.shape[2]
    before_arr = np.asarray(befores, dtype=np.float32).reshape(-1, dim)
    after_arr = np.asarray(afters, dtype=np.float32).reshape(-1, dim)
    frame = pd.DataFrame(rows, columns=["patch", "t", "score", "confirmed", "n_after"])
    frame.insert(2, "time", idx[frame["t"].to_numpy()] if len(frame) else pd.DatetimeIndex([]))
    frame["magnitude"] = np.linalg.norm(after_arr - before_arr, axis=1) if len(frame) else np.zeros(0)
    order = np.lexsort((frame["patch"].to_numpy(), frame["t"].to_numpy()))
    frame = frame.iloc[order].reset_index(drop=True)
    return Events(frame=frame, before=before_arr[order], after=after_arr[order], threshold=thr)
