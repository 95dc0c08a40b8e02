"""PostgreSQL transitions of human in the loop: park (``active`` -> ``awaiting``, part of
`attempts.finish`), resume and the deadline sweep. Exactly once from conditional updates
(``WHERE status = 'awaiting'``): of two resumes, or a resume and the sweep, the row lock makes
the later one find the job in another state."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

from ...errors import JobNotFound, JobStateError
from ...job import Job, JobState
from ..awaiting import AWAIT_TIMEOUT
from ..base import Recovered
from . import batches as bt
from . import jobs as ops
from .sql import NOW, Conn, Schema

if TYPE_CHECKING:
    from ..outcomes import Encoded
    from .attempts import Ended

_PARK = (
    "UPDATE {s}.jobs SET status = 'awaiting', lease_expires_at = NULL, worker = NULL, "
    "prompt = %s, on_timeout = %s, await_data = %s, await_deadline = %s "
    "WHERE id = %s AND token = %s AND status = 'active' "
    "RETURNING queue, task, tenant, attempt, flow, started_at"
)
_RESUME = (
    "UPDATE {s}.jobs SET status = 'queued', input = %s, resumes = resumes + 1, "
    "attempt = attempt - 1, await_deadline = NULL, scheduled_for = %s "
    "WHERE id = %s AND status = 'awaiting' RETURNING queue, task, tenant, flow"
)


async def park(conn: Conn, s: Schema, e: Ended, o: Encoded) -> bool:
    """The attempt ``o`` (kind await) parks its job. False: the attempt is not held."""
    deadline = None if o.timeout is None else e.now + o.timeout
    cur = await conn.execute(
        s(_PARK), (o.prompt, o.on_timeout, o.await_data, deadline, o.job_id, o.token)
    )
    row = await cur.fetchone()
    if row is None:
        return False
    queue, task, tenant, attempt, flow, started = row
    if flow is not None:
        e.left.append((queue, flow, None, started))
    e.deltas[(queue, "active")] -= 1
    e.deltas[(queue, "awaiting")] += 1
    data = {"attempt": attempt, "deadline": deadline, "on_timeout": o.on_timeout}
    e.events.append(("awaiting", o.job_id, queue, task, tenant, e.now, orjson.dumps(data).decode()))
    return True


async def _resume(
    conn: Conn, s: Schema, now: float, job_id: str, data: str | None, reason: str | None
) -> bool:
    cur = await conn.execute(s(_RESUME), (data, now, job_id))
    row = await cur.fetchone()
    if row is None:
        return False
    queue, task, tenant, flow = row
    if flow is not None:
        from . import flows

        await flows.lock(conn, s, [queue])
        await flows.refresh_heads(conn, s, [(queue, flow)])
    await ops.write_deltas(conn, s, Counter({(queue, "awaiting"): -1, (queue, "queued"): 1}))
    event = "{}" if reason is None else f'{{"reason":"{reason}"}}'
    await ops.add_events(conn, s, [("resumed", job_id, queue, task, tenant, now, event)])
    await conn.execute("SELECT pg_notify(%s, %s)", (s.channel, f"w:{queue}"))
    return True


async def resume(conn: Conn, s: Schema, job_id: str, tenant: str | None, data: str | None) -> Job:
    job = await ops.get(conn, s, job_id, tenant)
    if job is None:
        raise JobNotFound(job_id)
    t = await ops.now(conn)
    if job.status is not JobState.AWAITING or not await _resume(conn, s, t, job_id, data, None):
        current = await ops.get(conn, s, job_id)
        raise JobStateError(job_id, (current or job).status.value, "resume")
    out = await ops.get(conn, s, job_id)
    assert out is not None
    return out


_DUE = (
    "FROM {s}.jobs WHERE status = 'awaiting' AND await_deadline IS NOT NULL "
    "AND await_deadline <= %s"
)


async def any_due(conn: Conn, s: Schema) -> bool:
    """Whether an awaiting job is past its deadline (one probe of ``jobs_await_due``)."""
    cur = await conn.execute(s(f"SELECT 1 {_DUE.replace('%s', NOW)} LIMIT 1"))
    return await cur.fetchone() is not None


async def expire(conn: Conn, s: Schema) -> list[Recovered]:
    """Apply ``on_timeout`` to the awaiting jobs past their deadline (locked, SKIP LOCKED)."""
    t = await ops.now(conn)
    cur = await conn.execute(
        s(f"SELECT id, queue, task, tenant, on_timeout, await_data, attempt, batch {_DUE} "
          "ORDER BY await_deadline LIMIT 1000 FOR UPDATE SKIP LOCKED"),
        (t,),
    )  # fmt: skip
    out: list[Recovered] = []
    deltas: Counter[tuple[str, str]] = Counter()
    events: list[tuple[Any, ...]] = []
    ended: Counter[tuple[str, str]] = Counter()
    for job_id, queue, task, tenant, policy, data, attempt, batch in await cur.fetchall():
        if policy == "resume":
            await _resume(conn, s, t, job_id, data, "timeout")
            out.append(Recovered(job_id, queue, JobState.QUEUED))
            continue
        if policy == "cancel":
            await conn.execute(
                s("UPDATE {s}.jobs SET status = 'cancelled', finished_at = %s, "
                  "await_deadline = NULL WHERE id = %s"),
                (t, job_id),
            )  # fmt: skip
            state, brief = JobState.CANCELLED, {"from": "awaiting", "reason": "timeout"}
        else:
            error = {"type": AWAIT_TIMEOUT, "message": f"no input arrived by the deadline "
                     f"(on_timeout={policy!r})"}  # fmt: skip
            await conn.execute(
                s("UPDATE {s}.jobs SET status = 'failed', finished_at = %s, error = %s, "
                  "await_deadline = NULL WHERE id = %s"),
                (t, orjson.dumps(error).decode(), job_id),
            )  # fmt: skip
            state = JobState.FAILED
            brief = {"attempt": attempt, "error": error, "reason": "timeout"}
        deltas[(queue, "awaiting")] -= 1
        deltas[(queue, state.value)] += 1
        if batch is not None:
            ended[(batch, state.value)] += 1
        events.append((state.value, job_id, queue, task, tenant, t, orjson.dumps(brief).decode()))
        out.append(Recovered(job_id, queue, state))
    await ops.write_deltas(conn, s, deltas)
    await ops.add_events(conn, s, events)
    if ended:
        await bt.settle(conn, s, t, ended)
    return out
