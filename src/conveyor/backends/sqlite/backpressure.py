"""Backpressure on SQLite: a queue's ``max_queued`` checked inside the enqueue's (or manual
retry's) own write transaction, against the maintained ``counts`` rows (two primary-key
lookups, never a scan of ``jobs``), so no racing producer can store past the limit.

What counts is a queue's waiting jobs: ``queued`` + ``scheduled`` (delays and retry backoffs).
The limit a producer enforced is recorded in ``conveyor_meta`` (``max_queued:<queue>``) for
`stats` readers that do not have the producer's app.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping

from ...errors import QueueFull

WAITING = (
    "SELECT ifnull(sum(n), 0) FROM counts WHERE queue = ? AND status IN ('queued', 'scheduled')"
)
_RECORD = (
    "INSERT INTO conveyor_meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE value != excluded.value"
)
_PREFIX = "max_queued:"


def waiting(conn: sqlite3.Connection, queue: str) -> int:
    """The queue's waiting jobs (queued + scheduled), O(1)."""
    return int(conn.execute(WAITING, (queue,)).fetchone()[0])


def check(conn: sqlite3.Connection, new: Counter[str], limits: Mapping[str, int]) -> None:
    """Raise `QueueFull` (before anything is written) if the ``new`` jobs per queue do not all
    fit under their queue's limit; record each enforced limit. A queue getting no new job (an
    idempotent duplicate only) is never refused, even past its limit."""
    for queue, n in new.items():
        limit = limits.get(queue)
        if limit is None or n <= 0:
            continue
        count = waiting(conn, queue)
        if count + n > limit:
            raise QueueFull(queue, limit, count, n)
    for queue, n in new.items():
        limit = limits.get(queue)
        if limit is not None and n > 0:
            conn.execute(_RECORD, (_PREFIX + queue, str(limit)))


def recorded(conn: sqlite3.Connection) -> dict[str, int]:
    """The limits producers last enforced, by queue."""
    rows = conn.execute(
        "SELECT key, value FROM conveyor_meta WHERE key >= ? AND key < ?",
        (_PREFIX, _PREFIX[:-1] + chr(ord(":") + 1)),
    )
    return {key[len(_PREFIX) :]: int(value) for key, value in rows}
