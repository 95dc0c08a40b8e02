"""PostgreSQL batch records: create / add members, count final members, fire the callbacks, in
the transaction of the member's own transition (as on SQLite): the record's row lock orders the
members of one batch that end at once, and the one that makes every member ended inserts the
callbacks and sets ``fired_at`` in its commit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import BatchClosed, BatchNotFound, ValidationError
from ..base import BatchCounts, EnqueueResult, NewJob
from ..batches import FINAL, BatchRecord, NewBatch, callback_jobs, callback_states, encode_callbacks
from . import enqueue as enq
from . import jobs as ops
from .sql import Conn, Schema

_COLS = "tenant, created_at, total, completed, failed, cancelled, callbacks, fired_at, expires_at"


async def enqueue(
    conn: Conn,
    s: Schema,
    batch: NewBatch,
    jobs: Sequence[NewJob],
    max_queued: Mapping[str, int] | None,
) -> EnqueueResult:
    """`BatchStore.enqueue_batch` in the caller's transaction."""
    t = await ops.now(conn)
    cur = await conn.execute(
        s("SELECT tenant, fired_at FROM {s}.batches WHERE id = %s FOR UPDATE"), (batch.id,)
    )
    row = await cur.fetchone()
    if batch.create:
        if row is not None:
            raise ValidationError(f"batch {batch.id!r} exists already", field="batch")
        cur = await conn.execute(
            s("INSERT INTO {s}.batches (id, tenant, created_at, callbacks, ttl) "
              "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"),
            (batch.id, batch.tenant, t, encode_callbacks(batch.callbacks), batch.ttl),
        )  # fmt: skip
        if cur.rowcount == 0:
            raise ValidationError(f"batch {batch.id!r} exists already", field="batch")
    elif row is None or row[0] != batch.tenant:
        raise BatchNotFound(batch.id)
    elif row[1] is not None:
        raise BatchClosed(batch.id)
    res = await enq.enqueue(conn, s, jobs, max_queued, at=t)
    await conn.execute(
        s("UPDATE {s}.batches SET total = total + %s WHERE id = %s"), (sum(res.created), batch.id)
    )
    await _fire_if_ended(conn, s, t, batch.id)
    return res


async def settle(conn: Conn, s: Schema, now: float, ended: Counter[tuple[str, str]]) -> bool:
    """Members of batches reached a final state (``ended``: per (batch, state)). Batches
    without a record match no row. True: callbacks were enqueued."""
    for (batch, state), n in sorted(ended.items()):
        if state in FINAL and n:
            await conn.execute(
                s(f"UPDATE {{s}}.batches SET {state} = {state} + %s "
                  "WHERE id = %s AND fired_at IS NULL"),
                (n, batch),
            )  # fmt: skip
    fired = False
    for batch in sorted({b for b, _ in ended}):
        fired = await _fire_if_ended(conn, s, now, batch) or fired
    return fired


async def reopen(conn: Conn, s: Schema, batch: str, state: str) -> None:
    """A member left final ``state`` (a manual retry): running again while the callbacks
    have not fired."""
    if state in FINAL:
        await conn.execute(
            s(f"UPDATE {{s}}.batches SET {state} = {state} - 1 WHERE id = %s AND fired_at IS NULL"),
            (batch,),
        )


async def _fire_if_ended(conn: Conn, s: Schema, now: float, batch: str) -> bool:
    cur = await conn.execute(
        s("SELECT total, completed, failed, cancelled, callbacks FROM {s}.batches "
          "WHERE id = %s AND fired_at IS NULL AND completed + failed + cancelled >= total"),
        (batch,),
    )  # fmt: skip
    row = await cur.fetchone()
    if row is None:
        return False
    total, completed, failed, cancelled, callbacks = row
    counts = {"completed": completed, "failed": failed, "cancelled": cancelled}
    jobs = callback_jobs(batch, callbacks, counts, total)
    if jobs:  # never refused by a full queue: losing a callback is worse
        await enq.enqueue(conn, s, jobs, at=now)
    await conn.execute(
        s("UPDATE {s}.batches SET fired_at = %s, expires_at = %s + ttl WHERE id = %s"),
        (now, now, batch),
    )
    return bool(jobs)


async def counts(
    conn: Conn, s: Schema, now: float, batch: str, tenant: str | None
) -> BatchCounts | None:
    """Counts of a batch with a record (None: no record)."""
    cur = await conn.execute(s(f"SELECT {_COLS} FROM {{s}}.batches WHERE id = %s"), (batch,))
    row = await cur.fetchone()
    if row is None:
        return None
    owner, created, total, completed, failed, cancelled, callbacks, fired_at, expires = row
    if tenant is not None and owner != tenant:
        return BatchCounts(batch, {}, 0, None, None, now)
    c: dict[str, Any] = {"completed": completed, "failed": failed, "cancelled": cancelled}
    if fired_at is None:
        cur = await conn.execute(
            s("SELECT status, count(*) FROM {s}.jobs WHERE batch = %s AND status NOT IN "
              "('completed', 'failed', 'cancelled') GROUP BY status"),
            (batch,),
        )  # fmt: skip
        for status, n in await cur.fetchall():
            c[status] = n
    fired = fired_at is not None
    rec = BatchRecord(created, fired, fired_at, expires,
                      callback_states(callbacks, fired, c, total))  # fmt: skip
    return BatchCounts(batch, {k: n for k, n in c.items() if n}, total, created,
                       fired_at if fired else None, now, rec)  # fmt: skip


async def expire(conn: Conn, s: Schema, now: float) -> int:
    cur = await conn.execute(s("DELETE FROM {s}.batches WHERE expires_at < %s"), (now,))
    return int(cur.rowcount)
