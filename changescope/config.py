"""Typed configurations of the stages of a run, and the one set of defaults that Python and the CLI share.

A run is three stages, each with its own frozen configuration:

- :class:`EmbedConfig`: which encoder embeds which patches (``embeddings.zarr``, ``subpatches.zarr``);
- :class:`ScoreConfig`: how patches are scored against their reference and how changes are declared
  (``patch_scores.parquet``, ``maps/``);
- :class:`DiscoverConfig`: how change events are described, clustered and ranked (``changes.parquet``,
  ``clusters.json``).

:class:`RunConfig` composes them, plus what the input is (``format``, ``aoi``). It also takes the stage options as
flat keywords (``RunConfig(patch_size=16, method="lof")``), routed to their stage, and reads them back flat
(``cfg.patch_size``), so that a run is configured as the ``changescope run`` command line is. Every option is
checked when the configuration is made, before any work: a typo in ``method`` fails at once, not after the
embedding. The CLI takes its defaults and choices from these classes (:func:`changescope.cli.run`), and a test
compares the two.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias, get_args

from changescope.errors import ParameterError
from changescope.types import ClusterMethod, Context, Device, Method, Metric, RankBy, Reference, ThresholdMethod

__all__ = [
    "ISOLATE_PIXEL_DATES",
    "STAGES",
    "DiscoverConfig",
    "EmbedConfig",
    "NullScale",
    "RunConfig",
    "ScoreConfig",
    "option_flag",
]

NullScale: TypeAlias = Literal["patch", "aoi"]
"""How the null of "no change" treats patches (:mod:`changescope.change.calibrate`)."""

STAGES: tuple[str, ...] = ("embed", "score", "discover")
"""The stages of a run, in order."""

ISOLATE_PIXEL_DATES = 100_000_000
"""Pixel-dates (height x width x dates) from which a run embeds in a child process by default
(:attr:`EmbedConfig.isolate`): about 4096 x 4096 px x 6 dates, which takes minutes to embed, so the child's few
seconds of start-up (importing torch again) cost little, while the 0.5 GiB that torch keeps resident would be carried
into the score stage."""


def option_flag(name: str) -> str:
    """The CLI flag of a configuration option (``n_peers`` -> ``--n-peers``)."""
    return "--" + name.replace("_", "-")


def _one_of(name: str, value: Any, alias: Any) -> None:
    allowed = get_args(alias)
    if value not in allowed:
        raise ParameterError(f"{option_flag(name)} {value!r} is unknown; choose one of {', '.join(allowed)}")


def _at_least(name: str, value: float | None, low: float, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or not math.isfinite(value) or value < low:
        raise ParameterError(f"{option_flag(name)} {value!r} must be a number >= {low:g}")


@dataclass(frozen=True)
class EmbedConfig:
    """How patches are embedded.

    Attributes:
        encoder: Encoder name (``changescope.encoders.list_encoders()``) or ``checkpoint:PATH``.
        weights: Encoder weights override (weights tag, path, HF repo id, ``"random"``).
        patch_size: Patch side in pixels.
        stride: Patch step in pixels (default: ``patch_size``).
        min_valid: Minimum clear fraction of a patch for its observation to be embedded and scored.
        subdivide: Also embed sub-patches of side ``patch_size / subdivide`` (``subpatches.zarr``) for the
            multi-scale score (:mod:`changescope.change.multiscale`); ``None``: 2 when the patch halves into
            sub-patches of at least 8 px, else 1.
        block: Embedding block side in pixels.
        workers: Local dask cluster size for embedding.
        scheduler: Address of an existing dask scheduler.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        isolate: Embed in a child process (:mod:`changescope.embed.isolate`), so that the run's own process never
            imports torch and keeps no embedding buffers into the score stage; ``None``: when the series is lazily
            read and holds at least :data:`ISOLATE_PIXEL_DATES` pixel-dates, and neither ``workers`` nor
            ``scheduler`` is given (their workers are other processes already). Results are identical either way.
    """

    encoder: str = "spectral"
    weights: str | None = None
    patch_size: int = 32
    stride: int | None = None
    min_valid: float = 0.5
    subdivide: int | None = None
    block: int | None = None
    workers: int | None = None
    scheduler: str | None = None
    device: Device = "auto"
    isolate: bool | None = None

    def __post_init__(self) -> None:
        if not self.encoder:
            raise ParameterError("--encoder is empty; name an encoder (changescope.encoders.list_encoders())")
        _at_least("patch_size", self.patch_size, 1)
        _at_least("stride", self.stride, 1, optional=True)
        if not 0.0 <= self.min_valid <= 1.0:
            raise ParameterError(f"--min-valid {self.min_valid!r} must lie in [0, 1]")
        _at_least("subdivide", self.subdivide, 1, optional=True)
        _at_least("block", self.block, 1, optional=True)
        _at_least("workers", self.workers, 1, optional=True)
        _one_of("device", self.device, Device)


@dataclass(frozen=True)
class ScoreConfig:
    """How observations are scored and how changes are declared.

    Attributes:
        method: ``"distance"`` (default) or ``"lof"``. On the synthetic benchmark (README) distance to the nearest
            peer changes beat LOF on every seed, and it also scores two-date pairs.
        reference: ``"first"``, ``"previous"``, ``"rolling"`` or ``"season"``.
        k: Reference size for ``first``/``rolling``.
        n_neighbors: LOF neighbours.
        metric: Distance metric (default: cosine for distance, euclidean for LOF).
        context: ``"peers"`` (default) scores each patch against the same-date observations of the patches that
            looked like it in its reference period, cancelling seasons, illumination and haze; ``"none"`` against
            its own reference observations only (:mod:`changescope.change.context`).
        n_peers: Peers per patch.
        standardize: Scale embedding dimensions to unit spread before scoring.
        confirm: A score is kept only as far as the patch's next ``confirm`` scored observations confirm it (0 = off).
        rebase: After a confirmed event, compare the patch's later dates with its new state and rescore
            (``reference="first"`` only). Off by default: on farmland a false break re-references the patch to one
            crop stage and the next stage breaks again.
        threshold: ``"nfa"`` (default: at most ``false_alarms`` expected false changes per 1000 patches),
            ``"fdr"`` (Benjamini-Hochberg at ``fdr``), or a split of the scores (``"otsu"``, ``"gmm"``,
            ``"quantile"`` or a number on normalised scores), which finds changes even where nothing changed.
        false_alarms: Expected false changes per 1000 patches for ``threshold="nfa"``.
        fdr: False-discovery rate for ``threshold="fdr"``.
        null_scale: For ``"nfa"`` and ``"fdr"``: ``"patch"`` (default) tests each score divided by its patch's
            own noise level in the reference period, leave-out calibrated (patches without good peers score high
            at every date and no longer set the threshold for all); ``"aoi"`` tests the plain z-scores against one
            null for every patch (:mod:`changescope.change.calibrate`).
        q: Quantile for ``threshold="quantile"``.
        persistence: Following valid dates that must confirm an event.
    """

    method: Method = "distance"
    reference: Reference = "first"
    k: int = 3
    n_neighbors: int = 20
    metric: Metric | None = None
    context: Context = "peers"
    n_peers: int = 100
    standardize: bool = True
    confirm: int = 1
    rebase: bool = False
    threshold: ThresholdMethod | float = "nfa"
    false_alarms: float = 1.0
    fdr: float = 0.05
    null_scale: NullScale = "patch"
    q: float = 0.99
    persistence: int = 1

    def __post_init__(self) -> None:
        _one_of("method", self.method, Method)
        _one_of("reference", self.reference, Reference)
        _one_of("context", self.context, Context)
        _one_of("null_scale", self.null_scale, NullScale)
        if self.metric is not None:
            _one_of("metric", self.metric, Metric)
        _at_least("k", self.k, 1)
        _at_least("n_neighbors", self.n_neighbors, 1)
        _at_least("n_peers", self.n_peers, 1)
        _at_least("confirm", self.confirm, 0)
        _at_least("persistence", self.persistence, 0)
        if isinstance(self.threshold, str):
            _one_of("threshold", self.threshold, ThresholdMethod)
        elif not math.isfinite(float(self.threshold)):
            raise ParameterError(f"--threshold {self.threshold!r} must be finite, or one of nfa, fdr, otsu, gmm")
        if not (math.isfinite(self.false_alarms) and self.false_alarms > 0):
            raise ParameterError(f"--false-alarms {self.false_alarms!r} must be > 0 (false changes per 1000 patches)")
        if not 0.0 < self.fdr < 1.0:
            raise ParameterError(f"--fdr {self.fdr!r} must lie in (0, 1), e.g. 0.05")
        if not 0.0 < self.q < 1.0:
            raise ParameterError(f"q={self.q!r} must lie in (0, 1)")


@dataclass(frozen=True)
class DiscoverConfig:
    """How change events are described, grouped into change types and ranked.

    Attributes:
        from_weight: Weight of the before state in the change descriptors that clustering, rarity and search
            compare (``[after - before, from_weight * before]``; 0 = the change vector alone).
        cluster: ``"hdbscan"`` or ``"kmeans"``.
        n_clusters: Clusters for k-means (default 8).
        rank_by: ``"rarity"``, ``"magnitude"`` or ``"mix"``.
        rank_weight: Weight of rarity in the mix.
        seed: Seed of every random step (clustering).
    """

    from_weight: float = 1.0
    cluster: ClusterMethod = "hdbscan"
    n_clusters: int | None = None
    rank_by: RankBy = "mix"
    rank_weight: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of("cluster", self.cluster, ClusterMethod)
        _one_of("rank_by", self.rank_by, RankBy)
        _at_least("from_weight", self.from_weight, 0.0)
        _at_least("n_clusters", self.n_clusters, 1, optional=True)
        if not 0.0 <= self.rank_weight <= 1.0:
            raise ParameterError(f"--rank-weight {self.rank_weight!r} must lie in [0, 1]")


_STAGE_TYPES: dict[str, type[Any]] = {"embed": EmbedConfig, "score": ScoreConfig, "discover": DiscoverConfig}
_OWNER: dict[str, str] = {f.name: stage for stage, cls in _STAGE_TYPES.items() for f in fields(cls)}


@dataclass(frozen=True, init=False)
class RunConfig:
    """Parameters of a run: the three stage configurations and the input (all recorded in ``run.json``).

    ``RunConfig(embed=EmbedConfig(...), score=ScoreConfig(...))`` or, as on the command line,
    ``RunConfig(patch_size=16, method="lof", seed=1)``: flat options go to the stage that owns them, and read back
    flat (``cfg.patch_size``).

    Attributes:
        embed: The embedding stage.
        score: The scoring and decision stage.
        discover: The discovery stage.
        format: Input format override (``changescope.open(format=...)``).
        aoi: AOI id for multi-AOI inputs (DynamicEarthNet roots).
        open_options: Other reader options for ``changescope.open`` (``reproject``, ``align``, ``date``, ``city``,
            ``drop_incomplete``: the ``--reproject`` ... flags).
        extra: Free-form notes recorded with the run.
    """

    embed: EmbedConfig
    score: ScoreConfig
    discover: DiscoverConfig
    format: str | None
    aoi: str | None
    open_options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        embed: EmbedConfig | None = None,
        score: ScoreConfig | None = None,
        discover: DiscoverConfig | None = None,
        *,
        format: str | None = None,
        aoi: str | None = None,
        open_options: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        stages: dict[str, Any] = {"embed": embed or EmbedConfig(), "score": score or ScoreConfig()}
        stages["discover"] = discover or DiscoverConfig()
        routed: dict[str, dict[str, Any]] = {s: {} for s in STAGES}
        for name, value in options.items():
            if name not in _OWNER:
                raise ParameterError(f"{name!r} is not a run option; see changescope run --help for the options")
            routed[_OWNER[name]][name] = value
        for stage, changes in routed.items():
            if changes:
                stages[stage] = dataclasses.replace(stages[stage], **changes)
        object.__setattr__(self, "embed", stages["embed"])
        object.__setattr__(self, "score", stages["score"])
        object.__setattr__(self, "discover", stages["discover"])
        object.__setattr__(self, "format", format)
        object.__setattr__(self, "aoi", aoi)
        object.__setattr__(self, "open_options", dict(open_options or {}))
        object.__setattr__(self, "extra", dict(extra or {}))

    def __getattr__(self, name: str) -> Any:
        """Read a stage option flat (``cfg.patch_size`` is ``cfg.embed.patch_size``)."""
        stage = _OWNER.get(name)
        if stage is None:
            raise AttributeError(f"RunConfig has no option {name!r}")
        return getattr(object.__getattribute__(self, stage), name)

    @property
    def seed(self) -> int:
        """The seed of every random step."""
        return self.discover.seed

    def replace(self, **options: Any) -> RunConfig:
        """A copy with some options changed (flat names or ``embed=``/``score=``/``discover=``/``format=``/``aoi=``)."""
        kw: dict[str, Any] = {"embed": self.embed, "score": self.score, "discover": self.discover}
        kw.update(format=self.format, aoi=self.aoi, open_options=self.open_options, extra=self.extra)
        for name in ("embed", "score", "discover", "format", "aoi", "open_options", "extra"):
            if name in options:
                kw[name] = options.pop(name)
        return RunConfig(**kw, **options)

    def to_json(self) -> dict[str, Any]:
        """Every option, by stage, for ``run.json``."""
        return {
            "embed": dataclasses.asdict(self.embed),
            "score": dataclasses.asdict(self.score),
            "discover": dataclasses.asdict(self.discover),
            "format": self.format,
            "aoi": self.aoi,
            "open_options": self.open_options,
            "extra": self.extra,
        }

    def flat(self) -> dict[str, Any]:
        """Every option under its flat name (the CLI's)."""
        out: dict[str, Any] = {}
        for stage in STAGES:
            out.update(dataclasses.asdict(getattr(self, stage)))
        out.update(format=self.format, aoi=self.aoi, open_options=self.open_options)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        """The configuration :meth:`to_json` (or the flat dict of an older ``run.json``) describes."""
        if all(isinstance(data.get(s), dict) for s in STAGES):
            return cls(
                EmbedConfig(**data["embed"]),
                ScoreConfig(**data["score"]),
                DiscoverConfig(**data["discover"]),
                format=data.get("format"),
                aoi=data.get("aoi"),
                open_options=data.get("open_options") or {},
                extra=data.get("extra") or {},
            )
        flat = {k: v for k, v in data.items() if k in _OWNER}
        return cls(
            format=data.get("format"),
            aoi=data.get("aoi"),
            open_options=data.get("open_options") or {},
            extra=data.get("extra") or {},
            **flat,
        )
