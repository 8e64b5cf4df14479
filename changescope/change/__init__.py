"""Change scoring per patch over time: references, distance and LOF scorers, normalisation, events."""

from changescope.change.events import Events, extract_events, pick_threshold
from changescope.change.reference import reference_mask
from changescope.change.score import ChangeScorer, robust_zscore
from changescope.change.scorers import PatchDistance, PatchLOF

__all__ = [
    "ChangeScorer",
    "Events",
    "extract_events",
    "pick_threshold",
    "PatchDistance",
    "PatchLOF",
    "reference_mask",
    "robust_zscore",
]
