"""Options of the run stages, shared by ``run``, ``score`` and ``discover``.

Every default is read from the stage configurations (:mod:`changescope.config`) and every choice from the
``Literal`` aliases of :mod:`changescope.types`, so the command line and Python cannot drift apart (a test compares
them).
"""

from __future__ import annotations

from typing import Annotated, get_args

import typer

from changescope.config import DiscoverConfig, EmbedConfig, NullScale, ScoreConfig
from changescope.errors import ParameterError
from changescope.types import ClusterMethod, Context, Device, Method, Metric, RankBy, Reference, ThresholdMethod

__all__ = ["EMBED", "SCORE", "DISCOVER", "discover_config", "parse_threshold", "score_config"]

EMBED = EmbedConfig()
SCORE = ScoreConfig()
DISCOVER = DiscoverConfig()

Encoder = Annotated[str, typer.Option("--encoder", "-e", help="Encoder name or checkpoint:PATH.")]
Weights = Annotated[str | None, typer.Option("--weights", help="Encoder weights: a weights tag, path or HF repo id.")]
PatchSize = Annotated[int, typer.Option("--patch-size", "-p", help="Patch side in pixels.")]
Stride = Annotated[int | None, typer.Option("--stride", help="Patch step in pixels (default: the patch size).")]
MinValid = Annotated[float, typer.Option("--min-valid", help="Minimum clear fraction of a patch.")]
Subdivide = Annotated[
    int | None,
    typer.Option("--subdivide", help="Also score sub-patches of side patch/N (1 = patch scale only; auto: 2)."),
]
Workers = Annotated[int | None, typer.Option("--workers", help="Local dask cluster workers.")]
Scheduler = Annotated[str | None, typer.Option("--scheduler", help="Existing dask scheduler address.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where the encoder runs.")]
Isolate = Annotated[
    bool | None,
    typer.Option(
        "--isolate/--no-isolate",
        help="Embed in a child process, so that the run's own process never holds torch (auto: large lazy series).",
        show_default="auto",
    ),
]

MethodOpt = Annotated[Method, typer.Option("--method", "-m", help="Change score.")]
ReferenceOpt = Annotated[Reference, typer.Option("--reference", help="Reference observations.")]
K = Annotated[int, typer.Option("--k", help="Reference dates for first/rolling.")]
ContextOpt = Annotated[Context, typer.Option("--context", help="peers: compare with similar patches; none: own only.")]
NPeers = Annotated[int, typer.Option("--n-peers", help="Peers per patch for --context peers.")]
MetricOpt = Annotated[Metric | None, typer.Option("--metric", help="Distance (default: cosine; euclidean for lof).")]
Threshold = Annotated[
    str,
    typer.Option(
        "--threshold",
        help="How changes are declared: nfa (a test with --false-alarms, default), fdr, or a split of the scores "
        "(otsu, gmm, quantile or a number), which finds changes even where nothing changed.",
    ),
]
FalseAlarms = Annotated[
    float, typer.Option("--false-alarms", help="Expected false changes per 1000 patches (--threshold nfa).")
]
Fdr = Annotated[
    float | None,
    typer.Option("--fdr", help="Declare changes at this false-discovery rate instead (Benjamini-Hochberg)."),
]
NullScaleOpt = Annotated[
    NullScale,
    typer.Option(
        "--null-scale",
        help="patch: test each score against its patch's own reference-period noise (default); aoi: one null for all.",
    ),
]
Persistence = Annotated[int, typer.Option("--persistence", help="Following dates confirming a change.")]
Confirm = Annotated[int, typer.Option("--confirm", help="Next observations a score must hold for (0 = off).")]
Rebase = Annotated[
    bool, typer.Option("--rebase/--no-rebase", help="After a confirmed change, compare later dates with the new state.")
]

FromWeight = Annotated[
    float, typer.Option("--from-weight", help="Weight of the before state in change descriptors (0 = change only).")
]
Cluster = Annotated[ClusterMethod, typer.Option("--cluster", help="How change types are found.")]
NClusters = Annotated[int | None, typer.Option("--n-clusters", help="Clusters for kmeans (default 8).")]
RankByOpt = Annotated[RankBy, typer.Option("--rank-by", help="How changes are ranked.")]
RankWeight = Annotated[float, typer.Option("--rank-weight", help="Weight of rarity in --rank-by mix.")]


def parse_threshold(threshold: str, fdr: float | None) -> ThresholdMethod | float:
    """``--threshold`` as a rule name or a number; ``--fdr`` alone switches the default rule to ``fdr``.

    Raises:
        ParameterError: Neither a known rule nor a number.
    """
    value: ThresholdMethod | float
    names: dict[str, ThresholdMethod] = {name: name for name in get_args(ThresholdMethod)}
    if threshold in names:
        value = names[threshold]
    else:
        try:
            value = float(threshold)
        except ValueError:
            raise ParameterError(
                f"--threshold {threshold!r} is unknown; choose one of {', '.join(names)} or a number"
            ) from None
    if fdr is not None and value == "nfa":
        value = "fdr"
    return value


def score_config(
    *,
    method: Method,
    reference: Reference,
    k: int,
    context: Context,
    n_peers: int,
    metric: Metric | None,
    threshold: str,
    false_alarms: float,
    fdr: float | None,
    persistence: int,
    confirm: int,
    rebase: bool,
    null_scale: NullScale = "patch",
) -> ScoreConfig:
    """The scoring configuration of the command line's options."""
    return ScoreConfig(
        method=method,
        reference=reference,
        k=k,
        context=context,
        n_peers=n_peers,
        metric=metric,
        threshold=parse_threshold(threshold, fdr),
        false_alarms=false_alarms,
        fdr=SCORE.fdr if fdr is None else fdr,
        null_scale=null_scale,
        persistence=persistence,
        confirm=confirm,
        rebase=rebase,
    )


def discover_config(
    *,
    from_weight: float,
    cluster: ClusterMethod,
    n_clusters: int | None,
    rank_by: RankBy,
    rank_weight: float,
    seed: int,
) -> DiscoverConfig:
    """The discovery configuration of the command line's options."""
    return DiscoverConfig(
        from_weight=from_weight,
        cluster=cluster,
        n_clusters=n_clusters,
        rank_by=rank_by,
        rank_weight=rank_weight,
        seed=seed,
    )
