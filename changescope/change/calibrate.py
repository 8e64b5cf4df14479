"""From change scores to evidence: p-values against a null of "no change", and decisions with a known error rate.

A change that changescope reports is a claim to an analyst, so it is declared by a test whose false alarms are
controlled, not by splitting whatever scores there are in two (Otsu and the Gaussian mixture always find a split,
also on a series where nothing changed).

**The null.** Scores are per-date robust z-scores (:func:`~changescope.change.score.robust_zscore`): each date's
scores are centred and scaled by that date's median and MAD over the AOI, which takes out what a date does to every
patch (haze, illumination, a global misregistration). What is left is the spread of "no change" from patch to
patch, and its upper tail is what a threshold must clear. Its samples are the *null scores*: every reference
observation of every patch scored leave-one-out exactly as a later observation is
(:mod:`changescope.change.context`), under the method's own assumption that the reference period holds no change.
:class:`NullModel` is their empirical survival function, continued past its 90th percentile by a generalised Pareto
tail (peaks over threshold, the extreme-value model of a tail), so that p-values far below ``1 / n_null`` are still
estimated rather than clipped. The shape parameter is kept at or above 0 (an exponential tail at the least): a
fitted finite end point would give p = 0 to anything beyond the largest null score seen. Without null scores (two
dates, other references, LOF), the null is the standard normal of the robust z-scores (``kind="gaussian"``), an
approximation the run records.

**Evidence per observation.** The null is the distribution of the very statistic that is tested, computed over the
reference period: a score counts only as far as the patch's next clear observation(s) confirm it (``confirm``, the
minimum of the observation's z-score and the next ones), so the null samples are the same minimum over consecutive
reference observations; with sub-patches (:mod:`changescope.change.multiscale`) a patch scores the highest of its
own and its sub-patches' scores, so its null samples are that highest value over the reference period, and the
p-values account for testing ``1 + s * s`` units per patch. An observation with fewer followers than ``confirm``
is *pending* (the series ends before anything can confirm it) and is tested against the null of single
observations (:func:`changescope.change.store.calibrate`). ``p = null.sf(score)``.

**Decisions** (:func:`decide`), over all patch-dates tested at once:

- ``"nfa"`` (default): an a-contrario number of false alarms, ``NFA = n_tests * p``; an observation is a change when
  ``NFA <= epsilon``, with ``epsilon = false_alarms * n_patches / 1000``. Under the null the expected number of
  false detections in the whole run is then at most ``epsilon``: ``false_alarms`` false changes per 1000 patches.
- ``"fdr"``: Benjamini-Hochberg at level ``q``: among the reported observations, the expected share of false ones
  is at most ``q`` (under independence or positive dependence).

**Each patch's own noise** (:class:`PatchNoise`, ``null_scale="patch"``, the default). The z-scores of unchanged
patches are not alike: a patch with no good peer (a stadium, a bright roof, a river bend) or one whose edges move
with every sub-pixel shift scores high at *every* date, reference period included, and those patches make the
AOI-wide null so heavy-tailed (generalised Pareto shape 0.3-0.8 on OSCD series) that a real change must score 30 or
more to pass. So the tested statistic is the score *studentised* by the patch's own noise level: ``z / (c + nu)``,
``nu`` the median of the patch's positive reference-period null z-scores and ``c`` a floor common to all patches
(:data:`NOISE_FLOOR` times the median positive null z-score, at least 1), which keeps a patch that happened to be
quiet in its few reference dates from dividing by almost nothing. Its null samples are studentised *leave-out*: a
null sample built from some reference observations is divided by the noise level of the patch's *other* reference
observations only, so that it is not divided by itself (which would make the null far too light). Each later
observation is divided by the level of all its patch's reference observations; with three references the null's
denominator then rests on fewer observations than the tested one's, which errs on the safe side (a heavier null
tail). The null is still one model pooled over every patch of the AOI, now of a statistic whose tail no longer
depends on which patch it comes from. With too few leave-out samples (fewer than :data:`MIN_NULL`, e.g. two
reference dates) the plain z-scores are tested (``null_scale="aoi"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from changescope.errors import ParameterError
from changescope.types import DecisionRule

__all__ = [
    "DECISIONS",
    "Decision",
    "DecisionRule",
    "NullModel",
    "PatchNoise",
    "bh_threshold",
    "decide",
]

DECISIONS: tuple[str, ...] = ("nfa", "fdr")
F64 = NDArray[np.float64]

TAIL_QUANTILE = 0.9
"""Null scores above this quantile are modelled by the generalised Pareto tail."""
MIN_NULL = 200
"""Fewest null scores for an empirical null; with fewer the Gaussian approximation is used."""
MIN_EXCESSES = 30
"""Fewest exceedances for a tail fit; with fewer the tail is exponential with the excesses' mean."""
NOISE_FLOOR = 2.0
"""The floor ``c`` of the studentised statistic, in medians of the positive null z-scores (module docstring)."""


