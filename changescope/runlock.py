"""The run folder's lock (``.changescope.lock``): one writer at a time, on disk and in object stores.

A writer (``run``, ``score``, ``discover``) creates the lock file only if it is absent, with its process id, host,
command and start time, and removes it when done. A second writer is refused with the first one's details; a lock
whose process is gone (same host, dead pid: a killed run) is taken over.

"Only if absent" is ``O_CREAT | O_EXCL`` on disk. In an object store it is a conditional PUT (``If-None-Match: *``,
fsspec's exclusive ``"xb"`` mode), which AWS S3, MinIO and moto honour: of two writers racing for the lock, exactly
one PUT succeeds. A store that ignores the header accepts both, so it gives no mutual exclusion (the run still
writes every file atomically). A lock left by a killed run on another host must be deleted by hand, as on disk.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from changescope.errors import ParameterError
from changescope.storepath import AnyPath, StorePath, store_errors

__all__ = ["RunLockedError", "hold", "holder"]


class RunLockedError(ParameterError):
    """Another process is writing into the run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _create(path: AnyPath, me: dict[str, Any]) -> None:
    """Create the lock file only if it is absent (FileExistsError otherwise): O_EXCL, or a conditional PUT."""
    if isinstance(path, StorePath):
        with store_errors(path, "write to"), path.open("xb") as fh:
            fh.write(json.dumps(me).encode())
        return
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as fh:
        json.dump(me, fh)


def holder(path: AnyPath) -> dict[str, Any] | None:
    """Who holds the lock at ``path`` (``pid``, ``host``, ``command``, ``started``); ``None`` when it is stale.

    An unreadable lock counts as held (by ``pid "?"``): it is never taken over blindly.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"pid": "?", "started": "?"}
    if not isinstance(data, dict):
        return {"pid": "?", "started": "?"}
    pid = data.get("pid")
    if data.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return None
    return data


@contextmanager
def hold(root: AnyPath, path: AnyPath, command: str = "run") -> Iterator[None]:
    """Hold the lock ``path`` of the run folder ``root`` for the block; refuse when another live process holds it.

    Raises:
        RunLockedError: Another changescope process writes into this folder.
        ParameterError: The lock cannot be written (a read-only folder, denied access to the bucket).
    """
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
    me["started"] = datetime.now(UTC).isoformat(timespec="seconds")
    for _ in range(3):
        try:
            _create(path, me)
        except FileExistsError:
            other = holder(path)
            if other is None:  # stale: its process is gone
                path.unlink(missing_ok=True)
                continue
            raise RunLockedError(
                f"{str(root)!r} is in use by another changescope {other.get('command', 'run')} (pid "
                f"{other.get('pid')}, started {other.get('started')}); wait for it to finish or choose another "
                f"--out (delete {str(path)!r} if no such process runs)"
            ) from None
        except OSError as err:
            raise ParameterError(
                f"cannot write into --out {str(root)!r} ({err.strerror or err}); choose a writable folder"
            ) from None
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
