"""PostgreSQL transitions of fan-out / fan-in: the park's edges, the settle of an edge in its
child's final transaction, the parent's decision (docs/architecture.md "Fan-out and fan-in").

A child's final state and its edge's settle commit together; exactly once comes from
``edges.status IS NULL`` (the first settle matches, a later one does not). Children of one
parent that end at once in different transactions are ordered by the parent's row lock
(``SELECT … FOR UPDATE``): each reads the fan-in record the previous one committed.
"""

from __future__ import annotations

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
from . import jobs as ops
from .sql import Conn, Schema, arrays

_STATES = {st.value: st for st in JobState}
_SETTLE = (
    "UPDATE {s}.edges e SET status = j.status, result = j.result, error = j.error, "
    "settled_at = %s FROM {s}.jobs j WHERE e.child = ANY(%s) AND j.id = e.child "
    "AND e.status IS NULL AND j.status IN ('completed', 'failed', 'cancelled') "
    "RETURNING e.parent, e.idx, e.child, e.status, e.error"
)


async def park(conn: Conn, s: Schema, now: float, outcomes: Sequence[Outcome]) -> None:
    """Record the fan-out of parents that just parked: a new round replaces the last one's
    edges; one edge per child, by spawn index; the fan-in record and progress (0 of n)."""
    for o in outcomes:
        assert o.fanout is not None
        await conn.execute(s("DELETE FROM {s}.edges WHERE parent = %s"), (o.job_id,))
        rows = [(nj.id, o.job_id, i) for i, nj in enumerate(o.then)]
        await conn.execute(
            s("INSERT INTO {s}.edges (child, parent, idx) "
              "SELECT * FROM unnest(%s::text[], %s::text[], %s::int[])"),
            arrays(rows, 3),
        )  # fmt: skip
        info = {"policy": o.fanout.policy, "cancel_siblings": o.fanout.cancel_siblings,
                "total": len(o.then), "settled": 0, "failed": 0, "waiting": True}  # fmt: skip
        prog = progress_of(0, len(o.then)) | {"updated_at": now}
        await conn.execute(
            s("UPDATE {s}.jobs SET fanin = %s, progress = %s WHERE id = %s"),
            (orjson.dumps(info).decode(), orjson.dumps(prog).decode(), o.job_id),
        )


async def settle(conn: Conn, s: Schema, now: float, ids: Iterable[str]) -> bool:
    """Settle the open edges of those of ``ids`` that are final; apply their parents'
    policies. Idempotent. True: a parent was resumed (workers should be woken)."""
    ids = list(ids)
    if not ids:
        return False
    cur = await conn.execute(s(_SETTLE), (now, ids))
    woke = False
    for parent, idx, child, status, error in sorted(await cur.fetchall()):
        if await _decide(conn, s, now, parent, idx, child, status, error):
            woke = True
    return woke


async def _decide(conn: Conn, s: Schema, now: float, parent: str, idx: int, child: str,
                  status: str, error: str | None) -> bool:  # fmt: skip
    cur = await conn.execute(
        s("SELECT fanin, status, queue, task, tenant, attempt, batch FROM {s}.jobs "
          "WHERE id = %s FOR UPDATE"),
        (parent,),
    )  # fmt: skip
    row = await cur.fetchone()
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
    await conn.execute(
        s("UPDATE {s}.jobs SET fanin = %s, progress = %s WHERE id = %s"),
        (orjson.dumps(info).decode(), orjson.dumps(prog | {"updated_at": now}).decode(), parent),
    )
    await ops.add_events(
        conn, s, [("progress", parent, queue, task, tenant, now, orjson.dumps(prog).decode())]
    )
    if act == "resume":
        await awaiting._resume(conn, s, now, parent, None, "children")
        return True
    if act == "fail":
        err = child_failed(child, idx, status, orjson.loads(error) if error else None)
        await conn.execute(
            s("UPDATE {s}.jobs SET status = 'failed', error = %s, finished_at = %s, "
              "await_deadline = NULL WHERE id = %s AND status = 'awaiting'"),
            (orjson.dumps(err).decode(), now, parent),
        )  # fmt: skip
        await ops.write_deltas(conn, s, Counter({(queue, "awaiting"): -1, (queue, "failed"): 1}))
        brief = {"attempt": attempt, "error": {"type": err["type"], "message": err["message"]},
                 "reason": "child"}  # fmt: skip
        await ops.add_events(
            conn, s, [("failed", parent, queue, task, tenant, now, orjson.dumps(brief).decode())]
        )
        fired = False
        if batch is not None:
            fired = await bt.settle(conn, s, now, Counter({(batch, "failed"): 1}))
        woke = await settle(conn, s, now, [parent])  # the parent may itself be a child
        if info["cancel_siblings"]:
            await cancel_pending(conn, s, parent)
        return fired or woke
    return False


