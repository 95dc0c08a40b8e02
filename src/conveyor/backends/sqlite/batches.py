"""SQLite batch records: create/add members, count final members, fire the callbacks.

Everything happens inside the transaction of the transition that changes a member, so a batch
fires exactly once: the member's final transition adds it to the record's counts, and when that
makes every member ended the callbacks are inserted and ``fired_at`` set in the same commit. A
second finisher (another worker, a resent outcome) matches no active row and counts nothing; a
crash before the commit undoes the member's transition too.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import BatchClosed, BatchNotFound, ValidationError
from ..base import BatchCounts, EnqueueResult, NewJob
from ..batches import (
    FINAL,
    BatchRecord,
    NewBatch,
    callback_jobs,
    callback_states,
    encode_callbacks,
)
from . import ops

_COLS = "tenant, created_at, total, completed, failed, cancelled, callbacks, fired_at, expires_at"


def enqueue(
    conn: sqlite3.Connection,
    now: float,
    batch: NewBatch,
    jobs: Sequence[NewJob],
    max_queued: Mapping[str, int] | None,
) -> EnqueueResult:
    """`BatchStore.enqueue_batch` in one transaction."""
    row = conn.execute("SELECT tenant, fired_at FROM batches WHERE id = ?", (batch.id,)).fetchone()
    if batch.create:
        if row is not None:
            raise ValidationError(f"batch {batch.id!r} exists already", field="batch")
        conn.execute(
            "INSERT INTO batches (id, tenant, created_at, callbacks, ttl) VALUES (?, ?, ?, ?, ?)",
            (batch.id, batch.tenant, now, encode_callbacks(batch.callbacks), batch.ttl),
        )
    elif row is None or row[0] != batch.tenant:
        raise BatchNotFound(batch.id)
    elif row[1] is not None:
        raise BatchClosed(batch.id)
    res = ops.enqueue(conn, now, jobs, max_queued)
    made = sum(res.created)
    conn.execute("UPDATE batches SET total = total + ? WHERE id = ?", (made, batch.id))
    _fire_if_ended(conn, now, batch.id)
    return res


def settle(conn: sqlite3.Connection, now: float, ended: Counter[tuple[str, str]]) -> bool:
    """Members of batches reached a final state: ``ended`` counts them per (batch, state).
    Batches without a record (no callbacks) match no row. True: callbacks were enqueued."""
    for (batch, state), n in ended.items():
        if state in FINAL and n:
            conn.execute(
                f"UPDATE batches SET {state} = {state} + ? WHERE id = ? AND fired_at IS NULL",
                (n, batch),
            )
    fired = False
    for batch in {b for b, _ in ended}:
        fired = _fire_if_ended(conn, now, batch) or fired
    return fired


def reopen(conn: sqlite3.Connection, batch: str, state: str) -> None:
    """A member left final ``state`` (a manual retry): it counts as running again while the
    callbacks have not fired; after they fired, the record keeps what they were given."""
    if state in FINAL:
        conn.execute(
            f"UPDATE batches SET {state} = {state} - 1 WHERE id = ? AND fired_at IS NULL", (batch,)
        )


def _fire_if_ended(conn: sqlite3.Connection, now: float, batch: str) -> bool:
    row = conn.execute(
        "SELECT total, completed, failed, cancelled, callbacks, ttl FROM batches "
        "WHERE id = ? AND fired_at IS NULL AND completed + failed + cancelled >= total",
        (batch,),
    ).fetchone()
    if row is None:
        return False
    total, completed, failed, cancelled, callbacks, _ttl = row
    counts = {"completed": completed, "failed": failed, "cancelled": cancelled}
    jobs = callback_jobs(batch, callbacks, counts, total)
    if jobs:
        # Callbacks are never refused by a full queue (no max_queued): losing one is worse.
        ops.enqueue(conn, now, jobs)
    conn.execute(
        "UPDATE batches SET fired_at = ?, expires_at = ? + ttl WHERE id = ?", (now, now, batch)
    )
    return bool(jobs)


def counts(
    conn: sqlite3.Connection, now: float, batch: str, tenant: str | None
) -> BatchCounts | None:
    """The counts of a batch with a record (None: no record): final counts and total from the
    record, non-final ones from its members (retention deletes only final jobs)."""
    row = conn.execute(f"SELECT {_COLS} FROM batches WHERE id = ?", (batch,)).fetchone()
    if row is None:
        return None
    owner, created, total, completed, failed, cancelled, callbacks, fired_at, expires = row
    if tenant is not None and owner != tenant:
        return BatchCounts(batch, {}, 0, None, None, now)
    c: dict[str, Any] = {"completed": completed, "failed": failed, "cancelled": cancelled}
    if fired_at is None:
        for status, n in conn.execute(
            "SELECT status, count(*) FROM jobs WHERE batch = ? AND status NOT IN "
            "('completed', 'failed', 'cancelled') GROUP BY status",
            (batch,),
        ):
            c[status] = n
    counted = {s: n for s, n in c.items() if n}
    fired = fired_at is not None
    rec = BatchRecord(created, fired, fired_at, expires,
                      callback_states(callbacks, fired, c, total))  # fmt: skip
    last = fired_at if fired else None
    return BatchCounts(batch, counted, total, created, last, now, rec)


def expire(conn: sqlite3.Connection, now: float) -> int:
    """Delete batch records past their expiry."""
    return conn.execute("DELETE FROM batches WHERE expires_at < ?", (now,)).rowcount