@dataclass(frozen=True)
class NullModel:
    """The distribution of a score under "no change" (module docstring).

    Attributes:
        kind: ``"reference"`` (fitted to null scores) or ``"gaussian"`` (standard normal).
        sample: Sorted null scores (empty for ``"gaussian"``).
        u: Tail threshold (the :data:`TAIL_QUANTILE` of the sample).
        xi: Generalised Pareto shape of the tail (>= 0).
        beta: Generalised Pareto scale of the tail.
        noise_floor: The floor ``c`` when the statistic is studentised by each patch's noise (:class:`PatchNoise`),
            ``None`` for plain z-scores.
    """

    kind: str
    sample: F64
    u: float = float("nan")
    xi: float = 0.0
    beta: float = 1.0
    noise_floor: float | None = None

    @classmethod
    def gaussian(cls) -> NullModel:
        """The standard normal null of robust z-scores."""
        return cls("gaussian", np.zeros(0))

    @classmethod
    def fit(cls, null_scores: NDArray[np.floating], noise_floor: float | None = None) -> NullModel:
        """Fit the null to null scores (NaN ignored); fewer than :data:`MIN_NULL` give the Gaussian null.

        Args:
            null_scores: Samples of the tested statistic under "no change".
            noise_floor: The floor of a studentised statistic (:class:`PatchNoise`), recorded; ``None`` for plain
                z-scores.
        """
        s = np.sort(np.asarray(null_scores, dtype=np.float64).ravel())
        s = s[np.isfinite(s)]
        if s.size < MIN_NULL:
            return cls.gaussian()
        u = float(np.quantile(s, TAIL_QUANTILE))
        excess = s[s > u] - u
        if excess.size < MIN_EXCESSES or not np.any(excess > 0):
            scale = float(max(excess.mean(), 1e-6)) if excess.size else 1.0
            return cls("reference", s, u, 0.0, scale, noise_floor)
        xi, _, beta = stats.genpareto.fit(excess, floc=0.0)
        if not np.isfinite(xi) or not np.isfinite(beta) or xi < 0:  # never a finite end point
            xi, beta = 0.0, float(excess.mean())
        return cls("reference", s, u, float(min(xi, 0.9)), float(max(beta, 1e-9)), noise_floor)

    @property
    def tail_share(self) -> float:
        """Share of the null sample above the tail threshold."""
        return float(np.mean(self.sample > self.u)) if self.sample.size else 0.0

    def sf(self, z: NDArray[np.floating]) -> F64:
        """P(null score >= z), NaN where ``z`` is NaN."""
        x = np.asarray(z, dtype=np.float64)
        out = np.full(x.shape, np.nan)
        fin = np.isfinite(x)
        if self.kind == "gaussian":
            out[fin] = stats.norm.sf(x[fin])
            return out
        n = self.sample.size
        v = x[fin]
        at_least = n - np.searchsorted(self.sample, v, side="left")
        p = (at_least + 1.0) / (n + 1.0)  # the empirical (conformal) p-value
        high = v > self.u
        p[high] = self.tail_share * stats.genpareto.sf(v[high] - self.u, self.xi, loc=0.0, scale=self.beta)
        out[fin] = np.clip(p, 0.0, 1.0)
        return out

    def isf(self, p: float) -> float:
        """The score whose survival probability is ``p`` (the inverse of :meth:`sf`)."""
        if not 0 < p < 1:
            return float("inf") if p <= 0 else float("-inf")
        if self.kind == "gaussian":
            return float(stats.norm.isf(p))
        share = self.tail_share
        if p < share:
            return float(self.u + stats.genpareto.isf(p / share, self.xi, loc=0.0, scale=self.beta))
        return float(np.quantile(self.sample, 1.0 - p))

    def to_json(self) -> dict[str, Any]:
        """A summary for ``run.json``."""
        return {
            "kind": self.kind,
            "n_null": int(self.sample.size),
            "tail_threshold": None if not np.isfinite(self.u) else round(self.u, 4),
            "tail_shape": round(self.xi, 4),
            "tail_scale": round(self.beta, 4),
            "scale": "aoi" if self.noise_floor is None else "patch",
            "noise_floor": None if self.noise_floor is None else round(self.noise_floor, 4),
        }


