"""Overlap an in-process run's reading and writing with the encoder: a reader thread and a writer thread.

A task is *load* (read the block of one date, tile it, normalise it: :func:`~changescope.embed.pipeline.load_block`),
*encode* (forward passes and pooling: :func:`~changescope.embed.pipeline.encode_block`) and *write* (the chunks, then
the flag: :func:`~changescope.embed.pipeline.write_task`). Run one after the other, the encoder idles while a block is
read and written. In-process runs therefore load the next task in a reader thread (:class:`BlockPrefetcher`) and
write the previous one in a writer thread (:class:`BlockWriter`) while the calling thread runs the encoder. Each
thread is a one-worker :class:`concurrent.futures.ThreadPoolExecutor`, so loads and writes keep the tasks' order,
and at most one block waits ahead and one behind (memory stays bounded by the block size).

Reading (GDAL decoding, numpy) and writing (compression, file I/O) release the GIL, so they proceed while torch
computes; torch operations in these threads run single-threaded (:func:`_one_thread`). What this hides is waiting
(I/O, a GPU, cores the encoder leaves idle): on a CPU whose cores the encoder already keeps busy, the reader's work
still costs its CPU time. The results are those of the sequential path: the same functions run on the same data,
only in other threads. An exception in either thread is raised in the calling thread (at the next task at the
latest) and stops the run; a write that failed set no flag, so the store stays resumable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from types import TracebackType
from typing import Any

import torch

from changescope.embed.pipeline import Outputs, PreparedBlock, SeriesSource, TaskPlan, load_block, write_task

__all__ = ["BlockPrefetcher", "BlockWriter"]

Key = tuple[int, int, int]
"""A task: ``(date, block row, block column)``."""


def _one_thread(name: str) -> ThreadPoolExecutor:
    """A one-worker pool whose torch operations run single-threaded.

    ``torch.set_num_threads`` is per thread with torch's OpenMP backend: the calling thread keeps every core for
    the encoder, and the reader's few torch operations (normalisation) do not start a second team of threads
    competing with it for the same cores.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=torch.set_num_threads, initargs=(1,))


class BlockPrefetcher:
    """Loads the tasks' blocks ahead, in a reader thread, in the order the tasks will ask for them.

    Use as a context manager; it stands in for the :class:`~changescope.embed.pipeline.SeriesSource` given to
    :func:`~changescope.embed.pipeline.run_task`. A task that was not announced (or asked out of order) is loaded
    in the calling thread.

    Args:
        source: The series source.
        plan: The run's plan.
        order: The tasks, in the order they will be run.
        depth: Blocks loaded ahead of the one being encoded.
    """

    def __init__(self, source: SeriesSource, plan: TaskPlan, order: Sequence[Key], depth: int = 1) -> None:
        self._source = source
        self._plan = plan
        self._queue: deque[Key] = deque(order)
        self._depth = max(1, depth)
        self._ahead: dict[Key, Future[PreparedBlock]] = {}
        self._pool = _one_thread("changescope-embed-read")
        self._fill()

    def _fill(self) -> None:
        while len(self._ahead) < self._depth and self._queue:
            key = self._queue.popleft()
            self._ahead[key] = self._pool.submit(load_block, self._plan, self._source, *key)

    def load(self, plan: TaskPlan, t: int, br: int, bc: int) -> PreparedBlock:
        """Block ``(br, bc)`` of date ``t``, read and prepared (waits for the reader thread if it is not done yet).

        Raises:
            Exception: Whatever loading the block raised.
        """
        future = self._ahead.pop((t, br, bc), None)
        if future is None:
            if (t, br, bc) in self._queue:
                self._queue.remove((t, br, bc))
            self._fill()
            return load_block(plan, self._source, t, br, bc)
        self._fill()
        return future.result()

    def __enter__(self) -> BlockPrefetcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._queue.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._ahead.clear()


class BlockWriter:
    """Writes finished tasks in a writer thread, in order, one at a time, behind the encoder.

    Use as a context manager; pass :meth:`submit` as ``TaskPlan.writer``. ``submit`` first waits for the previous
    write (so one block at most waits to be written, and a failed write is raised at the next task); leaving the
    context waits for the last one. An optional ``first`` job (creating the store) runs in the writer thread
    before any write.

    Args:
        plan: The run's plan (its ``store``, ``layout`` and ``before_flag``).
        done: Called in the calling thread with the number of patches of each task once it is written and flagged.
        first: A job to run in the writer thread before the first write.
    """

    def __init__(self, plan: TaskPlan, done: Callable[[int], None], first: Callable[[], Any] | None = None) -> None:
        self._plan = plan
        self._done = done
        self._pool = _one_thread("changescope-embed-write")
        self._first: Future[Any] | None = self._pool.submit(first) if first is not None else None
        self._pending: Future[int] | None = None

    def submit(self, t: int, br: int, bc: int, outputs: Outputs) -> None:
        """Write a task's chunks and flags in the writer thread, after waiting for the previous write.

        Raises:
            Exception: Whatever the first job or the previous write raised.
        """
        self.wait()
        self._pending = self._pool.submit(write_task, self._plan, t, br, bc, outputs)

    def wait(self) -> None:
        """Wait for the first job and the pending write; report the write as done.

        Raises:
            Exception: Whatever they raised.
        """
        if self._first is not None:
            first, self._first = self._first, None
            first.result()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._done(pending.result())

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc is None:
                self.wait()
            else:
                # the run is failing already: let the last finished task land (its flag makes it count on resume),
                # and raise the original error rather than a second one from the write
                with suppress(Exception):
                    self.wait()
        finally:
            self._pool.shutdown(wait=True)
