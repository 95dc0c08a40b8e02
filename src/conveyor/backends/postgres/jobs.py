"""PostgreSQL job transitions of claims and producers: claim, get, cancel, retry (enqueues are
in `enqueue`), and the event and count-delta writers every transition uses.

Each function takes the connection to run on and the `Schema`; the caller owns the transaction
(the backend opens one per operation; a transactional enqueue runs in the caller's). Counts by
state are appended as deltas (`add_deltas`), never updated in place, so concurrent transitions
do not queue up on one counts row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...errors import JobNotFound, JobStateError
from ...job import FINAL_STATES, Job, JobState
from ..base import ClaimParams, ClaimResult
from . import flow_claim, flows
from .enqueue import check_backpressure
from .sql import GENERIC_PLANS, J_COLS, JOB_COLS, NOW, Conn, Schema, arrays, row_to_job


def add_deltas(rows: Iterable[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return sorted((q, s, n) for q, s, n in rows if n)


async def write_deltas(conn: Conn, s: Schema, deltas: Counter[tuple[str, str]]) -> None:
    """Append per-(queue, state) count changes (folded into ``counts`` by `fold_counts`)."""
    rows = add_deltas((q, st, n) for (q, st), n in deltas.items())
    if rows:
        q, st, n = arrays(rows, 3)
        await conn.execute(
            s("INSERT INTO {s}.count_deltas (queue, status, n) "
              "SELECT * FROM unnest(%s::text[], %s::text[], %s::int[])"),
            (q, st, n),
        )  # fmt: skip


async def add_events(conn: Conn, s: Schema, rows: Sequence[tuple[Any, ...]]) -> None:
    """rows: (type, job_id, queue, task, tenant, time, data_json_or_None)."""
    if rows:
        await conn.execute(
            s("INSERT INTO {s}.events (type, job_id, queue, task, tenant, time, data) "
              "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
              "%s::float8[], %s::text[])"),
            arrays(rows, 7),
        )  # fmt: skip


async def now(conn: Conn) -> float:
    cur = await conn.execute(f"SELECT {NOW}")
    return float((await cur.fetchone())[0])


# Whether a queue of the claim has flows with ready jobs, or due flow jobs to promote: then the
# whole claim takes the flow path (flow_claim), which merges flows and unlimited jobs in order.
_FLOWS = (
    "EXISTS (SELECT 1 FROM {s}.flows f WHERE f.queue = ANY(%(queues)s) AND f.head IS NOT NULL) "
    "OR EXISTS (SELECT 1 FROM {s}.jobs fj WHERE fj.status = 'scheduled' AND fj.flow IS NOT NULL "
    f"AND fj.queue = ANY(%(queues)s) AND fj.scheduled_for <= {NOW})"
)
_CLAIM = f"""
WITH t AS (SELECT {NOW} AS now),
q AS (
  SELECT name, cap FROM unnest(%(queues)s::text[], %(caps)s::int[]) AS q(name, cap)
  WHERE cap > 0 AND NOT EXISTS (SELECT 1 FROM {{s}}.paused_queues p WHERE p.queue = q.name)
  AND NOT ({_FLOWS})
),
cand AS (
  SELECT c.seq, c.priority, 'queued' AS was FROM q CROSS JOIN LATERAL (
    SELECT seq, priority FROM {{s}}.jobs WHERE status = 'queued' AND flow IS NULL
    AND queue = q.name ORDER BY priority DESC, seq LIMIT q.cap FOR UPDATE SKIP LOCKED) c
),
best AS (SELECT seq, was FROM cand ORDER BY priority DESC, seq LIMIT %(limit)s),
claimed AS (
  UPDATE {{s}}.jobs j SET status = 'active', attempt = j.attempt + 1, token = j.token + 1,
    started_at = t.now, lease_expires_at = t.now + j.lease, worker = %(worker)s, progress = NULL
  FROM best, t WHERE j.seq = best.seq
  RETURNING best.was, j.seq, {J_COLS}
),
ev AS (
  INSERT INTO {{s}}.events (type, job_id, queue, task, tenant, time, data)
  SELECT 'started', id, queue, task, tenant, started_at, '{{"attempt":' || attempt || '}}'
  FROM claimed ORDER BY priority DESC, seq
),
cnt AS (
  INSERT INTO {{s}}.count_deltas (queue, status, n)
  SELECT queue, was, -count(*) FROM claimed GROUP BY queue, was
  UNION ALL SELECT queue, 'active', count(*) FROM claimed GROUP BY queue
)
SELECT * FROM claimed ORDER BY priority DESC, seq
"""
# Due scheduled jobs (delays, retry backoffs) become queued first, in their own statement of
# the same pipeline (so the claim's snapshot sees them, and they compete by priority like any
# ready job); rows another promoter holds are skipped.
_PROMOTE = f"""
WITH p AS (
  UPDATE {{s}}.jobs SET status = 'queued' WHERE seq IN (
    SELECT seq FROM {{s}}.jobs WHERE status = 'scheduled' AND flow IS NULL
    AND queue = ANY(%(queues)s) AND scheduled_for <= {NOW} FOR UPDATE SKIP LOCKED)
  RETURNING queue
)
INSERT INTO {{s}}.count_deltas (queue, status, n)
SELECT queue, 'queued', count(*) FROM p GROUP BY queue
UNION ALL SELECT queue, 'scheduled', -count(*) FROM p GROUP BY queue
"""
_PROBE = f"""
SELECT {_FLOWS}, (SELECT min(d.due) FROM unnest(%(queues)s::text[]) AS q(name)
  CROSS JOIN LATERAL (SELECT scheduled_for AS due FROM {{s}}.jobs WHERE status = 'scheduled'
  AND queue = q.name ORDER BY scheduled_for LIMIT 1) d)
