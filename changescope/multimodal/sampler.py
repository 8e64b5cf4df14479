"""A batch sampler that holds the share of negatives (changed pairs) in every batch at a target (methods.md §3).

In the method's terms a *positive* pair is unchanged (label 0: its optical and SAR views are pulled together) and a
*negative* pair is changed (label 1: pushed apart, and a negative of every unchanged anchor in the InfoNCE). Damage
is rare, so batches drawn at the natural ratio would hold few negatives; :class:`RatioBatchSampler` puts
``round(negative_share * batch_size)`` changed pairs (0.8 by default, published) and the rest unchanged pairs in
every batch.

Choices not published, documented here:

- each class is drawn **without replacement** from its own seeded permutation; when a class runs out, a new
  permutation of it starts (so the rarer class repeats within an epoch, the commoner one is not exhausted);
- an epoch has ``num_batches`` batches, by default ``labelled windows // batch_size`` (at least 1);
- items with label -1 (no truth) are never drawn; each batch is shuffled so the classes are interleaved;
- the draws of epoch ``e`` depend only on ``(seed, e)`` (:meth:`RatioBatchSampler.set_epoch`), so a resumed run
  sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from changescope.errors import ParameterError

__all__ = ["RatioBatchSampler"]


class _Cycle:
    """Draws indices of one class without replacement, reshuffling when exhausted."""

    def __init__(self, pool: NDArray[np.int64], rng: np.random.Generator) -> None:
        self.pool, self.rng = pool, rng
        self.order = rng.permutation(pool)
        self.pos = 0

    def take(self, n: int) -> NDArray[np.int64]:
        out: list[NDArray[np.int64]] = []
        while n > 0:
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(self.pool), 0
            k = min(n, len(self.order) - self.pos)
            out.append(self.order[self.pos : self.pos + k])
            self.pos, n = self.pos + k, n - k
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


class RatioBatchSampler:
    """Batches of dataset indices with a fixed share of changed pairs, seeded and deterministic.

    Usable as ``DataLoader(dataset, batch_sampler=RatioBatchSampler(dataset.labels))``.

    Args:
        labels: ``(n,)`` labels of the dataset: 1 = changed (negative), 0 = unchanged (positive), -1 = skipped.
        batch_size: Indices per batch, >= 1.
        negative_share: Target share of changed pairs in each batch, in ``[0, 1]``.
        seed: Seed of the draws.
        num_batches: Batches per epoch; ``None`` = labelled items // ``batch_size`` (at least 1).

    Attributes:
        n_negative: Changed pairs per batch, ``round(negative_share * batch_size)``.
        epoch: Epoch whose draws :meth:`__iter__` yields (:meth:`set_epoch`).

    Raises:
        ParameterError: Bad sizes or share, labels other than -1/0/1, or a class needed by the share that the
            labels do not hold.
    """

    def __init__(
        self,
        labels: Sequence[int] | NDArray[np.integer],
        batch_size: int = 64,
        negative_share: float = 0.8,
        *,
        seed: int = 0,
        num_batches: int | None = None,
    ) -> None:
        y = np.asarray(labels)
        if y.ndim != 1 or not (y.size == 0 or np.issubdtype(y.dtype, np.integer)):
            raise ParameterError(f"labels must be a 1-d integer array, got dtype {y.dtype} and shape {y.shape!r}")
        unknown = sorted(set(np.unique(y).tolist()) - {-1, 0, 1})
        if unknown:
            raise ParameterError(f"labels hold {unknown!r}; use 1 (changed), 0 (unchanged) or -1 (no truth)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ParameterError(f"batch_size={batch_size!r} must be an integer >= 1")
        if not (isinstance(negative_share, int | float) and 0.0 <= negative_share <= 1.0):
            raise ParameterError(f"negative_share={negative_share!r} must lie in [0, 1] (the method uses 0.8)")
        if num_batches is not None and (isinstance(num_batches, bool) or num_batches < 1):
            raise ParameterError(f"num_batches={num_batches!r} must be an integer >= 1, or None")
        self.batch_size, self.negative_share, self.seed = batch_size, float(negative_share), int(seed)
        self._negatives = np.flatnonzero(y == 1).astype(np.int64)
        self._positives = np.flatnonzero(y == 0).astype(np.int64)
        self.n_negative = round(self.negative_share * batch_size)
        labelled = len(self._negatives) + len(self._positives)
        for name, pool, need in (
            ("changed (label 1)", self._negatives, self.n_negative),
            ("unchanged (label 0)", self._positives, batch_size - self.n_negative),
        ):
            if need > 0 and len(pool) == 0:
                raise ParameterError(
                    f"negative_share={negative_share!r} needs {need} {name} pairs per batch but the labels hold none "
                    f"({labelled} labelled of {y.size}); change negative_share or the data"
                )
        self.num_batches = max(1, labelled // batch_size) if num_batches is None else int(num_batches)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        """The batches of the current epoch, each a list of dataset indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        negatives = _Cycle(self._negatives, rng)
        positives = _Cycle(self._positives, rng) if len(self._positives) else None
        n_pos = self.batch_size - self.n_negative
        for _ in range(self.num_batches):
            parts = [negatives.take(self.n_negative) if self.n_negative else np.empty(0, dtype=np.int64)]
            if n_pos and positives is not None:
                parts.append(positives.take(n_pos))
            batch = rng.permutation(np.concatenate(parts))
            yield [int(i) for i in batch]

    @property
    def expected_share(self) -> float:
        """The share of changed pairs every batch actually holds (``n_negative / batch_size``)."""
        return self.n_negative / self.batch_size if self.batch_size else math.nan
