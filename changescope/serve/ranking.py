"""How the analyst's labels change the ranking and the similar-changes query.

- **Ranking.** Changes are ordered in tiers, each kept in the run's own order (``rank``): changes marked relevant,
  then unlabelled changes of types marked relevant, then unlabelled changes, then changes of types marked
  irrelevant, then changes marked irrelevant. An event's own label overrides its type's. So a type marked
  irrelevant drops below everything the analyst has not dismissed, and nothing is ever hidden.
- **Query.** "Find similar" starts from the change's own vector; with labels it becomes
  ``2 * mean(positives) - w * mean(negatives)`` over unit vectors, the positives being the query change and every
  change marked relevant among those that can be compared with it (same vector size), the negatives the changes
  marked irrelevant. GeoVibes uses ``w = 1``; here ``w =`` :data:`NEGATIVE_WEIGHT` (0.5), as Rocchio's relevance
  feedback weighs negatives below positives: on ``benchmarks/feedback_search.py`` (4 synthetic AOIs, one relevant
  and one irrelevant label per query) ``w = 1`` lifted precision@10 most overall (0.516 -> 0.594) but lowered it
  for deforestation (0.595 -> 0.571), one dismissed change pushing the query off its own type; ``w = 0.5`` gave
  0.566 overall and 0.600 for deforestation. Construction stayed just below its unlabelled precision with either
  (0.565 against 0.575). Results then leave out changes marked irrelevant, and changes of types marked irrelevant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["NEGATIVE_WEIGHT", "TIERS", "feedback_query", "feedback_tiers", "label_of"]

TIERS = ("relevant", "relevant type", "unlabelled", "irrelevant type", "irrelevant")


def label_of(event_id: str, cluster: int, events: Mapping[str, str], types: Mapping[int, str]) -> tuple[Any, Any]:
    """``(label, source)`` of one change: its own label (source ``event``), else its type's (``type``), else None."""
    if event_id in events:
        return events[event_id], "event"
    if cluster >= 0 and cluster in types:
        return types[cluster], "type"
    return None, None


def feedback_tiers(
    event_ids: Sequence[str], clusters: Sequence[int], events: Mapping[str, str], types: Mapping[int, str]
) -> NDArray[np.int64]:
    """The tier (index into :data:`TIERS`) of every change."""
    out = np.full(len(event_ids), 2, dtype=np.int64)
    for i, (eid, c) in enumerate(zip(event_ids, clusters, strict=True)):
        label, source = label_of(str(eid), int(c), events, types)
        if label is not None:
            out[i] = (0 if label == "relevant" else 4) if source == "event" else (1 if label == "relevant" else 3)
    return out


def _unit(v: NDArray[Any]) -> NDArray[np.float32]:
    a = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return np.asarray(a / np.where(n > 0, n, 1.0), dtype=np.float32)


NEGATIVE_WEIGHT = 0.5
"""The weight ``w`` of the irrelevant changes in the feedback query (module docstring)."""


def feedback_query(
    query: NDArray[Any],
    relevant: NDArray[Any] | None = None,
    irrelevant: NDArray[Any] | None = None,
    negative_weight: float = NEGATIVE_WEIGHT,
) -> NDArray[np.float32]:
    """The search vector: ``2 * mean(positives) - negative_weight * mean(negatives)`` over unit vectors.

    The query is a positive; without labels the result is the query as a unit vector.

    Args:
        query: ``(D,)`` the change searched from.
        relevant: ``(n, D)`` changes marked relevant (the query itself may be among them).
        irrelevant: ``(m, D)`` changes marked irrelevant.
        negative_weight: The weight ``w`` of the irrelevant changes' mean.
    """
    q = _unit(np.asarray(query).reshape(1, -1))
    pos = q if relevant is None or not len(relevant) else np.vstack([q, _unit(np.asarray(relevant))])
    if irrelevant is None or not len(irrelevant):
        return np.asarray(pos.mean(axis=0), dtype=np.float32)
    neg = _unit(np.asarray(irrelevant))
    return np.asarray(2.0 * pos.mean(axis=0) - negative_weight * neg.mean(axis=0), dtype=np.float32)