"""


def caps(p: ClaimParams) -> dict[str, int]:
    ql = p.queue_limits or {}
    return {q: min(p.limit, ql.get(q, p.limit)) for q in p.queues}


async def claim(
    conn: Conn,
    s: Schema,
    p: ClaimParams,
    before: tuple[str, Any] | None = None,
    acked: list[str] | None = None,
) -> ClaimResult:
    """One round trip and one transaction (a pipeline of three statements and one Sync: the
    server runs them as one implicit transaction, one commit): due scheduled jobs become
    queued; one statement takes up to ``limit`` ready jobs of the queues not paused, highest
    priority first then FIFO, skipping rows other claimers hold (``FOR UPDATE SKIP LOCKED``),
    and writes their ``started`` events and count deltas; a probe says whether a queue has
    flows (then the flow path runs, in a transaction) and the next due time. ``before``: a
    statement sent first in the same pipeline (the plain acknowledgements of
    `attempts.PLAIN_COMPLETE`); the first column of its rows goes to ``acked``."""
    cap = caps(p)
    args = {"queues": list(cap), "caps": list(cap.values()), "limit": p.limit, "worker": p.worker}
    pipeline = getattr(conn, "pipeline", None)
    first = None
    if pipeline is not None:
        async with pipeline():
            await conn.execute(GENERIC_PLANS)
            if before is not None:  # a worker's acknowledgements, in the same round trip
                first = await conn.execute(s(before[0]), before[1])
            await conn.execute(s(_PROMOTE), args)
            c1 = await conn.execute(s(_CLAIM), args)
            c2 = await conn.execute(s(_PROBE), args)
    else:  # pragma: no cover - claims always run on pooled async connections
        await conn.execute(s(_PROMOTE), args)
        c1 = await conn.execute(s(_CLAIM), args)
        c2 = await conn.execute(s(_PROBE), args)
    if first is not None and acked is not None:
        acked.extend(r[0] for r in await first.fetchall())
    rows = await c1.fetchall()
    has_flows, due = await c2.fetchone()
    if has_flows and len(rows) < p.limit:
        async with conn.transaction():  # type: ignore[attr-defined]
            left = {q: n for q, n in cap.items()}
            for r in rows:
                left[r[3]] -= 1
            more = await flow_claim.claim(
                conn, s, ClaimParams(p.queues, p.limit - len(rows), p.worker), left
            )
        jobs = [row_to_job(r[2:]) for r in rows] + more.jobs
        jobs.sort(key=lambda j: -j.priority)
        return ClaimResult(jobs, more.next_due, more.rate_limited)
    if len(rows) >= p.limit:
        due = None
    return ClaimResult([row_to_job(r[2:]) for r in rows], due, {})


async def get(conn: Conn, s: Schema, job_id: str, tenant: str | None = None) -> Job | None:
    """The job, or None when missing (or, with ``tenant``, when it is another tenant's)."""
    cur = await conn.execute(s(f"SELECT {JOB_COLS} FROM {{s}}.jobs WHERE id = %s"), (job_id,))
    row = await cur.fetchone()
    job = row_to_job(row) if row else None
    return None if job is None or (tenant is not None and job.tenant != tenant) else job


async def _locked(
    conn: Conn, s: Schema, job_id: str, tenant: str | None
) -> tuple[Job, str | None, bool]:
    """The job row locked until the transaction ends, its flow and whether it is held."""
    cur = await conn.execute(
        s(f"SELECT {JOB_COLS}, flow, held FROM {{s}}.jobs WHERE id = %s FOR UPDATE"), (job_id,)
    )
    row = await cur.fetchone()
    if row is None or (tenant is not None and row[15] != tenant):
        raise JobNotFound(job_id)
    return row_to_job(row[:-2]), row[-2], row[-1]


async def cancel(conn: Conn, s: Schema, job_id: str, tenant: str | None = None) -> Job:
    """Cancel a waiting or active job (row locked first: a concurrent finish or claim waits
    for this transaction). Idempotent on a cancelled job. The worker of an active one is
    woken (``c:<worker>``) on commit. A flow job's queue flow lock is taken before its row
    (a job's queue and flow never change), in the flow claim's order: no deadlock."""
    cur = await conn.execute(s("SELECT queue FROM {s}.jobs WHERE id = %s AND flow IS NOT NULL"),
                             (job_id,))  # fmt: skip
    peek = await cur.fetchone()
    if peek is not None:
        await flows.lock(conn, s, [peek[0]])
    job, flow, _ = await _locked(conn, s, job_id, tenant)
    if job.status is JobState.CANCELLED:
        return job
    if job.status in FINAL_STATES:
        raise JobStateError(job_id, job.status.value, "cancel")
    t = await now(conn)
    # A running flow-controlled attempt keeps its lease and its gates' slots (held) until its
    # worker reports that the handler has really ended, or the lease expires.
    held = job.status is JobState.ACTIVE and flow is not None
    await conn.execute(
        s("UPDATE {s}.jobs SET status = 'cancelled', finished_at = %s, scheduled_for = NULL, "
          "lease_expires_at = CASE WHEN %s THEN lease_expires_at END, held = %s, "
          "await_deadline = NULL WHERE id = %s"),
        (t, held, held, job_id),
    )  # fmt: skip
    if flow is not None and job.status is JobState.QUEUED:
        await flows.refresh_heads(conn, s, [(job.queue, flow)])
    await write_deltas(conn, s, Counter({(job.queue, job.status.value): -1,
                                         (job.queue, "cancelled"): 1}))  # fmt: skip
    await add_events(conn, s, [("cancelled", job_id, job.queue, job.task, job.tenant, t,
                                f'{{"from":"{job.status.value}"}}')])  # fmt: skip
    if job.batch is not None:
        from . import batches

        await batches.settle(conn, s, t, Counter({(job.batch, "cancelled"): 1}))
    if job.status is JobState.ACTIVE and job.worker:
        await conn.execute("SELECT pg_notify(%s, %s)", (s.channel, f"c:{job.worker}"))
    job.status, job.finished_at = JobState.CANCELLED, t
    job.lease_expires_at = job.lease_expires_at if held else None
    job.scheduled_for = None
    return job


async def retry(
    conn: Conn,
    s: Schema,
    job_id: str,
    tenant: str | None = None,
    max_queued: Mapping[str, int] | None = None,
) -> Job:
    """Move a failed or cancelled job back to ``queued`` with fresh attempts."""
    job, flow, was_held = await _locked(conn, s, job_id, tenant)
    if job.status not in (JobState.FAILED, JobState.CANCELLED):
        raise JobStateError(job_id, job.status.value, "retry")
    if max_queued:
        await check_backpressure(conn, s, Counter({job.queue: 1}), max_queued)
    if flow is not None:
        await flows.lock(conn, s, [job.queue])
    t = await now(conn)
    await conn.execute(
        s("UPDATE {s}.jobs SET status = 'queued', attempt = 0, stalls = 0, finished_at = NULL, "
          "error = NULL, result = NULL, worker = NULL, started_at = NULL, scheduled_for = NULL, "
          "progress = NULL, lease_expires_at = NULL, held = false WHERE id = %s"),
        (job_id,),
    )  # fmt: skip
    if flow is not None:
        if was_held:  # a cancelled attempt still running held its gates' slots: freed now
            await flows.settle(conn, s, t, [(job.queue, flow, None, job.started_at)])
        await flows.refresh_heads(conn, s, [(job.queue, flow)])
    await write_deltas(conn, s, Counter({(job.queue, job.status.value): -1,
                                         (job.queue, "queued"): 1}))  # fmt: skip
    await add_events(conn, s, [("retrying", job_id, job.queue, job.task, job.tenant, t,
                                '{"manual":true}')])  # fmt: skip
    await conn.execute("SELECT pg_notify(%s, %s)", (s.channel, f"w:{job.queue}"))
    if job.batch is not None:
        from . import batches

        await batches.reopen(conn, s, job.batch, job.status.value)
    out = await get(conn, s, job_id)
    assert out is not None
    return out