def _compress(null_z: NDArray[np.floating]) -> F64:
    """``(N, K)``: each patch's finite null z-scores in date order, NaN-padded (K = most of any patch)."""
    z = np.asarray(null_z, dtype=np.float64)
    fin = np.isfinite(z)
    k = max(int(fin.sum(axis=0).max(initial=0)), 1)
    order = np.argsort(~fin, axis=0, kind="stable")[:k]  # the finite dates first, in date order
    return np.asarray(np.take_along_axis(z, order, axis=0).T, dtype=np.float64)


def _median_level(v: F64) -> F64:
    """Per row, the median of the positive parts of the finite values (NaN for an empty row)."""
    out = np.full(v.shape[0], np.nan)
    has = np.isfinite(v).any(axis=1)
    out[has] = np.nanmedian(np.maximum(v[has], 0.0), axis=1)
    return out


@dataclass(frozen=True)
class PatchNoise:
    """Each patch's noise level in its reference period, which studentises its scores (module docstring).

    Attributes:
        level: ``(N,)`` the median of the patch's positive null z-scores (the AOI's median level where a patch has
            none).
        floor: The floor ``c`` added to every level.
    """

    level: F64
    floor: float

    @classmethod
    def fit(cls, null_z: NDArray[np.floating]) -> PatchNoise:
        """The noise levels of ``(T, N)`` null z-scores (NaN where an observation is no reference)."""
        v = _compress(null_z)
        level = _median_level(v)
        finite = v[np.isfinite(v)]
        typical = float(np.median(np.maximum(finite, 0.0))) if finite.size else 0.0
        fill = float(np.nanmedian(level)) if np.isfinite(level).any() else 0.0
        return cls(np.where(np.isfinite(level), level, fill), max(1.0, NOISE_FLOOR * typical))

    @property
    def scale(self) -> F64:
        """``(N,)`` the divisor of each patch's scores, ``floor + level``."""
        return np.asarray(self.floor + self.level, dtype=np.float64)

    def studentize(self, scores: NDArray[np.floating]) -> F64:
        """``(T, N)`` scores divided by their patch's :attr:`scale`."""
        return np.asarray(np.asarray(scores, dtype=np.float64) / self.scale[None, :], dtype=np.float64)

    def null_samples(self, null_z: NDArray[np.floating], confirm: int) -> tuple[F64, F64]:
        """Leave-out studentised null samples: ``(confirmed, single)``, 1-d.

        A confirmed sample is the minimum over ``confirm + 1`` consecutive reference observations of a patch, a
        single one is one observation; each is divided by ``floor`` plus the noise level of the patch's other
        reference observations (samples of patches with no other reference observation are left out).

        Raises:
            ParameterError: ``confirm`` is negative.
        """
        if confirm < 0:
            raise ParameterError(f"confirm={confirm!r} must be >= 0 observations")
        v = _compress(null_z)
        return self._windows(v, confirm + 1), self._windows(v, 1)

    def _windows(self, v: F64, width: int) -> F64:
        k = v.shape[1]
        out: list[F64] = []
        for a in range(k - width + 1):
            inside = np.zeros(k, dtype=bool)
            inside[a : a + width] = True
            window = v[:, inside]
            rest = _median_level(v[:, ~inside]) if (~inside).any() else np.full(v.shape[0], np.nan)
            ok = np.isfinite(window).all(axis=1) & np.isfinite(rest)
            out.append(window[ok].min(axis=1) / (self.floor + rest[ok]))
        return np.concatenate(out) if out else np.zeros(0)


