"""Where the score stage's dask graph runs: the embedding's scheduler, a thread pool, or this thread.

Scoring is a dask graph whose units are **dates**: a date's patches are compared with peers anywhere in the AOI, so
a block of patches is not independent of the others, but a date is, once the reference states and their neighbour
table are built (one task that every date of the same reference depends on, see
:func:`~changescope.change.context.peer_scores`). Each date task reads its own date of embeddings and returns one
score per patch, so memory is one date's working set per task in flight (:data:`GATHER_BYTES
<changescope.change.context.GATHER_BYTES>` of peer changes plus a date of embeddings), and the output is the same
whatever runs it.

:func:`score_scheduler` chooses the runner for the stage, from the embedding's settings:

- ``--scheduler ADDRESS``: the same external ``dask.distributed`` scheduler as the embedding (a client to it is the
  default client while the stage runs; workers read the Zarr store themselves);
- ``--workers N``: ``N`` threads in this process. The embedding's local cluster of worker processes is closed when
  the embedding ends; the scoring tasks share one neighbour table and one source, which threads use without copies
  (NumPy, scikit-learn and faiss release the GIL in their loops);
- neither (the default): dask's synchronous scheduler, one date at a time, as the embedding without workers; each
  date's chunks of patches then share the usable cores (:data:`~changescope.change.context.DATE_THREADS`).

:func:`compute_dates` runs a list of tasks with the scheduler in force: a ``dask.config`` scheduler, else the
default ``distributed`` client, else synchronously (never dask's implicit thread pool of one thread per core,
whose memory would grow with the core count).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from changescope.errors import ParameterError

__all__ = ["SCHEDULER_TIMEOUT_S", "compute_dates", "runs_one_at_a_time", "score_scheduler"]

SCHEDULER_TIMEOUT_S = 30
"""Seconds to wait for the ``--scheduler`` given to the run."""


def _default_client() -> Any:
    """The default ``distributed`` client of this process, or ``None`` (also when distributed is absent)."""
    try:
        import distributed
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    default_client: Any = distributed.default_client
    try:
        return default_client()
    except ValueError:
        return None


def runs_one_at_a_time() -> bool:
    """Whether :func:`compute_dates` runs its tasks one after the other in this thread.

    True under the synchronous scheduler, configured or by default: a task may then use every core itself.
    """
    import dask.config

    scheduler = dask.config.get("scheduler", None)
    if scheduler is None:
        return _default_client() is None
    return scheduler in ("synchronous", "sync", "single-threaded")


def compute_dates(tasks: Sequence[Any]) -> tuple[Any, ...]:
    """Compute dask ``tasks`` with the scheduler in force (module docstring); their results in order."""
    import dask.config
    from dask.base import compute

    if not tasks:
        return ()
    if dask.config.get("scheduler", None) is None and _default_client() is None:
        return tuple(compute(*tasks, scheduler="synchronous"))
    return tuple(compute(*tasks))


@contextmanager
def score_scheduler(workers: int | None = None, scheduler: str | None = None) -> Iterator[str]:
    """Run the score stage's graphs on the embedding's scheduler (module docstring) while the block runs.

    Args:
        workers: The run's ``--workers``: threads for the date tasks.
        scheduler: The run's ``--scheduler`` address.

    Yields:
        What runs the tasks, for ``run.json``: ``"synchronous"``, ``"threads:N"`` or ``"distributed:ADDRESS"``.

    Raises:
        ParameterError: Both are given, ``workers`` is below 1, or the scheduler cannot be reached.
    """
    import dask.config

    if workers is not None and scheduler is not None:
        raise ParameterError("give either workers= (--workers) or scheduler= (--scheduler), not both")
    if scheduler is not None:
        import distributed

        Client: Any = distributed.Client
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S, set_as_default=True)
        except (OSError, TimeoutError) as err:
            raise ParameterError(
                f"--scheduler {scheduler!r} is unreachable ({type(err).__name__} after {SCHEDULER_TIMEOUT_S} s); "
                "start it, or drop --scheduler to run here"
            ) from None
        with client, dask.config.set(scheduler=client):
            yield f"distributed:{scheduler}"
        return
    if workers is not None:
        if int(workers) < 1:
            raise ParameterError(f"workers={workers!r} must be >= 1")
        with dask.config.set(scheduler="threads", num_workers=int(workers)):
            yield f"threads:{int(workers)}"
        return
    with dask.config.set(scheduler="synchronous"):
        yield "synchronous"
