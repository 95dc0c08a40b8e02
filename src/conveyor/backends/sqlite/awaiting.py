"""SQLite transitions of human in the loop: park an attempt (``active`` -> ``awaiting``, part of
`attempts.finish`), resume (``awaiting`` -> ``queued``) and the deadline sweep.

Each runs inside the caller's `BEGIN IMMEDIATE` transaction (see `ops`). Exactly once comes
from the conditional updates: ``WHERE status = 'awaiting'`` matches for one writer only, so of
two resumes, or a resume and the sweep, the later one finds the job in another state.
Deadlines are on the backend's clock, indexed (``jobs_await_due``): the sweep reads only the
expired jobs. An awaiting member of a batch with callbacks has not ended; a timeout that fails
or cancels it ends it, counted in its batch record in the sweep's transaction (which may fire
the batch's callbacks), as a cancel or a final failure does.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

from ...errors import JobNotFound, JobStateError
from ...job import Job, JobState
from ..awaiting import AWAIT_TIMEOUT
from ..base import Recovered
from . import batches as bt
from . import flow as fl
from .ops import add_events, bump, get

if TYPE_CHECKING:
    from ..outcomes import Encoded
    from .attempts import _Ended

_PARK = (
    "UPDATE jobs SET status = 'awaiting', lease_expires_at = NULL, worker = NULL, prompt = ?, "
    "on_timeout = ?, await_data = ?, await_deadline = ? "
    "WHERE id = ? AND token = ? AND status = 'active' "
    "RETURNING queue, task, tenant, flow, started_at, attempt"
)
# The attempt that awaited is given back (attempt - 1): the run after the resume has its number.
_RESUME = (
    "UPDATE jobs SET status = 'queued', input = ?, resumes = resumes + 1, attempt = attempt - 1, "
    "await_deadline = NULL, scheduled_for = ? WHERE id = ? AND status = 'awaiting' "
    "RETURNING queue, task, tenant, flow"
)


def park(conn: sqlite3.Connection, e: _Ended, o: Encoded) -> bool:
    """The attempt ``o`` (kind await) parks its job: ``awaiting``, no lease, no worker, its
    gates' slots given back (no breaker verdict). False: the attempt is not held."""
    now = e.now
    deadline = None if o.timeout is None else now + o.timeout
    row = conn.execute(
        _PARK, (o.prompt, o.on_timeout, o.await_data, deadline, o.job_id, o.token)
    ).fetchone()
    if row is None:
        return False
    queue, task, tenant, flow, started, attempt = row
    if flow is not None:
        e.left.append((queue, flow, None, started))
    e.deltas[(queue, "active")] -= 1
    e.deltas[(queue, "awaiting")] += 1
    data = {"attempt": attempt, "deadline": deadline, "on_timeout": o.on_timeout}
    e.events.append(("awaiting", o.job_id, queue, task, tenant, now, orjson.dumps(data).decode()))
    return True


def _resume(
    conn: sqlite3.Connection, now: float, job_id: str, data: str | None, reason: str | None
) -> bool:
    row = conn.execute(_RESUME, (data, now, job_id)).fetchone()
    if row is None:
        return False
    queue, task, tenant, flow = row
    if flow is not None:
        fl.refresh_heads(conn, [(queue, flow)])
    bump(conn, Counter({(queue, "awaiting"): -1, (queue, "queued"): 1}))
    event = "{}" if reason is None else f'{{"reason":"{reason}"}}'
    add_events(conn, [("resumed", job_id, queue, task, tenant, now, event)])
    return True


def resume(
    conn: sqlite3.Connection, now: float, job_id: str, tenant: str | None, data: str | None
) -> Job:
    """`AwaitStore.resume_job`: awaiting -> queued with the decision, once."""
    job = get(conn, job_id, tenant)
    if job is None:
        raise JobNotFound(job_id)
    if job.status is not JobState.AWAITING or not _resume(conn, now, job_id, data, None):
        raise JobStateError(job_id, job.status.value, "resume")
    refreshed = get(conn, job_id)
    assert refreshed is not None
    return refreshed


_DUE = "FROM jobs WHERE status = 'awaiting' AND await_deadline IS NOT NULL AND await_deadline <= ?"


def any_due(conn: sqlite3.Connection, now: float) -> bool:
    """Whether an awaiting job is past its deadline (one probe of ``jobs_await_due``)."""
    return conn.execute(f"SELECT 1 {_DUE} LIMIT 1", (now,)).fetchone() is not None


def expire(conn: sqlite3.Connection, now: float) -> list[Recovered]:
    """`AwaitStore.expire_awaiting`: apply ``on_timeout`` to the awaiting jobs past their
    deadline (an index range: only those are read); members of batches that end are counted
    (`batches.settle`)."""
    rows = conn.execute(
        f"SELECT id, queue, task, tenant, on_timeout, await_data, attempt, batch {_DUE} "
        "ORDER BY await_deadline LIMIT 1000",
        (now,),
    ).fetchall()
    out: list[Recovered] = []
    deltas: Counter[tuple[str, str]] = Counter()
    events: list[tuple[Any, ...]] = []
    ended: Counter[tuple[str, str]] = Counter()  # (batch, final state)
    for job_id, queue, task, tenant, policy, data, attempt, batch in rows:
        if policy == "resume":
            _resume(conn, now, job_id, data, "timeout")
            out.append(Recovered(job_id, queue, JobState.QUEUED))
            continue
        if policy == "cancel":
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, await_deadline = NULL "
                "WHERE id = ?",
                (now, job_id),
            )
            state, brief = JobState.CANCELLED, {"from": "awaiting", "reason": "timeout"}
        else:  # 'fail' (and anything unknown: never left awaiting for ever)
            error = {"type": AWAIT_TIMEOUT, "message": f"no input arrived by the deadline "
                     f"(on_timeout={policy!r})"}  # fmt: skip
            conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error = ?, "
                "await_deadline = NULL WHERE id = ?",
                (now, orjson.dumps(error).decode(), job_id),
            )
            state = JobState.FAILED
            brief = {"attempt": attempt, "error": error, "reason": "timeout"}
        deltas[(queue, "awaiting")] -= 1
        deltas[(queue, state.value)] += 1
        if batch is not None:
            ended[(batch, state.value)] += 1
        events.append((state.value, job_id, queue, task, tenant, now, orjson.dumps(brief).decode()))
        out.append(Recovered(job_id, queue, state))
    bump(conn, deltas)
    add_events(conn, events)
    if ended:
        bt.settle(conn, now, ended)
    return out