def bh_threshold(p: NDArray[np.floating], q: float) -> float:
    """The Benjamini-Hochberg p-value threshold at level ``q`` over the finite ``p`` (0 when nothing passes)."""
    x = np.sort(np.asarray(p, dtype=np.float64).ravel())
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0
    ok = np.nonzero(x <= q * np.arange(1, x.size + 1) / x.size)[0]
    return float(x[ok[-1]]) if ok.size else 0.0


@dataclass(frozen=True)
class Decision:
    """How observations were declared changes.

    Attributes:
        rule: ``"nfa"`` or ``"fdr"``.
        p_threshold: Observations with a confirmed p-value at or below it are changes.
        n_tests: Patch-dates tested.
        n_patches: Patches of the series.
        false_alarms: Expected false changes per 1000 patches (``"nfa"``).
        fdr: The false-discovery level (``"fdr"``).
        null: The null model's summary.
    """

    rule: str
    p_threshold: float
    n_tests: int
    n_patches: int
    false_alarms: float | None
    fdr: float | None
    null: dict[str, Any]

    def nfa(self, p: NDArray[np.floating]) -> F64:
        """The number of false alarms of p-values: ``n_tests * p``."""
        return self.n_tests * np.asarray(p, dtype=np.float64)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        """The decision :meth:`to_json` describes."""
        return cls(
            str(data["rule"]),
            float(data["p_threshold"]),
            int(data["n_tests"]),
            int(data["n_patches"]),
            data.get("false_alarms_per_1000_patches"),
            data.get("fdr"),
            dict(data.get("null") or {}),
        )

    def to_json(self) -> dict[str, Any]:
        """A summary for ``run.json``."""
        return {
            "rule": self.rule,
            "p_threshold": self.p_threshold,
            "n_tests": self.n_tests,
            "n_patches": self.n_patches,
            "false_alarms_per_1000_patches": self.false_alarms,
            "fdr": self.fdr,
            "null": self.null,
        }


def decide(
    p: NDArray[np.floating],
    n_patches: int,
    *,
    rule: str = "nfa",
    false_alarms: float = 1.0,
    fdr: float = 0.05,
    null: NullModel | None = None,
) -> Decision:
    """Choose the p-value threshold of a run (module docstring).

    Args:
        p: ``(T, N)`` confirmed p-values, NaN where not tested.
        n_patches: Patches of the series (the unit of ``false_alarms``).
        rule: ``"nfa"`` or ``"fdr"``.
        false_alarms: Expected false changes per 1000 patches for ``"nfa"`` (> 0).
        fdr: Benjamini-Hochberg level for ``"fdr"``, in (0, 1).
        null: The null model, recorded in the decision.

    Raises:
        ParameterError: Unknown rule or a level out of range.
    """
    if rule not in DECISIONS:
        raise ParameterError(f"decision rule {rule!r} is unknown; choose one of {list(DECISIONS)!r}")
    if not np.isfinite(false_alarms) or false_alarms <= 0:
        raise ParameterError(f"false_alarms={false_alarms!r} must be > 0 expected false changes per 1000 patches")
    if not 0 < fdr < 1:
        raise ParameterError(f"fdr={fdr!r} must be in (0, 1), e.g. 0.05")
    n_tests = int(np.isfinite(np.asarray(p, dtype=np.float64)).sum())
    summary = (null or NullModel.gaussian()).to_json()
    if rule == "nfa":
        epsilon = false_alarms * n_patches / 1000.0
        thr = epsilon / max(n_tests, 1)
        return Decision("nfa", float(thr), n_tests, n_patches, float(false_alarms), None, summary)
    return Decision("fdr", bh_threshold(p, fdr), n_tests, n_patches, None, float(fdr), summary)
