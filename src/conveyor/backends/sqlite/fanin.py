"""SQLite transitions of fan-out / fan-in: the park's edges, the settle of an edge in its
child's final transaction, and the parent's decision (docs/architecture.md "Fan-out and
fan-in").

Everything runs inside the caller's `BEGIN IMMEDIATE` transaction, so a child's final state and
its edge's settle commit together: exactly once comes from ``edges.status IS NULL`` (the first
settle of a child matches, any later one does not), and never lost because no final transition
of a child commits without it. The parent's fan-in record is the JSON column ``jobs.fanin``
(policy, cancel_siblings, total, settled, failed, waiting); its progress is settled / total.
A parent that fail_parent fails for good and that is a member of a batch with callbacks ends
in the same transaction: counted in the batch record, which may fire the callbacks there.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ...errors import JobNotFound, JobStateError
from ...fanin import ChildResult, child_failed, progress_of
from ...job import Job, JobState
from ..base import Outcome, Recovered
from . import awaiting
from . import batches as bt
from . import ops as jobs_ops
from .ops import add_events, bump, get

_STATES = {s.value: s for s in JobState}
_SETTLE = (
    "UPDATE edges SET status = jobs.status, result = jobs.result, error = jobs.error, "
    "settled_at = :now FROM jobs WHERE edges.child IN (SELECT value FROM json_each(:ids)) "
    "AND jobs.id = edges.child AND edges.status IS NULL "
    "AND jobs.status IN ('completed', 'failed', 'cancelled') "
    "RETURNING edges.parent, edges.idx, edges.child, edges.status, edges.error"
)


def park(conn: sqlite3.Connection, now: float, outcomes: Sequence[Outcome]) -> None:
    """Record the fan-out of parents that just parked (their outcomes applied): a new round
    replaces the last one's edges; one edge per child, by spawn index; the fan-in record and
    the progress (0 of n)."""
    for o in outcomes:
        assert o.fanout is not None
        conn.execute("DELETE FROM edges WHERE parent = ?", (o.job_id,))
        conn.executemany(
            "INSERT INTO edges (child, parent, idx) VALUES (?, ?, ?)",
            [(nj.id, o.job_id, i) for i, nj in enumerate(o.then)],
        )
        info = {"policy": o.fanout.policy, "cancel_siblings": o.fanout.cancel_siblings,
                "total": len(o.then), "settled": 0, "failed": 0, "waiting": True}  # fmt: skip
        prog = progress_of(0, len(o.then)) | {"updated_at": now}
        conn.execute(
            "UPDATE jobs SET fanin = ?, progress = ? WHERE id = ?",
            (orjson.dumps(info).decode(), orjson.dumps(prog).decode(), o.job_id),
        )


def settle(conn: sqlite3.Connection, now: float, ids: Iterable[str]) -> bool:
    """Settle the edges of those of ``ids`` that are now final and whose edge is still open:
    store their state, result and error, count them in the parent and apply its policy.
    Idempotent. True: a parent was resumed (workers should be woken)."""
    rows = conn.execute(_SETTLE, {"now": now, "ids": orjson.dumps(list(ids)).decode()}).fetchall()
    woke = False
    for parent, idx, child, status, error in rows:
        if _decide(conn, now, parent, idx, child, status, error):
            woke = True
    return woke


def _decide(
    conn: sqlite3.Connection, now: float, parent: str, idx: int, child: str, status: str,
    error: str | None,
) -> bool:  # fmt: skip
    row = conn.execute(
        "SELECT fanin, status, queue, task, tenant, attempt, batch FROM jobs WHERE id = ?",
        (parent,),
    ).fetchone()
    if row is None or row[0] is None:
        return False  # the parent is gone (cleanup): nothing waits
    info: dict[str, Any] = orjson.loads(row[0])
    _, pstatus, queue, task, tenant, attempt, batch = row
    failure = status != "completed"
    info["settled"] += 1
    info["failed"] += failure
    act = None
    if info["waiting"] and pstatus == "awaiting":
        if failure and info["policy"] == "fail_parent":
            act = "fail"
        elif (failure and info["policy"] == "continue") or info["settled"] >= info["total"]:
            act = "resume"
        if act is not None:
            info["waiting"] = False
    prog = progress_of(info["settled"], info["total"])
    conn.execute(
        "UPDATE jobs SET fanin = ?, progress = ? WHERE id = ?",
        (orjson.dumps(info).decode(), orjson.dumps(prog | {"updated_at": now}).decode(), parent),
    )
    add_events(conn, [("progress", parent, queue, task, tenant, now, orjson.dumps(prog).decode())])
    if act == "resume":
        awaiting._resume(conn, now, parent, None, "children")
        return True
    if act == "fail":
        err = child_failed(child, idx, status, orjson.loads(error) if error else None)
        conn.execute(
            "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, await_deadline = NULL "
            "WHERE id = ? AND status = 'awaiting'",
            (orjson.dumps(err).decode(), now, parent),
        )
        bump(conn, Counter({(queue, "awaiting"): -1, (queue, "failed"): 1}))
        brief = {"attempt": attempt, "error": {"type": err["type"], "message": err["message"]},
                 "reason": "child"}  # fmt: skip
        add_events(
            conn, [("failed", parent, queue, task, tenant, now, orjson.dumps(brief).decode())]
        )
        fired = False
        if batch is not None:  # a batch member failed for good: it ends there
            fired = bt.settle(conn, now, Counter({(batch, "failed"): 1}))
        woke = settle(conn, now, [parent])  # the parent may itself be a child
        if info["cancel_siblings"]:
            cancel_pending(conn, now, parent)
        return fired or woke
    return False


def cancel_pending(conn: sqlite3.Connection, now: float, parent: str) -> None:
    """Cancel the parent's children whose edge is still open (each settles as cancelled)."""
    pending = conn.execute(
        "SELECT edges.child FROM edges JOIN jobs ON jobs.id = edges.child WHERE edges.parent = ? "
        "AND edges.status IS NULL AND jobs.status NOT IN ('completed', 'failed', 'cancelled') "
        "ORDER BY edges.idx",
        (parent,),
    ).fetchall()
    for (child,) in pending:
        cancel(conn, now, child)


