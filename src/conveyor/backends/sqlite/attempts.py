"""SQLite transitions of attempts in flight: finish, release, extend, progress, lease recovery.

An attempt is named by ``(job_id, token)``: the claim token grows by one at every claim and is
never lowered, so an outcome, renewal or progress report of an attempt that is no longer the
job's current one (cancelled, recovered after a lost lease, claimed again) matches no row and
is ignored. Every way an attempt can fail — the handler's failure (`finish`) or a lease that
expired too often (`recover`) — goes through `_end_failed`: one error shape, one set of counters,
rates, breaker accounting and events.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ...job import JobState
from ..base import Outcome, OutcomeKind, Recovered
from ..outcomes import Encoded, encode
from . import awaiting, fanin
from . import batches as bt
from . import flow as fl
from .ops import RATE_BUCKET, add_events, bump, enqueue

_COMPLETED_EVENTS = (
    "INSERT INTO events (type, job_id, queue, task, tenant, time, data) "
    "SELECT 'completed', jobs.id, jobs.queue, jobs.task, jobs.tenant, :now, NULL "
    "FROM json_each(:seqs) AS s JOIN jobs ON jobs.seq = s.value"
)
_COMPLETE = (
    "UPDATE jobs SET status = 'completed', result = o.value ->> 2, finished_at = :now, "
    "error = NULL, lease_expires_at = NULL FROM json_each(:outcomes) AS o "
    "WHERE jobs.id = o.value ->> 0 AND jobs.token = o.value ->> 1 AND jobs.status = 'active' "
    "RETURNING jobs.seq, jobs.id, jobs.queue, jobs.started_at, jobs.flow, jobs.batch, "
    "jobs.parent IS NOT NULL"
)
_RETRY = (
    "UPDATE jobs SET status = ?, scheduled_for = ?, error = ?, lease_expires_at = NULL, "
    "worker = NULL, progress = NULL WHERE id = ? AND token = ? AND status = 'active' "
    "RETURNING queue, task, tenant, flow, started_at, attempt"
)
_FAIL = (
    "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, lease_expires_at = NULL "
    "WHERE id = ? AND token = ? AND status = 'active' "
    "RETURNING queue, task, tenant, flow, started_at, attempt, batch"
)


@dataclass(slots=True)
class _Ended:
    """What one step of finishing attempts changed, applied once at its end."""

    now: float
    deltas: Counter[tuple[str, str]] = field(default_factory=Counter)
    rates: dict[str, list[float]] = field(default_factory=dict)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    left: list[tuple[str, str | None, bool | None, float | None]] = field(default_factory=list)
    requeued: list[tuple[str, str | None]] = field(default_factory=list)
    ended: Counter[tuple[str, str]] = field(default_factory=Counter)  # (batch, final state)
    children: list[str] = field(default_factory=list)  # completed jobs that have a parent

    def apply(self, conn: sqlite3.Connection) -> bool:
        """Write counts, rates and events; give flow slots back; count members of batches (and
        fire their callbacks when the last one ended). True: flows became claimable."""
        add_events(conn, self.events)
        fired = bt.settle(conn, self.now, self.ended) if self.ended else False
        bump(conn, self.deltas)
        if self.rates:
            bucket = int(self.now // RATE_BUCKET)
            conn.executemany(
                "INSERT INTO rates (queue, bucket, completed, failed, run_seconds) "
                "VALUES (?,?,?,?,?) ON CONFLICT (queue, bucket) DO UPDATE SET "
                "completed = completed + excluded.completed, failed = failed + excluded.failed, "
                "run_seconds = run_seconds + excluded.run_seconds",
                [(q, bucket, c, f, s) for q, (c, f, s) in self.rates.items()],
            )
        woke = fl.settle(conn, self.now, self.left) if self.left else False
        woke = woke or fired
        if self.requeued:
            fl.refresh_heads(conn, self.requeued)
            woke = True
        return woke


def _end_failed(conn: sqlite3.Connection, e: _Ended, o: Encoded) -> bool:
    """Fail one attempt: ``retry`` (scheduled or queued again) or ``failed`` for good. The one
    place an attempt fails, for handler failures and stalls alike. False: not held."""
    now = e.now
    if o.kind is OutcomeKind.RETRY:
        status = "scheduled" if o.retry_in > 0 else "queued"
        due = now + o.retry_in if o.retry_in > 0 else None
        row = conn.execute(_RETRY, (status, due, o.error, o.job_id, o.token)).fetchone()
        event = "retrying"
    else:
        status, event = "failed", "failed"
        row = conn.execute(_FAIL, (o.error, now, o.job_id, o.token)).fetchone()
    if row is None:
        return False
    queue, task, tenant, flow, started, attempt = row[:6]
    if status == "failed" and row[6] is not None:
        e.ended[(row[6], "failed")] += 1
    if flow is not None:
        e.left.append((queue, flow, False, started))
        if status == "queued":
            e.requeued.append((queue, flow))
    e.deltas[(queue, "active")] -= 1
    e.deltas[(queue, status)] += 1
    e.rates.setdefault(queue, [0, 0, 0.0])[1] += 1
    data = orjson.dumps({"attempt": attempt, **o.brief}).decode()
    e.events.append((event, o.job_id, queue, task, tenant, now, data))
    return True


def finish(
    conn: sqlite3.Connection, now: float, worker: str, outcomes: Sequence[Outcome]
) -> tuple[list[str], bool]:
    """Apply outcomes; returns the ids of ignored ones and whether set-aside flows became
    claimable or jobs were created. An outcome that cannot be encoded fails its own attempt
    (`outcomes.encode`). The jobs an applied outcome carries (``then``) are inserted in this
    transaction, through the enqueue path (an id stored already creates nothing), never
    refused by ``max_queued``."""
    done: list[Any] = []
    chained: list[Any] = []  # completions that hand over: their event names the next jobs
    others: list[Encoded] = []
    for o in outcomes:
        enc = encode(o)
        if enc.kind is OutcomeKind.COMPLETED:
            (chained if o.then else done).append((enc.job_id, enc.token, enc.result))
        else:
            others.append(enc)
    acked: set[str] = set()
    e = _Ended(now)
    if done:
        seqs = _complete(conn, e, done, acked)
        conn.execute(_COMPLETED_EVENTS, {"now": now, "seqs": orjson.dumps(seqs).decode()})
    if chained:
        _complete(conn, e, chained, acked)
        nexts = {o.job_id: [nj.id for nj in o.then] for o in outcomes if o.then}
        add_events(conn, [
            ("completed", r[0], *r[1:], now, orjson.dumps({"next": nexts[r[0]]}).decode())
            for r in conn.execute(
                "SELECT id, queue, task, tenant FROM jobs WHERE id IN "
                "(SELECT value FROM json_each(?))", (orjson.dumps([c[0] for c in chained]).decode(),)
            ) if r[0] in acked
        ])  # fmt: skip
    for enc in others:
        parked = enc.kind is OutcomeKind.AWAIT
        if awaiting.park(conn, e, enc) if parked else _end_failed(conn, e, enc):
            acked.add(enc.job_id)
    woke = e.apply(conn)
    if hand_over(conn, now, [o for o in outcomes if o.then and o.job_id in acked]):
        woke = True
    parked = [o for o in outcomes if o.fanout is not None and o.job_id in acked]
    if parked:
        fanin.park(conn, now, parked)
    ended = e.children + [o.job_id for o in others if o.job_id in acked]
    if ended and fanin.settle(conn, now, ended):  # children that ended settle their edges
        woke = True
    costs = [o for o in outcomes if o.cost and o.job_id in acked]
    if costs:
        add_costs(conn, costs)
    lost = [o for o in outcomes if o.job_id not in acked]
    if lost and end_held(conn, now, [(o.job_id, o.token) for o in lost]):
        woke = True
    return [o.job_id for o in lost], woke


def _complete(conn: sqlite3.Connection, e: _Ended, rows: list[Any], acked: set[str]) -> list[int]:
    """Complete the attempts of ``rows`` (id, token, result JSON) still held; their seqs."""
    now = e.now
    found = conn.execute(
        _COMPLETE, {"now": now, "outcomes": orjson.dumps(rows).decode()}
    ).fetchall()
    seqs = []
    for seq, job_id, queue, started, flow, batch, child in found:
        seqs.append(seq)
        if child:  # a spawned child (or a chain step): its fan-in edge, if any, settles
            e.children.append(job_id)
        if batch is not None:  # a member of a batch ended (also when it handed over)
            e.ended[(batch, "completed")] += 1
        if flow is not None:
            e.left.append((queue, flow, True, started))
        acked.add(job_id)
        e.deltas[(queue, "active")] -= 1
        e.deltas[(queue, "completed")] += 1
        r = e.rates.setdefault(queue, [0, 0, 0.0])
        r[0] += 1
        r[2] += now - (started or now)
    return seqs


def hand_over(conn: sqlite3.Connection, now: float, outcomes: Sequence[Outcome]) -> bool:
    """Store the jobs created with applied outcomes (``Outcome.then``) and record their ids on
    the job that created them, in the finishing transaction. True: jobs were created."""
    if not outcomes:
        return False
    conn.executemany(
        "UPDATE jobs SET next_jobs = ? WHERE id = ?",
        [(orjson.dumps([nj.id for nj in o.then]).decode(), o.job_id) for o in outcomes],
    )
    res = enqueue(conn, now, [nj for o in outcomes for nj in o.then], None)
    return any(res.created)


def add_costs(conn: sqlite3.Connection, outcomes: Sequence[Outcome]) -> None:
    """Add what each attempt reported through ``ctx.cost`` to its job and to the per-task sums
    (admin-only data), in the transaction that finished the attempt. Rare: one read and two
    writes per outcome that carries a cost."""
    for o in outcomes:
        row = conn.execute(
            "SELECT queue, task, cost FROM jobs WHERE id = ? AND token = ?", (o.job_id, o.token)
        ).fetchone()
        if row is None or not o.cost:
            continue
        queue, task, old = row
        total: dict[str, float] = orjson.loads(old) if old else {}
        for unit, amount in o.cost.items():
            total[unit] = total.get(unit, 0.0) + amount
        conn.execute(
            "UPDATE jobs SET cost = ? WHERE id = ?", (orjson.dumps(total).decode(), o.job_id)
        )
        conn.executemany(
            "INSERT INTO costs (queue, task, unit, total) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (queue, task, unit) DO UPDATE SET total = total + excluded.total",
            [(queue, task, unit, amount) for unit, amount in o.cost.items()],
        )


def end_held(conn: sqlite3.Connection, now: float, jobs: Sequence[tuple[str, int]]) -> bool:
    """Attempts of jobs cancelled while they ran have ended (the handler returned, the worker
    let go of them, or their lease expired): give their gates' slots back. True: flows became
    claimable."""
    rows = conn.execute(
        "UPDATE jobs SET lease_expires_at = NULL FROM json_each(:jobs) AS o "
        "WHERE jobs.id = o.value ->> 0 AND jobs.token = o.value ->> 1 "
        "AND jobs.status = 'cancelled' AND jobs.lease_expires_at IS NOT NULL "
        "RETURNING jobs.queue, jobs.flow, jobs.started_at",
        _held(jobs),
    ).fetchall()
    return fl.settle(conn, now, [(q, f, None, started) for q, f, started in rows])


def _held(jobs: Sequence[tuple[str, int]]) -> dict[str, Any]:
    return {"jobs": orjson.dumps(jobs).decode()}


def release(
    conn: sqlite3.Connection, now: float, worker: str, jobs: Sequence[tuple[str, int]]
) -> int:
    """Return held attempts to ``queued`` without charging them (nor their progress)."""
    held = _held(jobs)
    # Start times of flow jobs, read before the update clears them (breakers tell their probe
    # from jobs claimed before they opened by it).
    starts = dict(
        conn.execute(
            "SELECT jobs.id, jobs.started_at FROM json_each(:jobs) AS o JOIN jobs "
            "ON jobs.id = o.value ->> 0 WHERE jobs.flow IS NOT NULL AND jobs.status = 'active' "
            "AND jobs.token = o.value ->> 1",
            held,
        ).fetchall()
    )
    rows = conn.execute(
        "UPDATE jobs SET status = 'queued', attempt = attempt - 1, lease_expires_at = NULL, "
        "worker = NULL, started_at = NULL, progress = NULL FROM json_each(:jobs) AS o "
        "WHERE jobs.id = o.value ->> 0 AND jobs.token = o.value ->> 1 "
        "AND jobs.status = 'active' RETURNING jobs.queue, jobs.flow, jobs.id",
        held,
    ).fetchall()
    deltas: Counter[tuple[str, str]] = Counter()
    for q, _, _ in rows:
        deltas[(q, "active")] -= 1
        deltas[(q, "queued")] += 1
    bump(conn, deltas)
    flowed = [(q, f, job_id) for q, f, job_id in rows if f is not None]
    if flowed:
        fl.settle(conn, now, [(q, f, None, starts.get(job_id)) for q, f, job_id in flowed])
        fl.refresh_heads(conn, [(q, f) for q, f, _ in flowed])
    if len(rows) < len(jobs):  # the others may be cancelled attempts still holding slots
        done = {job_id for _, _, job_id in rows}
        end_held(conn, now, [j for j in jobs if j[0] not in done])
    return len(rows)


def extend(
    conn: sqlite3.Connection, now: float, worker: str, jobs: Sequence[tuple[str, int]]
) -> list[str]:
    args = _held(jobs) | {"now": now}
    # A cancelled attempt still running keeps its lease (and its gates' slots) too, but is
    # reported lost so that its worker stops it.
    kept = {
        r[0]
        for r in conn.execute(
            "UPDATE jobs SET lease_expires_at = :now + lease FROM json_each(:jobs) AS o "
            "WHERE jobs.id = o.value ->> 0 AND jobs.token = o.value ->> 1 "
            "AND jobs.lease_expires_at IS NOT NULL AND jobs.status IN ('active', 'cancelled') "
            "RETURNING jobs.id, jobs.status",
            args,
        )
        if r[1] == "active"
    }
    return [j for j, _ in jobs if j not in kept]


def set_progress(
    conn: sqlite3.Connection,
    now: float,
    job_id: str,
    token: int,
    worker: str,
    progress: dict[str, Any],
) -> bool:
    data = orjson.dumps(progress | {"updated_at": now}).decode()
    row = conn.execute(
        "UPDATE jobs SET progress = ? WHERE id = ? AND token = ? AND status = 'active' "
        "RETURNING queue, task, tenant",
        (data, job_id, token),
    ).fetchone()
    if row is None:
        return False
    add_events(conn, [("progress", job_id, *row, now, data)])
    return True


def recover(conn: sqlite3.Connection, now: float) -> list[Recovered]:
    """Expired leases: back to ``queued`` (a stall, the attempt not charged) or, past
    ``max_stalls``, failed for good through the same path as a handler's failure."""
    rows = conn.execute(
        "SELECT id, queue, task, tenant, stalls, max_stalls, flow, started_at, token FROM jobs "
        "WHERE status = 'active' AND lease_expires_at < ?",
        (now,),
    ).fetchall()
    out: list[Recovered] = []
    e = _Ended(now)
    for job_id, queue, task, tenant, stalls, max_stalls, flow, started, token in rows:
        stalls += 1
        e.events.append(("stalled", job_id, queue, task, tenant, now, f'{{"stalls":{stalls}}}'))
        conn.execute("UPDATE jobs SET stalls = ? WHERE id = ?", (stalls, job_id))
        if stalls > max_stalls:
            error = {
                "type": "Stalled",
                "message": f"lease expired {stalls} times (max_stalls={max_stalls}): the worker "
                "died or blocked its event loop",
            }
            failed = encode(Outcome(job_id, token, OutcomeKind.FAILED, error=error))
            _end_failed(conn, e, failed)
            out.append(Recovered(job_id, queue, JobState.FAILED))
            continue
        # A stall does not charge the attempt: the worker died, not the job.
        conn.execute(
            "UPDATE jobs SET status = 'queued', attempt = attempt - 1, lease_expires_at = NULL, "
            "worker = NULL, progress = NULL WHERE id = ?",
            (job_id,),
        )
        e.deltas[(queue, "active")] -= 1
        e.deltas[(queue, "queued")] += 1
        if flow is not None:  # a dead worker's slots are free again: no breaker verdict
            e.left.append((queue, flow, None, started))
            e.requeued.append((queue, flow))
        out.append(Recovered(job_id, queue, JobState.QUEUED))
    e.apply(conn)
    # Cancelled attempts whose worker died before reporting their end.
    held = conn.execute(
        "SELECT id, token FROM jobs WHERE status = 'cancelled' AND lease_expires_at < ?", (now,)
    ).fetchall()
    if held:
        end_held(conn, now, held)
    return out