async def cancel_pending(conn: Conn, s: Schema, parent: str) -> None:
    """Cancel the parent's children whose edge is still open (each settles as cancelled)."""
    cur = await conn.execute(
        s("SELECT e.child FROM {s}.edges e JOIN {s}.jobs j ON j.id = e.child WHERE e.parent = %s "
          "AND e.status IS NULL AND j.status NOT IN ('completed', 'failed', 'cancelled') "
          "ORDER BY e.idx"),
        (parent,),
    )  # fmt: skip
    for (child,) in await cur.fetchall():
        await cancel(conn, s, child)


async def cancel(conn: Conn, s: Schema, job_id: str, tenant: str | None = None) -> Job:
    """`Backend.cancel_job` with fan-in: the job's own edge settles (as cancelled), and a
    parent waiting for children stops waiting and cancels those still pending."""
    job = await ops.cancel(conn, s, job_id, tenant)
    assert job.finished_at is not None
    await settle(conn, s, job.finished_at, [job_id])
    if job.fanin is not None and job.fanin.get("waiting"):
        job.fanin["waiting"] = False
        await conn.execute(
            s("UPDATE {s}.jobs SET fanin = %s WHERE id = %s"),
            (orjson.dumps(job.fanin).decode(), job_id),
        )
        await cancel_pending(conn, s, job_id)
    return job


async def resume(conn: Conn, s: Schema, job_id: str, tenant: str | None, data: str | None) -> Job:
    """A parent waiting for its children is resumed by them, not by a person."""
    job = await ops.get(conn, s, job_id, tenant)
    if job is None:
        raise JobNotFound(job_id)
    if job.status is JobState.AWAITING and job.fanin is not None and job.fanin.get("waiting"):
        raise JobStateError(job_id, "awaiting children", "resume")
    return await awaiting.resume(conn, s, job_id, tenant, data)


async def recover(conn: Conn, s: Schema) -> list[Recovered]:
    """Lease recovery, settling the edges of children failed for good by it."""
    from .leases import recover as recover_leases  # (leases imports attempts, which imports this)

    out = await recover_leases(conn, s)
    failed = [r.job_id for r in out if r.state is JobState.FAILED]
    if failed:
        await settle(conn, s, await ops.now(conn), failed)
    return out


async def expire(conn: Conn, s: Schema) -> list[Recovered]:
    out = await awaiting.expire(conn, s)
    final = [r.job_id for r in out if r.state.is_final]
    if final:
        await settle(conn, s, await ops.now(conn), final)
    return out


async def children(conn: Conn, s: Schema, parent: str) -> list[ChildResult]:
    cur = await conn.execute(
        s("SELECT child, idx, status, result, error FROM {s}.edges WHERE parent = %s "
          "ORDER BY idx"),
        (parent,),
    )  # fmt: skip
    return [
        ChildResult(child, idx, _STATES.get(status) if status else None,
                    orjson.loads(result) if result else None,
                    orjson.loads(error) if error else None)
        for child, idx, status, result, error in await cur.fetchall()
    ]  # fmt: skip


async def forget(conn: Conn, s: Schema, parents: Sequence[str]) -> None:
    """Drop the edges of deleted parents (retention, cleanup)."""
    await conn.execute(s("DELETE FROM {s}.edges WHERE parent = ANY(%s)"), (list(parents),))