def cancel(conn: sqlite3.Connection, now: float, job_id: str, tenant: str | None = None) -> Job:
    """`Backend.cancel_job` with fan-in: the cancelled job's own edge settles (as cancelled),
    and a parent waiting for children stops waiting and cancels those still pending."""
    job = jobs_ops.cancel(conn, now, job_id, tenant)
    settle(conn, now, [job_id])
    if job.fanin is not None and job.fanin.get("waiting"):
        job.fanin["waiting"] = False
        conn.execute(
            "UPDATE jobs SET fanin = ? WHERE id = ?", (orjson.dumps(job.fanin).decode(), job_id)
        )
        cancel_pending(conn, now, job_id)
    return job


def resume(
    conn: sqlite3.Connection, now: float, job_id: str, tenant: str | None, data: str | None
) -> Job:
    """`Backend.resume_job`: a parent waiting for its children is resumed by them, not by a
    person (`JobStateError` "awaiting children")."""
    job = get(conn, job_id, tenant)
    if job is None:
        raise JobNotFound(job_id)
    if job.status is JobState.AWAITING and job.fanin is not None and job.fanin.get("waiting"):
        raise JobStateError(job_id, "awaiting children", "resume")
    return awaiting.resume(conn, now, job_id, tenant, data)


def recover(conn: sqlite3.Connection, now: float) -> list[Recovered]:
    """Lease recovery, settling the edges of children failed for good by it."""
    from .attempts import recover as recover_leases  # attempts imports this module

    out = recover_leases(conn, now)
    failed = [r.job_id for r in out if r.state is JobState.FAILED]
    if failed:
        settle(conn, now, failed)
    return out


def expire(conn: sqlite3.Connection, now: float) -> list[Recovered]:
    """The await sweep, settling the edges of children it failed or cancelled."""
    out = awaiting.expire(conn, now)
    final = [r.job_id for r in out if r.state.is_final]
    if final:
        settle(conn, now, final)
    return out


def children(conn: sqlite3.Connection, parent: str) -> list[ChildResult]:
    """`FanInStore.read_children`: the last round's children in spawn order."""
    return [
        ChildResult(
            child,
            idx,
            _STATES.get(status) if status else None,
            orjson.loads(result) if result else None,
            orjson.loads(error) if error else None,
        )
        for child, idx, status, result, error in conn.execute(
            "SELECT child, idx, status, result, error FROM edges WHERE parent = ? ORDER BY idx",
            (parent,),
        )
    ]


def forget(conn: sqlite3.Connection, parents: Sequence[str]) -> None:
    """Drop the edges of deleted parents (retention, cleanup)."""
    conn.execute(
        "DELETE FROM edges WHERE parent IN (SELECT value FROM json_each(?))",
        (orjson.dumps(list(parents)).decode(),),
    )
