"""The analyst's labels: ``feedback.sqlite`` inside each run folder.

One table, ``labels(kind, key, label, updated)``: ``kind`` is ``event`` (``key`` = the ``event_id``) or ``type``
(``key`` = the cluster number as text). ``label`` is ``relevant`` or ``irrelevant``; clearing a label deletes its
row. The database runs in WAL mode and every change is one ``BEGIN IMMEDIATE`` transaction on its own connection,
so concurrent writers (several browser tabs, several server threads) queue instead of losing writes, and a killed
server leaves the last committed state. The file is created on the first label, never before.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from changescope.errors import CorruptFileError, ParameterError

__all__ = ["FEEDBACK_FILE", "FeedbackStore", "Label", "LabelValue"]

FEEDBACK_FILE = "feedback.sqlite"
LabelValue = Literal["relevant", "irrelevant"]
_KINDS = ("event", "type")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    kind TEXT NOT NULL CHECK (kind IN ('event', 'type')),
    key TEXT NOT NULL,
    label TEXT NOT NULL CHECK (label IN ('relevant', 'irrelevant')),
    updated TEXT NOT NULL,
    PRIMARY KEY (kind, key)
)
"""


@dataclass(frozen=True)
class Label:
    """One stored label.

    Attributes:
        kind: ``event`` or ``type``.
        key: The event id, or the cluster number as text.
        label: ``relevant`` or ``irrelevant``.
        updated: When it was set (ISO 8601, UTC).
    """

    kind: str
    key: str
    label: str
    updated: str


class FeedbackStore:
    """Labels of one run folder, read and written through SQLite.

    Args:
        run_dir: The run folder; the database is ``run_dir / feedback.sqlite``.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / FEEDBACK_FILE
        self._init_lock = threading.Lock()
        self._ready = False

    @contextmanager
    def _connect(self, write: bool) -> Iterator[sqlite3.Connection]:
        if not write and not self.path.exists():
            con = sqlite3.connect(":memory:")
            con.execute(_SCHEMA)
        else:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            with self._init_lock:
                if not self._ready:
                    con.execute("PRAGMA journal_mode=WAL")
                    con.execute(_SCHEMA)
                    self._ready = True
        try:
            yield con
        except sqlite3.DatabaseError as err:
            raise CorruptFileError(f"cannot use the labels in {str(self.path)!r}: {err}; move the file away") from err
        finally:
            con.close()

    def labels(self) -> list[Label]:
        """Every label, events first, by key."""
        with self._connect(write=False) as con:
            rows = con.execute("SELECT kind, key, label, updated FROM labels ORDER BY kind, key").fetchall()
        return [Label(*map(str, r)) for r in rows]

    def as_maps(self) -> tuple[dict[str, str], dict[int, str]]:
        """``({event_id: label}, {cluster: label})``."""
        events: dict[str, str] = {}
        types: dict[int, str] = {}
        for lab in self.labels():
            if lab.kind == "event":
                events[lab.key] = lab.label
            else:
                types[int(lab.key)] = lab.label
        return events, types

    def set(self, kind: str, key: str, label: str | None) -> Label | None:
        """Store (or, with ``label=None``, remove) one label, atomically; returns what is now stored.

        Raises:
            ParameterError: Unknown kind or label.
        """
        if kind not in _KINDS:
            raise ParameterError(f"label kind {kind!r} must be one of {_KINDS}")
        if label not in ("relevant", "irrelevant", None):
            raise ParameterError(f"label {label!r} must be relevant, irrelevant or none")
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self._connect(write=True) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                if label is None:
                    con.execute("DELETE FROM labels WHERE kind = ? AND key = ?", (kind, key))
                else:
                    con.execute(
                        "INSERT INTO labels (kind, key, label, updated) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (kind, key) DO UPDATE SET label = excluded.label, updated = excluded.updated",
                        (kind, key, label, now),
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return None if label is None else Label(kind, key, label, now)
