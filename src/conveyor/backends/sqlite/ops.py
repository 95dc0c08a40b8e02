"""The job-state transitions of the SQLite backend: one function per transition (attempts in
flight: `attempts.py`).

Each function runs on the database thread inside the `BEGIN IMMEDIATE` transaction that
`DbThread` opened, with ``now`` read after the write lock was taken (SQLite's clock as seen by
the writer). Each keeps the ``counts`` table and the event log in step with the job rows.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from ...errors import JobNotFound, JobStateError
from ...job import FINAL_STATES, Job, JobState, Progress
from ..base import ClaimParams, ClaimResult, EnqueueResult, NewJob
from . import backpressure as bp
from . import flow as fl

JOB_COLS = (
    "id, queue, task, payload, priority, status, attempt, max_attempts, stalls, max_stalls, "
    "timeout, lease, progress, result, error, tenant, batch, workflow, parent, idempotency_key, "
    "created_at, scheduled_for, started_at, finished_at, lease_expires_at, worker, token, meta, "
    "cost, step, steps, next_jobs, prompt, await_deadline, on_timeout, input, resumes, fanin"
)
_STATES = {s.value: s for s in JobState}
_loads = orjson.loads
RATE_BUCKET = 10.0
ENQUEUE_CHUNK = 1000


def row_to_job(r: Sequence[Any]) -> Job:
    progress = Progress(**_loads(r[12])) if r[12] else Progress()
    return Job(
        r[0], r[1], r[2], _loads(r[3]), r[4], _STATES[r[5]], r[6], r[7], r[8], r[9], r[10],
        r[11], progress,
        None if r[13] is None else _loads(r[13]),
        None if r[14] is None else _loads(r[14]),
        r[15], r[16], r[17], r[18], r[19], r[20], r[21], r[22], r[23], r[24], r[25], r[26],
        False, _loads(r[27]) if r[27] else {}, _loads(r[28]) if r[28] else None, None,
        r[29], r[30], tuple(_loads(r[31])) if r[31] else (),
        prompt=None if r[32] is None else _loads(r[32]), await_deadline=r[33], on_timeout=r[34],
        input=None if r[35] is None else _loads(r[35]), resumes=r[36],
        fanin=None if r[37] is None else _loads(r[37]),
    )  # fmt: skip


def bump(conn: sqlite3.Connection, deltas: Counter[tuple[str, str]]) -> None:
    """Apply per-(queue, state) count changes."""
    rows = [(q, s, n) for (q, s), n in deltas.items() if n]
    if rows:
        conn.executemany(
            "INSERT INTO counts (queue, status, n) VALUES (?, ?, ?) "
            "ON CONFLICT (queue, status) DO UPDATE SET n = n + excluded.n",
            rows,
        )


def add_events(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """rows: (type, job_id, queue, task, tenant, time, data_json_or_None)."""
    conn.executemany(
        "INSERT INTO events (type, job_id, queue, task, tenant, time, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


_INSERT = (
    "INSERT INTO jobs (id, queue, task, payload, priority, status, max_attempts, max_stalls, "
    "timeout, lease, tenant, batch, workflow, parent, idempotency_key, created_at, scheduled_for, "
    "flow, meta, step, steps) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, "
    "CASE WHEN value ->> 14 IS NULL THEN 'queued' ELSE 'scheduled' END, value ->> 5, value ->> 6, "
    "value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, value ->> 12, value ->> 13, "
    ":now, value ->> 14, value ->> 15, value ->> 16, value ->> 17, value ->> 18 "
    "FROM json_each(:rows)"
)
_INSERT_EVENTS = (
    "INSERT INTO events (type, job_id, queue, task, tenant, time, data) "
    "SELECT CASE WHEN value ->> 14 IS NULL THEN 'enqueued' ELSE 'scheduled' END, value ->> 0, "
    "value ->> 1, value ->> 2, value ->> 9, :now, "
    "CASE WHEN value ->> 14 IS NULL THEN NULL ELSE json_object('due', value ->> 14) END "
    "FROM json_each(:rows)"
)


def enqueue(
    conn: sqlite3.Connection,
    now: float,
    jobs: Sequence[NewJob],
    max_queued: Mapping[str, int] | None = None,
) -> EnqueueResult:
    ids = [j.id for j in jobs]
    created = [True] * len(jobs)
    # A job whose id is stored already is not stored again: a spool forwarder may resend a job
    # the store took just before the forwarder died, or that another forwarder sent first.
    skip = _stored_ids(conn, ids)
    for i in skip:
        created[i] = False
    # Idempotency keys are unique per (queue, tenant): per queue so that a queue can live in one
    # Redis Cluster slot, per tenant so that a tenant never receives another's job. '' stands
    # for no tenant (tenants are non-empty), as in the index jobs_idempotency.
    keyed: dict[tuple[str, str, str], int] = {}
    for i, j in enumerate(jobs):
        if j.idempotency_key:
            keyed.setdefault((j.queue, j.tenant or "", j.idempotency_key), i)
    if keyed:
        found = conn.execute(
            "SELECT jobs.queue, ifnull(jobs.tenant, ''), jobs.idempotency_key, jobs.id "
            "FROM json_each(?) AS k JOIN jobs ON jobs.queue = k.value ->> 0 "
            "AND ifnull(jobs.tenant, '') = k.value ->> 1 AND jobs.idempotency_key = k.value ->> 2",
            (orjson.dumps(list(keyed)).decode(),),
        ).fetchall()
        existing = {(q, t, k): job_id for q, t, k, job_id in found}
        for i, j in enumerate(jobs):
            if not j.idempotency_key or i in skip:
                continue
            key = (j.queue, j.tenant or "", j.idempotency_key)
            if key in existing:
                ids[i], created[i] = existing[key], False
                skip.add(i)
            elif keyed[key] != i:  # a duplicate key within this call: the first one wins
                ids[i], created[i] = jobs[keyed[key]].id, False
                skip.add(i)
    rows = []
    deltas: Counter[tuple[str, str]] = Counter()
    flows: list[tuple[str, str | None]] = []
    for i, j in enumerate(jobs):
        if i in skip:
            continue
        due = now + j.delay if j.delay > 0 else None
        deltas[(j.queue, "queued" if due is None else "scheduled")] += 1
        rows.append(
            (j.id, j.queue, j.task, j.payload, j.priority, j.max_attempts, j.max_stalls, j.timeout,
             j.lease, j.tenant, j.batch, j.workflow, j.parent, j.idempotency_key, due, j.flow,
             j.meta, j.step, j.steps)
        )  # fmt: skip
        if j.flow is not None:
            flows.append((j.queue, j.flow if due is None else None))
    if max_queued:  # backpressure: checked before anything is written
        new: Counter[str] = Counter()
        for (q, _), n in deltas.items():
            new[q] += n
        bp.check(conn, new, max_queued)
    if flows:
        fl.store_gates(conn, (j for i, j in enumerate(jobs) if i not in skip))
    # One statement per table over a JSON array: the rows are parsed in C with the GIL released,
    # ~2x cheaper than executemany's per-parameter binding. Chunks of 1,000 rows: one huge
    # array measured ~15% slower per row than chunks (same transaction either way).
    for start in range(0, len(rows), ENQUEUE_CHUNK):
        args = {"now": now, "rows": orjson.dumps(rows[start : start + ENQUEUE_CHUNK]).decode()}
        conn.execute(_INSERT, args)
        conn.execute(_INSERT_EVENTS, args)
    if flows:
        fl.refresh_heads(conn, flows)
    bump(conn, deltas)
    return EnqueueResult(ids, created, now)


def _stored_ids(conn: sqlite3.Connection, ids: list[str]) -> set[int]:
    """Positions of ``ids`` already stored, or repeated earlier in ``ids``."""
    seen: dict[str, int] = {}
    dup: set[int] = set()
    for i, job_id in enumerate(ids):
        if seen.setdefault(job_id, i) != i:
            dup.add(i)
    found = conn.execute(
        "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
        (orjson.dumps(ids).decode(),),
    ).fetchall()
    return dup | {seen[r[0]] for r in found}


def promote_due(conn: sqlite3.Connection, now: float) -> None:
    rows = conn.execute(
        "UPDATE jobs SET status = 'queued' "  # scheduled_for stays: when it became ready
        "WHERE status = 'scheduled' AND scheduled_for <= ? RETURNING queue, flow",
        (now,),
    ).fetchall()
    if rows:
        deltas: Counter[tuple[str, str]] = Counter()
        for q, _ in rows:
            deltas[(q, "queued")] += 1
            deltas[(q, "scheduled")] -= 1
        bump(conn, deltas)
        fl.refresh_heads(conn, rows)


def next_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT min(scheduled_for) FROM jobs WHERE status = 'scheduled'").fetchone()
    return row[0] if row else None


_CLAIM_ONE = (
    "UPDATE jobs SET status = 'active', attempt = attempt + 1, token = token + 1, "
    "started_at = :now, lease_expires_at = :now + lease, worker = :worker, progress = NULL "
    "WHERE seq IN (SELECT seq FROM jobs WHERE status = 'queued' AND queue = :queue "
    "AND flow IS NULL ORDER BY priority DESC, seq LIMIT :limit) "
    f"RETURNING seq, {JOB_COLS}"
)
_CLAIM_SEQS = (
    "UPDATE jobs SET status = 'active', attempt = attempt + 1, token = token + 1, "
    "started_at = :now, lease_expires_at = :now + lease, worker = :worker, progress = NULL "
    "WHERE seq IN (SELECT value FROM json_each(:seqs)) AND status = 'queued' "
    f"RETURNING seq, {JOB_COLS}"
)


def _caps(p: ClaimParams) -> dict[str, int]:
    ql = p.queue_limits or {}
    return {q: min(p.limit, ql.get(q, p.limit)) for q in p.queues}


def claim(conn: sqlite3.Connection, now: float, p: ClaimParams) -> ClaimResult:
    promote_due(conn, now)
    args: dict[str, Any] = {"now": now, "worker": p.worker, "limit": p.limit}
    caps = _caps(p)
    # Paused queues (admin.set_paused) give nothing, read in this claim's own transaction; a
    # resume wakes the workers. (The table is empty unless a queue is paused: ~1 us.)
    paused = {q for (q,) in conn.execute("SELECT queue FROM paused_queues") if q in caps}
    for q in paused:
        caps[q] = 0
    live = [q for q in p.queues if q not in paused] if paused else p.queues
    queues = [q for q in p.queues if caps[q] > 0]
    more = False
    limited: dict[str, int] = {}
    if fl.has_flows(conn, now, queues):
        rows, more, events = _claim_flows(conn, now, p, caps)
        if events:
            add_events(conn, events)
            limited = dict(Counter(e[2] for e in events if e[0] == "rate_limited"))
    elif len(queues) == 1:
        args["queue"], args["limit"] = queues[0], caps[queues[0]]
        rows = conn.execute(_CLAIM_ONE, args).fetchall()
    else:
        # One index probe per queue, merged here: each probe is O(log n) on jobs_ready.
        cands = _unlimited(conn, caps)
        args["seqs"] = orjson.dumps([s for _, s, _ in cands[: p.limit]]).decode()
        rows = conn.execute(_CLAIM_SEQS, args).fetchall() if cands else []
    if not rows:
        return ClaimResult([], now if more else _next_due(conn, live), limited)
    rows.sort(key=lambda r: (-r[5], r[0]))
    conn.execute(_STARTED_EVENTS, {"now": now, "seqs": orjson.dumps([r[0] for r in rows]).decode()})
    deltas: Counter[tuple[str, str]] = Counter()
    for q, n in Counter(r[2] for r in rows).items():
        deltas[(q, "queued")] = -n
        deltas[(q, "active")] = n
    bump(conn, deltas)
    # Fewer than asked: the worker will idle, so tell it when the next scheduled job is due.
    due = None
    if len(rows) < p.limit:
        due = now if more else _next_due(conn, live)
    return ClaimResult([row_to_job(r[1:]) for r in rows], due, limited)


def _next_due(conn: sqlite3.Connection, queues: Sequence[str]) -> float | None:
    due = next_due(conn)
    permitted = fl.next_permitted(conn, queues)
    if permitted is not None and (due is None or permitted < due):
        return permitted
    return due


def _unlimited(conn: sqlite3.Connection, caps: dict[str, int]) -> list[tuple[int, int, str]]:
    """Unlimited ready candidates (score, seq, queue) across queues, best first."""
    cands: list[tuple[int, int, str]] = []
    for q, cap in caps.items():
        if cap > 0:
            cands += [
                (score, seq, q)
                for score, seq in conn.execute(
                    "SELECT (100 - priority) * 1099511627776 + seq, seq FROM jobs "
                    "WHERE status = 'queued' AND queue = ? AND flow IS NULL "
                    "ORDER BY priority DESC, seq LIMIT ?",
                    (q, cap),
                )
            ]
    cands.sort()
    return cands


def _claim_flows(
    conn: sqlite3.Connection, now: float, p: ClaimParams, caps: dict[str, int]
) -> tuple[list[Any], bool, list[tuple[Any, ...]]]:
    """The claim when flow-controlled jobs are claimable: merged with unlimited ones."""
    # Flow jobs come back as rows from the same statement as unlimited ones.
    fc = fl.FlowClaim(conn, now, p.worker, dict(caps), p.limit, _CLAIM_SEQS)
    unlimited, rows = fc.run(_unlimited(conn, caps))
    if unlimited:
        args = {"now": now, "worker": p.worker, "seqs": orjson.dumps(unlimited).decode()}
        rows += conn.execute(_CLAIM_SEQS, args).fetchall()
    return rows, fc.truncated, fc.events


# Events written by SQL from the rows just changed: no per-row parameter binding in Python.
_STARTED_EVENTS = (
    "INSERT INTO events (type, job_id, queue, task, tenant, time, data) "
    "SELECT 'started', jobs.id, jobs.queue, jobs.task, jobs.tenant, :now, "
    "json_object('attempt', jobs.attempt) FROM json_each(:seqs) AS s JOIN jobs ON jobs.seq = s.value"
)


def get(conn: sqlite3.Connection, job_id: str, tenant: str | None = None) -> Job | None:
    """The job, or None when missing (or, with ``tenant``, when it is another tenant's)."""
    row = conn.execute(f"SELECT {JOB_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    job = row_to_job(row) if row else None
    return None if job is None or (tenant is not None and job.tenant != tenant) else job


def cancel(conn: sqlite3.Connection, now: float, job_id: str, tenant: str | None = None) -> Job:
    job = get(conn, job_id, tenant)
    if job is None:
        raise JobNotFound(job_id)
    if job.status is JobState.CANCELLED:
        return job
    if job.status in FINAL_STATES:
        raise JobStateError(job_id, job.status.value, "cancel")
    # A running flow-controlled attempt keeps its lease and its gates' slots until its worker
    # reports that the handler has really ended (attempts.end_held), or the lease expires.
    flow, lease = conn.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = ?, scheduled_for = NULL, "
        "lease_expires_at = CASE WHEN status = 'active' AND flow IS NOT NULL "
        "THEN lease_expires_at END WHERE id = ? RETURNING flow, lease_expires_at",
        (now, job_id),
    ).fetchone()
    if flow is not None and job.status is JobState.QUEUED:
        fl.refresh_heads(conn, [(job.queue, flow)])
    bump(conn, Counter({(job.queue, job.status.value): -1, (job.queue, "cancelled"): 1}))
    add_events(conn, [("cancelled", job_id, job.queue, job.task, job.tenant, now,
                       f'{{"from":"{job.status.value}"}}')])  # fmt: skip
    if job.batch is not None:
        from . import batches  # (it enqueues through this module)

        batches.settle(conn, now, Counter({(job.batch, "cancelled"): 1}))
    job.status, job.finished_at, job.lease_expires_at = JobState.CANCELLED, now, lease
    return job


def retry(
    conn: sqlite3.Connection,
    now: float,
    job_id: str,
    tenant: str | None = None,
    max_queued: Mapping[str, int] | None = None,
) -> Job:
    job = get(conn, job_id, tenant)
    if job is None:
        raise JobNotFound(job_id)
    if job.status not in (JobState.FAILED, JobState.CANCELLED):
        raise JobStateError(job_id, job.status.value, "retry")
    if max_queued:  # a manual retry adds a waiting job like an enqueue does
        bp.check(conn, Counter({job.queue: 1}), max_queued)
    (flow,) = conn.execute(
        "UPDATE jobs SET status = 'queued', attempt = 0, stalls = 0, finished_at = NULL, "
        "error = NULL, result = NULL, worker = NULL, started_at = NULL, scheduled_for = NULL, "
        "progress = NULL, lease_expires_at = NULL "
        "WHERE id = ? RETURNING flow",
        (job_id,),
    ).fetchone()
    if flow is not None and job.lease_expires_at is not None:
        # A cancelled attempt still running held its gates' slots: the retry frees them.
        fl.settle(conn, now, [(job.queue, flow, None, job.started_at)])
    if flow is not None:
        fl.refresh_heads(conn, [(job.queue, flow)])
    bump(conn, Counter({(job.queue, job.status.value): -1, (job.queue, "queued"): 1}))
    add_events(
        conn, [("retrying", job_id, job.queue, job.task, job.tenant, now, '{"manual":true}')]
    )
    if job.batch is not None:
        from . import batches

        batches.reopen(conn, job.batch, job.status.value)
    refreshed = get(conn, job_id)
    assert refreshed is not None
    return refreshed
