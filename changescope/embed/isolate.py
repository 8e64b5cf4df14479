"""Run one call in a child Python process, so that what it imports and allocates leaves with it.

The embedding imports torch, which holds about 0.5 GiB of resident memory for the life of the process, and leaves
its block buffers in the heap. A ``run`` that embeds a large series in its own process carries both into the score
stage, whose own peak then comes on top. :func:`call_in_child` runs the embedding in a fresh interpreter
(``python -m changescope.embed.isolate``) instead: the run's process never imports torch, and the child's memory is
returned to the system when it exits. The stores it writes are the same files (the embedding is deterministic), and
an interrupted child leaves a store that the next run resumes, as an interrupted in-process run does.

How it works, and why not :mod:`multiprocessing`: the call (function, arguments) is pickled to the child's standard
input; the child sends back the pickled result or exception through a pipe whose file descriptor it is given, and
inherits standard output and error (progress bars show as before). ``multiprocessing``'s ``spawn`` would import the
caller's ``__main__`` again in the child, which re-runs a user's unguarded script. The child dies with its parent
(``PR_SET_PDEATHSIG`` on Linux, elsewhere a thread watching the parent's pid), so a killed run leaves no writer
behind to race the rerun. A child that dies without an answer (killed, out of memory) raises a
:class:`~changescope.errors.ChangescopeError` naming its exit status; Ctrl-C in the parent stops the child.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from changescope.errors import ChangescopeError

__all__ = ["call_in_child"]

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` does (Linux: the kernel's parent-death signal; else a watcher)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="changescope-parent-watch", daemon=True).start()


def _message(err: BaseException) -> BaseException:
    """``err`` itself if it pickles, else a :class:`ChangescopeError` with its type and message."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # any failure to round-trip: send a plain error instead
        return ChangescopeError(f"{type(err).__name__}: {err}")
    return err


def _child_main(argv: list[str]) -> int:
    """Entry point of the child: read the call from stdin, run it, send the outcome through the given fd."""
    fd, parent = int(argv[0]), int(argv[1])
    _die_with_parent(parent)
    fn, args, kwargs = pickle.load(sys.stdin.buffer)
    try:
        outcome: tuple[bool, Any] = (True, fn(*args, **kwargs))
    except BaseException as err:  # every outcome, KeyboardInterrupt included, goes back to the parent
        outcome = (False, _message(err))
    with os.fdopen(fd, "wb") as out:
        pickle.dump(outcome, out)
    return 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the child and wait for it (killed after 10 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def call_in_child(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Return ``fn(*args, **kwargs)`` computed in a child Python process (module docstring).

    ``fn`` must be importable by name (a module-level function) and its arguments and result picklable.

    Raises:
        ChangescopeError: The child ended without an answer (its exit status is named).
        BaseException: Whatever ``fn`` raised in the child, raised again here.
    """
    payload = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "changescope.embed.isolate", str(write_fd), str(os.getpid())]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, pass_fds=(write_fd,))
    finally:
        os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as answer:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(payload)
                proc.stdin.close()
            data = answer.read()
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if not data:
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        raise ChangescopeError(
            f"the embedding process ended without an answer ({how}; out of memory?); the finished part is kept: "
            "rerun the same command to resume"
        )
    ok, value = pickle.loads(data)
    if ok:
        result: T = value
        return result
    raise value


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
