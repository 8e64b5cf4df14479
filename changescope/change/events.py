"""From change scores to change events.

1. **Decision**: by default an observation is a candidate when its confirmed p-value against the null of "no
   change" passes a test with a known false-alarm rate (``"nfa"``: at most ``false_alarms`` expected false changes
   per 1000 patches; ``"fdr"``: Benjamini-Hochberg; :mod:`changescope.change.calibrate`). The older rules split the
   scores themselves: ``"otsu"``, ``"gmm"`` (the boundary of a 2-component Gaussian mixture), ``"quantile"``, or a
   number; they always find changes, also where nothing changed.
2. **Runs and dating**: consecutive candidate observations of a patch (ignoring unscored dates in between) form one
   run. The event is dated at its *break*: the run's first observation, moved back over the patch's preceding
   scored observations as long as each of them is already significant on its own (confirmed p-value at most
   ``date_level``, 0.01), as hysteresis thresholding or CCDC/BFAST break dating do: a change is detected where the
   evidence is overwhelming and dated where it begins. ``date_earliest`` is the patch's last clear observation
   before the break (the change happened after it), ``date_latest`` the break's observation (the first clear date
   that shows it): when clouds hide the transition, the two are months apart.
3. **Pending**: an observation that nothing after it can confirm (the series ends, or the patch is cloudy until the
   end) gives a ``pending`` event, kept apart from ``confirmed`` ones and never counted as a change found.
4. **Persistence**: the event is *confirmed* when each of the next ``persistence`` valid observations of the patch
   is closer to the new state (the observation at the event date) than to the state before (the mean of the
   reference observations). A one-date glitch (a missed cloud, a haze burst) returns to the old state and is
   rejected. Events too close to the end of the series to be checked are kept with ``confirmed=False``.
5. Each event carries its before and after embedding means (after = the event observation and its confirming
   observations), its **change vector** (after - before), its **magnitude** (norm of the change vector), its score,
   date and patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from changescope.change.calibrate import DECISIONS, Decision, NullModel, decide
from changescope.change.reference import Reference, reference_mask
from changescope.change.source import DateSource
from changescope.errors import ParameterError
from changescope.types import ThresholdMethod

__all__ = ["Events", "ThresholdMethod", "extract_events", "pick_threshold"]

DATE_LEVEL = 0.01
"""Confirmed p-value at which an observation before a detection still counts as changed (break dating)."""


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
    raise ParameterError(f"threshold={method!r} must be 'nfa', 'fdr', 'otsu', 'gmm', 'quantile' or a number")


@dataclass(frozen=True)
class Events:
    """Change events and their vectors (rows aligned).

    Attributes:
        frame: One row per event: ``patch`` (flat index), ``time`` (the break date), ``t`` (its date index),
            ``score``, ``p_value`` and ``nfa`` (the evidence; NaN with the score-splitting rules), ``magnitude``,
            ``confirmed``, ``status`` (``"confirmed"`` or ``"pending"``), ``date_earliest`` and ``date_latest`` (the
            dating interval), ``n_after`` (observations averaged into the after state) and, once scored by
            :func:`changescope.change.store.score_events`, ``score_threshold`` (the score the event's patch needed).
        before: ``(E, D)`` mean embedding before.
        after: ``(E, D)`` mean embedding after.
        threshold: The lowest score a candidate needs (for the p-value rules, the confirmed score at the p-value
            threshold; with per-patch noise, where each patch needs its own, the median over patches).
        decision: The test that declared the candidates (``None`` for the score-splitting rules).
    """

    frame: pd.DataFrame
    before: NDArray[np.float32]
    after: NDArray[np.float32]
    threshold: float
    decision: Decision | None = None

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


def _candidates(
    s: NDArray[np.float64],
    threshold: ThresholdMethod | float,
    q: float,
    pvalues: NDArray[np.floating] | None,
    null: NullModel | None,
    false_alarms: float,
    fdr: float,
) -> tuple[NDArray[np.bool_], NDArray[np.float64], float, Decision | None]:
    """Candidate observations, their p-values (NaN for score rules), the score threshold and the decision."""
    if isinstance(threshold, str) and threshold in DECISIONS:
        model = null or NullModel.gaussian()
        p = np.asarray(model.sf(s) if pvalues is None else pvalues, dtype=np.float64)
        if p.shape != s.shape:
            raise ParameterError(f"p-values have shape {p.shape!r}, expected {s.shape!r}")
        p = np.where(np.isfinite(s), p, np.nan)
        decision = decide(p, s.shape[1], rule=threshold, false_alarms=false_alarms, fdr=fdr, null=model)
        cand = np.isfinite(p) & (p <= decision.p_threshold)
        thr = model.isf(decision.p_threshold) if decision.p_threshold > 0 else float("inf")
        return cand, p, thr, decision
    thr = pick_threshold(s, threshold, q)
    return np.isfinite(s) & (s >= thr), np.full(s.shape, np.nan), thr, None


def extract_events(
    X: NDArray[np.floating] | DateSource,
    valid: NDArray[np.bool_],
    times: pd.DatetimeIndex | NDArray[np.datetime64],
    scores: NDArray[np.floating],
    *,
    reference: Reference = "first",
    k: int = 3,
    season_window: int = 45,
    threshold: ThresholdMethod | float = "nfa",
    q: float = 0.99,
    persistence: int = 1,
    keep_unconfirmed: bool = True,
    breaks: NDArray[np.bool_] | None = None,
    pvalues: NDArray[np.floating] | None = None,
    pending: NDArray[np.bool_] | None = None,
    null: NullModel | None = None,
    false_alarms: float = 1.0,
    fdr: float = 0.05,
    date_level: float = DATE_LEVEL,
) -> Events:
    """Turn per-patch scores into events (see the module docstring for the rules).

    Args:
        X: ``(T, N, D)`` embeddings, or a source of them (:mod:`changescope.change.source`): only the patches with
            a candidate observation are read.
        valid: ``(T, N)`` usable observations (with a source, they must have an embedding).
        times: ``T`` dates.
        scores: ``(T, N)`` change scores (NaN = unscored).
        reference: The reference strategy the scores used (defines the before state).
        k: Reference size of that strategy.
        season_window: Window of the ``"season"`` strategy.
        threshold: ``"nfa"`` or ``"fdr"`` (tests on ``pvalues``), or a score rule or value (:func:`pick_threshold`).
        q: Quantile for ``threshold="quantile"``.
        persistence: Following valid observations that must confirm the new state (0 = no check).
        keep_unconfirmed: Keep events that could not be checked (series end) as ``pending``.
        breaks: ``(T, N)`` segment starts the scores used (:func:`~changescope.change.reference.reference_mask`):
            the before state of an event is then its segment's reference.
        pvalues: ``(T, N)`` confirmed p-values (:mod:`changescope.change.calibrate`); default ``null.sf(scores)``.
        pending: ``(T, N)`` observations whose score nothing after them confirms; default: none.
        null: The null model of ``scores`` (default Gaussian); recorded in the decision, and gives the threshold.
        false_alarms: Expected false changes per 1000 patches (``"nfa"``).
        fdr: False-discovery level (``"fdr"``).
        date_level: Confirmed p-value at which an observation before a detection still dates the break.
    """
    if persistence < 0:
        raise ParameterError(f"persistence={persistence!r} must be >= 0 following dates")
    s = np.asarray(scores, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if isinstance(X, np.ndarray):
        valid = valid & np.isfinite(X).all(axis=2)
    if s.shape != valid.shape:
        raise ParameterError(f"scores have shape {s.shape!r}, expected {valid.shape!r}")
    seg = None if breaks is None else np.asarray(breaks, dtype=bool)
    if seg is not None and seg.shape != valid.shape:
        raise ParameterError(f"breaks have shape {seg.shape!r}, expected {valid.shape!r}")
    late = np.zeros(s.shape, dtype=bool) if pending is None else np.asarray(pending, dtype=bool)
    cand, p, thr, decision = _candidates(s, threshold, q, pvalues, null, false_alarms, fdr)
    nfa = decision.nfa(p) if decision is not None else p
    idx = pd.DatetimeIndex(times)
    scored = np.isfinite(s)
    rows: list[tuple[int, int, int, float, float, float, bool, int]] = []
    befores, afters = [], []
    # hysteresis: a run is a stretch of consecutive scored observations that are at least weakly significant,
    # an event is a run holding a candidate, dated at the run's start
    weak = cand | (np.isfinite(p) & (p <= date_level)) if decision is not None else cand
    patches = np.nonzero(cand.any(axis=0))[0]
    Xc = np.asarray(X[:, patches], dtype=np.float64) if isinstance(X, np.ndarray) else X.patches(patches)
    for i, n in enumerate(patches):
        x = Xc[:, i]
        obs = np.nonzero(scored[:, n])[0]
        clear = np.nonzero(valid[:, n])[0]
        starts = [i for i in range(len(obs)) if weak[obs[i], n] and (i == 0 or not weak[obs[i - 1], n])]
        for i in starts:
            j = i
            while j < len(obs) and weak[obs[j], n] and not cand[obs[j], n]:
                j += 1
            if j == len(obs) or not weak[obs[j], n]:
                continue  # a weak run without a candidate: not a change
            b, t = int(obs[i]), int(obs[j])  # the break, and the first observation that passed the test
            own = None if seg is None else seg[:, n : n + 1]
            ref, _ = reference_mask(valid[:, n : n + 1], idx, reference, k, season_window, own)
            before = x[ref[b, :, 0]].mean(axis=0)
            follow = [int(u) for u in clear if u > b][:persistence]
            after_obs = [b]
            ok = True
            for u in follow:
                if np.linalg.norm(x[u] - x[b]) < np.linalg.norm(x[u] - before):
                    after_obs.append(u)
                else:
                    ok = False
                    break
            complete = len(follow) == persistence and not late[t, n]
            if ok and (complete or keep_unconfirmed):
                earlier = clear[clear < b]
                prior = int(earlier[-1]) if earlier.size else -1
                evidence = (float(s[t, n]), float(p[t, n]), float(nfa[t, n]))
                rows.append((int(n), b, prior, *evidence, complete, len(after_obs)))
                befores.append(before)
                afters.append(x[after_obs].mean(axis=0))
    return _events(rows, befores, afters, Xc.shape[2], idx, thr, decision)


def _events(
    rows: list[tuple[int, int, int, float, float, float, bool, int]],
    befores: list[NDArray[np.float64]],
    afters: list[NDArray[np.float64]],
    dim: int,
    idx: pd.DatetimeIndex,
    thr: float,
    decision: Decision | None,
) -> Events:
    """Assemble :class:`Events` from the extracted rows, sorted by date then patch."""
    before_arr = np.asarray(befores, dtype=np.float32).reshape(-1, dim)
    after_arr = np.asarray(afters, dtype=np.float32).reshape(-1, dim)
    cols = ["patch", "t", "prior", "score", "p_value", "nfa", "confirmed", "n_after"]
    frame = pd.DataFrame(rows, columns=cols)
    t = frame["t"].to_numpy(dtype=int)
    prior = frame.pop("prior").to_numpy(dtype=int)
    frame.insert(2, "time", idx[t] if len(frame) else pd.DatetimeIndex([]))
    frame["status"] = np.where(frame["confirmed"].to_numpy(dtype=bool), "confirmed", "pending")
    frame["date_earliest"] = pd.DatetimeIndex([idx[j] if j >= 0 else pd.NaT for j in prior])
    frame["date_latest"] = frame["time"]
    frame["magnitude"] = np.linalg.norm(after_arr - before_arr, axis=1) if len(frame) else np.zeros(0)
    frame["confirmed"] = frame["confirmed"].astype(bool)
    order = np.lexsort((frame["patch"].to_numpy(), frame["t"].to_numpy()))
    frame = frame.iloc[order].reset_index(drop=True)
    return Events(frame=frame, before=before_arr[order], after=after_arr[order], threshold=thr, decision=decision)
