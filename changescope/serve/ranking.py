"""How the analyst's labels change the ranking and the similar-changes query.

- **Ranking.** Changes are ordered in tiers, each kept in the run's own order (``rank``): changes marked relevant,
  then unlabelled changes of types marked relevant, then unlabelled changes, then changes of types marked
  irrelevant, then changes marked irrelevant. An event's own label overrides its type's. So a type marked
  irrelevant drops below everything the analyst has not dismissed, and nothing is ever hidden.
- **Query.** "Find similar" starts from the change's own vector ``q``; with labels it becomes Rocchio's relevance
  feedback query ``q + beta * mean(relevant) - gamma * mean(irrelevant)`` over unit vectors, ``beta = gamma =``
  :data:`RELEVANT_WEIGHT` / :data:`IRRELEVANT_WEIGHT` (0.75), the relevant changes being those marked relevant that
  can be compared with ``q`` (same vector size). Results then leave out changes marked irrelevant, and changes of
  types marked irrelevant. Measured by ``benchmarks/feedback_search.py`` (precision@10, one relevant and one
  irrelevant label per query): GeoVibes' ``2 * mean(q, relevant) - mean(irrelevant)`` (beta = gamma = 1) lifted
  precision most on AOI seeds 0-3 (0.516 -> 0.594) but lowered it for deforestation (0.595 -> 0.571) and
  construction (0.575 -> 0.565) there, and for construction on seeds 4-7 (0.451 -> 0.443): one dismissed change
  pushed the query off its own type. 0.75 was chosen on seeds 0-3 (0.587, no type below its unlabelled precision)
  and held on seeds 4-7 (0.460 -> 0.506, no type below).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["IRRELEVANT_WEIGHT", "RELEVANT_WEIGHT", "TIERS", "feedback_query", "feedback_tiers", "label_of"]

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


RELEVANT_WEIGHT = 0.75
"""Rocchio's ``beta``: the weight of the mean of the changes marked relevant (module docstring)."""
IRRELEVANT_WEIGHT = 0.75
"""Rocchio's ``gamma``: the weight of the mean of the changes marked irrelevant (module docstring)."""


def feedback_query(
    query: NDArray[Any],
    relevant: NDArray[Any] | None = None,
    irrelevant: NDArray[Any] | None = None,
    beta: float = RELEVANT_WEIGHT,
    gamma: float = IRRELEVANT_WEIGHT,
) -> NDArray[np.float32]:
    """The search vector ``q + beta * mean(relevant) - gamma * mean(irrelevant)`` over unit vectors (Rocchio).

    Without labels the result is the query as a unit vector.

    Args:
        query: ``(D,)`` the change searched from.
        relevant: ``(n, D)`` changes marked relevant (other than the query).
        irrelevant: ``(m, D)`` changes marked irrelevant.
        beta: The weight of the relevant changes' mean.
        gamma: The weight of the irrelevant changes' mean.
    """
    v = _unit(np.asarray(query).reshape(1, -1))[0]
    if relevant is not None and len(relevant):
        v = v + beta * _unit(np.asarray(relevant)).mean(axis=0)
    if irrelevant is not None and len(irrelevant):
        v = v - gamma * _unit(np.asarray(irrelevant)).mean(axis=0)
    return np.asarray(v, dtype=np.float32)
