"""PostgreSQL attempts a worker holds: release (back to ``queued``, not charged), lease
renewal, progress reports, and recovery of expired leases (a stall, or past ``max_stalls`` a
failure through `attempts.end_failed`). An attempt is ``(job_id, token)``: a call for an
attempt that is no longer the job's current one matches no row and is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ...job import JobState
from ..base import Outcome, OutcomeKind, Recovered
from ..outcomes import encode
from . import attempts
from . import jobs as ops
from .sql import ACTIVE, NOW, Conn, Schema, arrays

# Attempts are found by id (the primary key), their status compared with ``act`` (sql.ACTIVE).
# The UPDATE checks the token again: a row it waited for may hold another attempt now. Start
# times are read before the update clears them (a breaker tells its probe apart).
RELEASE = f"""
WITH {ACTIVE},
o AS (SELECT j.id, j.token, j.started_at FROM {{s}}.jobs j
  JOIN unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS o(id, token)
  ON j.id = o.id AND j.token = o.token JOIN act ON j.status = act.status)
UPDATE {{s}}.jobs j SET status = 'queued', attempt = j.attempt - 1, lease_expires_at = NULL,
  worker = NULL, started_at = NULL, progress = NULL
FROM o, act WHERE j.id = o.id AND j.token = o.token AND j.status = act.status
RETURNING j.id, j.queue, j.flow, o.started_at
"""
# A renewal is a HOT update: lease_expires_at is in no index.
EXTEND = f"""
WITH {ACTIVE}
UPDATE {{s}}.jobs j SET lease_expires_at = {NOW} + j.lease
FROM unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS o(id, token), act
WHERE j.id = o.id AND j.token = o.token AND (j.status = act.status OR j.held)
RETURNING j.id, j.status
"""


async def release(conn: Conn, s: Schema, jobs: Sequence[tuple[str, int]]) -> int:
    """Return held attempts to ``queued`` without charging them; wakes the queues' workers."""
    if not jobs:
        return 0
    ids, tokens = arrays(jobs, 2)
    cur = await conn.execute(s(RELEASE), {"ids": ids, "tokens": tokens})
    rows = await cur.fetchall()
    t = await ops.now(conn) if rows or len(rows) < len(jobs) else 0.0
    e = attempts.Ended(t)
    for _, q, flow, started in rows:
        e.deltas[(q, "active")] -= 1
        e.deltas[(q, "queued")] += 1
        e.woke.add(q)
        if flow is not None:
            e.left.append((q, flow, None, started))
            e.requeued.append((q, flow))
    await e.apply(conn, s)
    if len(rows) < len(jobs):  # the others may be cancelled attempts still holding slots
        done = {r[0] for r in rows}
        await attempts.end_held(conn, s, t, [j for j in jobs if j[0] not in done])
    return len(rows)


async def extend(conn: Conn, s: Schema, jobs: Sequence[tuple[str, int]]) -> list[str]:
    """Renew leases (a HOT update: lease_expires_at is in no index); the ids not held."""
    if not jobs:
        return []
    ids, tokens = arrays(jobs, 2)
    cur = await conn.execute(s(EXTEND), {"ids": ids, "tokens": tokens})
    kept = {r[0] for r in await cur.fetchall() if r[1] == "active"}
    return [j for j, _ in jobs if j not in kept]


async def set_progress(
    conn: Conn, s: Schema, job_id: str, token: int, progress: dict[str, Any]
) -> bool:
    t = await ops.now(conn)
    data = orjson.dumps(progress | {"updated_at": t}).decode()
    cur = await conn.execute(
        s("WITH p AS (UPDATE {s}.jobs SET progress = %(data)s WHERE id = %(id)s AND "
          "token = %(token)s AND status = 'active' RETURNING id, queue, task, tenant) "
          "INSERT INTO {s}.events (type, job_id, queue, task, tenant, time, data) "
          "SELECT 'progress', id, queue, task, tenant, %(now)s, %(data)s FROM p RETURNING 1"),
        {"data": data, "id": job_id, "token": token, "now": t},
    )  # fmt: skip
    return await cur.fetchone() is not None


async def any_expired(conn: Conn, s: Schema) -> bool:
    """Whether an active or held attempt's lease expired (one statement, no lock)."""
    cur = await conn.execute(
        s(f"SELECT EXISTS (SELECT 1 FROM {{s}}.jobs WHERE status = 'active' "
          f"AND lease_expires_at < {NOW}) OR EXISTS (SELECT 1 FROM {{s}}.jobs WHERE held "
          f"AND lease_expires_at < {NOW})")
    )  # fmt: skip
    return bool((await cur.fetchone())[0])


async def recover(conn: Conn, s: Schema) -> list[Recovered]:
    """Expired leases: back to ``queued`` (a stall, the attempt not charged) or, past
    ``max_stalls``, failed for good through `attempts.end_failed`. Rows are locked with SKIP LOCKED:
    two recoverers never handle one job, and a job a worker is finishing right now is left
    to that worker."""
    t = await ops.now(conn)
    cur = await conn.execute(
        s("SELECT id, queue, task, tenant, stalls, max_stalls, token, flow, started_at FROM {s}.jobs "
          "WHERE status = 'active' AND lease_expires_at < %s ORDER BY seq "
          "FOR UPDATE SKIP LOCKED"),
        (t,),
    )  # fmt: skip
    rows = await cur.fetchall()
    out: list[Recovered] = []
    e = attempts.Ended(t)
    for job_id, queue, task, tenant, stalls, max_stalls, token, flow, started in rows:
        stalls += 1
        e.events.append(("stalled", job_id, queue, task, tenant, t, f'{{"stalls":{stalls}}}'))
        await conn.execute(s("UPDATE {s}.jobs SET stalls = %s WHERE id = %s"), (stalls, job_id))
        if stalls > max_stalls:
            error = {
                "type": "Stalled",
                "message": f"lease expired {stalls} times (max_stalls={max_stalls}): the worker "
                "died or blocked its event loop",
            }
            await attempts.end_failed(conn, s, e, encode(Outcome(job_id, token, OutcomeKind.FAILED,
                                                         error=error)))  # fmt: skip
            out.append(Recovered(job_id, queue, JobState.FAILED))
            continue
        await conn.execute(
            s("UPDATE {s}.jobs SET status = 'queued', attempt = attempt - 1, "
              "lease_expires_at = NULL, worker = NULL, progress = NULL WHERE id = %s"),
            (job_id,),
        )  # fmt: skip
        e.deltas[(queue, "active")] -= 1
        e.deltas[(queue, "queued")] += 1
        e.woke.add(queue)
        if flow is not None:  # a dead worker's slots are free again: no breaker verdict
            e.left.append((queue, flow, None, started))
            e.requeued.append((queue, flow))
        out.append(Recovered(job_id, queue, JobState.QUEUED))
    await e.apply(conn, s)
    # Cancelled attempts whose worker died before reporting their end.
    cur = await conn.execute(
        s("SELECT id, token FROM {s}.jobs WHERE held AND lease_expires_at < %s "
          "FOR UPDATE SKIP LOCKED"),
        (t,),
    )  # fmt: skip
    held = await cur.fetchall()
    if held:
        await attempts.end_held(conn, s, t, held)
    return out
