"""SQLite reads (list, stats, events) and maintenance (retention, cleanup, workers)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from ...errors import EventsTrimmed, ValidationError
from ...inputs import brief
from ...job import FINAL_STATES, JobState
from ..base import (
    EVENTS_OLDEST,
    BatchCounts,
    Event,
    EventFilter,
    EventPage,
    EventRetention,
    EventType,
    JobPage,
    ListParams,
    QueueStats,
    Retention,
    TaskInfo,
    WorkerInfo,
)
from . import backpressure as bp
from . import batches as bt
from . import flow as fl
from .fanin import forget
from .gates import describe_gates
from .ops import JOB_COLS, RATE_BUCKET, bump, row_to_job

DELETE_CHUNK = 5000
STATS_WINDOW = 60.0
_EVENT_TYPES = {e.value: e for e in EventType}


def list_jobs(conn: sqlite3.Connection, p: ListParams) -> JobPage:
    # The state as a literal (a closed enum): a partial index on it (jobs_awaiting) applies
    # only to a query that names the state, not to a bound parameter.
    where: list[str] = [f"status = '{p.status.value}'"] if p.status else []
    args: list[Any] = []
    # A tenant's listing walks jobs_tenant (never other tenants' jobs): "+" keeps its queue
    # and task terms off jobs_queue / jobs_task, which serve the listings of every tenant.
    plus = "+" if p.tenant is not None else ""
    for col, val in ((f"{plus}queue", p.queue), (f"{plus}task", p.task), ("batch", p.batch),
                     ("tenant", p.tenant)):  # fmt: skip
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    if p.cursor:
        # A cursor is a row's seq: plain digits that fit SQLite's INTEGER (a longer one would
        # overflow in the driver, not be refused).
        if not (p.cursor.isascii() and p.cursor.isdigit() and len(p.cursor) <= 18):
            raise ValidationError(f"invalid cursor {brief(p.cursor)}", field="cursor")
        where.append("seq < ?")
        args.append(int(p.cursor))
    sql = f"SELECT seq, {JOB_COLS} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"
    rows = conn.execute(sql, (*args, p.limit + 1)).fetchall()
    more = len(rows) > p.limit
    rows = rows[: p.limit]
    return JobPage([row_to_job(r[1:]) for r in rows], str(rows[-1][0]) if more else None)


def batch_counts(
    conn: sqlite3.Connection, now: float, batch: str, tenant: str | None = None
) -> BatchCounts:
    recorded = bt.counts(conn, now, batch, tenant)
    if recorded is not None:
        return recorded
    counts: dict[str, int] = {}
    total = 0
    first = last = None
    # ?2 NULL: every tenant's jobs of the batch; else that tenant's only.
    for status, n, started, finished in conn.execute(
        "SELECT status, count(*), min(started_at), max(finished_at) FROM jobs WHERE batch = ?1 "
        "AND (?2 IS NULL OR tenant = ?2) GROUP BY status",
        (batch, tenant),
    ):
        counts[status] = n
        total += n
        if started is not None:
            first = started if first is None else min(first, started)
        if finished is not None:
            last = finished if last is None else max(last, finished)
    return BatchCounts(batch, counts, total, first, last, now)


def stats(
    conn: sqlite3.Connection, now: float, queues: Sequence[str] | None
) -> dict[str, QueueStats]:
    out: dict[str, QueueStats] = {}

    def get(q: str) -> QueueStats:
        if q not in out:
            out[q] = QueueStats(q, {s.value: 0 for s in JobState}, window=STATS_WINDOW)
        return out[q]

    for q in queues or ():
        get(q)
    for q, status, n in conn.execute("SELECT queue, status, n FROM counts"):
        if queues is None or q in out:
            get(q).counts[status] = n
    for queues_json, conc in conn.execute(
        "SELECT queues, concurrency FROM workers WHERE seen_at >= ? - ttl", (now,)
    ):
        for q in orjson.loads(queues_json):
            if queues is None or q in out:
                s = get(q)
                s.workers += 1
                s.concurrency += conc
    since = int((now - STATS_WINDOW) // RATE_BUCKET)
    for q, done, secs in conn.execute(
        "SELECT queue, sum(completed), sum(run_seconds) FROM rates WHERE bucket > ? GROUP BY queue",
        (since,),
    ):
        if queues is None or q in out:
            s = get(q)
            s.throughput_per_s = done / STATS_WINDOW
            s.avg_run_seconds = secs / done if done else None
    for q, task, unit, total in conn.execute("SELECT queue, task, unit, total FROM costs"):
        if q in out:
            out[q].cost.setdefault(task, {})[unit] = total
    for (q,) in conn.execute("SELECT queue FROM paused_queues"):
        if queues is None or q in out:  # a paused queue is listed even before it has jobs
            get(q).paused = True
    limits = bp.recorded(conn)
    for s in out.values():
        s.active = s.counts.get("active", 0)
        s.limits = describe_gates(conn, now, s.queue)
        s.max_queued = limits.get(s.queue)
        if s.counts.get("queued", 0):
            s.oldest_seconds = oldest_seconds(conn, now, s.queue)
    return out


# The head of a queue's line: its best unlimited job (jobs_ready) and its best claimable flow
# (flows_ready), both by claim score; each is one index probe.
HEAD_READY = (
    "SELECT (100 - priority) * 1099511627776 + seq, created_at, scheduled_for FROM jobs "
    "WHERE queue = ? AND status = 'queued' AND flow IS NULL ORDER BY priority DESC, seq LIMIT 1"
)
HEAD_FLOW = (
    "SELECT head FROM flows WHERE queue = ? AND head IS NOT NULL AND blocked_until IS NULL "
    "AND wait_gate IS NULL ORDER BY head LIMIT 1"
)
JOB_TIMES = "SELECT created_at, scheduled_for FROM jobs WHERE seq = ?"


def oldest_seconds(conn: sqlite3.Connection, now: float, queue: str) -> float | None:
    """Seconds since the queue's next job to claim became ready (None: nothing claimable)."""
    ready = conn.execute(HEAD_READY, (queue,)).fetchone()
    flow = conn.execute(HEAD_FLOW, (queue,)).fetchone()
    times: tuple[float, float | None] | None = None
    if flow is not None and (ready is None or flow[0] < ready[0]):
        times = conn.execute(JOB_TIMES, (flow[0] & 0xFFFFFFFFFF,)).fetchone()
    elif ready is not None:
        times = (ready[1], ready[2])
    if times is None:
        return None
    return max(0.0, now - (times[1] or times[0]))


def _delete(conn: sqlite3.Connection, now: float, where: str, args: tuple[Any, ...]) -> int:
    """Delete matching jobs in chunks, keeping ``counts`` exact. Returns the number deleted."""
    total = 0
    while True:
        rows = conn.execute(
            f"DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE {where} LIMIT {DELETE_CHUNK}) "
            "RETURNING queue, status, flow, lease_expires_at, started_at, id, fanin",
            args,
        ).fetchall()
        if not rows:
            return total
        deltas: Counter[tuple[str, str]] = Counter()
        for q, s, *_ in rows:
            deltas[(q, s)] -= 1
        bump(conn, deltas)
        # A cancelled attempt still running held its gates' slots: deleting it frees them.
        held = [(q, f, None, started) for q, _, f, lease, started, *_ in rows if lease and f]
        if held:
            fl.settle(conn, now, held)
        parents = [r[5] for r in rows if r[6] is not None]
        if parents:  # a deleted parent's edges go with it (its children's settles find none)
            forget(conn, parents)
        total += len(rows)
        if len(rows) < DELETE_CHUNK:
            return total


def apply_retention(conn: sqlite3.Connection, now: float, queue: str, rule: Retention) -> int:
    removed = 0
    for state, max_age, max_count in (
        ("completed", rule.completed_max_age, rule.completed_max_count),
        ("failed", rule.failed_max_age, rule.failed_max_count),
        ("cancelled", rule.cancelled_max_age, rule.cancelled_max_count),
    ):
        if max_count is not None:
            # By rank, not by time: jobs finishing in the same instant tie on finished_at.
            removed += _delete(
                conn,
                now,
                "seq IN (SELECT seq FROM jobs WHERE queue = ? AND status = ? "
                "AND finished_at IS NOT NULL ORDER BY finished_at DESC, seq DESC "
                "LIMIT -1 OFFSET ?)",
                (queue, state, max_count),
            )
        if max_age is not None:
            removed += _delete(
                conn,
                now,
                "queue = ? AND status = ? AND finished_at < ?",
                (queue, state, now - max_age),
            )
    bucket = int((now - 3600) // RATE_BUCKET)
    conn.execute("DELETE FROM rates WHERE queue = ? AND bucket < ?", (queue, bucket))
    bt.expire(conn, now)  # batch records past their ttl (an index probe when none is)
    return removed


def cleanup(
    conn: sqlite3.Connection, now: float, older_than: float, states: Sequence[JobState]
) -> int:
    removed = 0
    queues = [q for (q,) in conn.execute("SELECT DISTINCT queue FROM counts")]
    for state in states:
        if state not in FINAL_STATES:
            continue
        for q in queues:
            removed += _delete(
                conn,
                now,
                "queue = ? AND status = ? AND finished_at < ?",
                (q, state.value, now - older_than),
            )
    return removed


def trim_events(conn: sqlite3.Connection, now: float, rule: EventRetention) -> int:
    """Delete the oldest events beyond the rule's age and count, and raise the trim watermark
    (`conveyor_meta` ``events_trimmed``: every event with an id at or below it is gone) in the
    same transaction, so readers behind it are told (`EventsTrimmed`)."""
    cut = 0
    if rule.max_age is not None:
        row = conn.execute(
            "SELECT max(id) FROM (SELECT id FROM events WHERE time < ? ORDER BY id LIMIT 100000)",
            (now - rule.max_age,),
        ).fetchone()
        cut = max(cut, row[0] or 0)
    if rule.max_count is not None:
        row = conn.execute("SELECT max(id) FROM events").fetchone()
        cut = max(cut, (row[0] or 0) - rule.max_count)
    if cut <= 0:
        return 0
    removed = conn.execute("DELETE FROM events WHERE id <= ?", (cut,)).rowcount
    if removed:
        conn.execute(
            "INSERT INTO conveyor_meta (key, value) VALUES ('events_trimmed', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), excluded.value)",
            (cut,),
        )
    return removed


def append_event(
    conn: sqlite3.Connection, now: float, type: str, job_id: str | None, queue: str | None,
    task: str | None, tenant: str | None, data: dict[str, Any] | None,
) -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO events (type, job_id, queue, task, tenant, time, data) VALUES (?,?,?,?,?,?,?)",
        (type, job_id, queue, task, tenant, now, orjson.dumps(data).decode() if data else None),
    )


def _position(since: str) -> int:
    if not since.isdigit() or not since.isascii():
        raise ValidationError(f"invalid event cursor {since!r}", field="since")
    return int(since)


def read_events(
    conn: sqlite3.Connection, since: str, limit: int, where: EventFilter | None
) -> EventPage:
    """Events after the cursor ``since`` (an event id) in id order, which is commit order: ids
    are allocated by the one writer at a time (BEGIN IMMEDIATE) and AUTOINCREMENT never reuses
    one. The watermark check and the read share one snapshot, so a trim cannot slip between."""
    oldest = since == EVENTS_OLDEST
    after = 0 if oldest else _position(since)
    sql = "SELECT id, type, job_id, queue, task, tenant, time, data FROM events WHERE id > ?"
    args: list[Any] = [after]
    # One equality per filter: each has an index (events_queue / _tenant / _job) on (col, id).
    # (not ``where and where.queue``: an empty EventFilter is falsy, and would be bound itself)
    for col, val in (("queue", where.queue if where else None),
                     ("tenant", where.tenant if where else None),
                     ("job_id", where.job_id if where else None)):  # fmt: skip
        if val is not None:
            sql += f" AND {col} = ?"
            args.append(val)
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        trimmed = _watermark(conn)
        if not oldest and after < trimmed:
            raise EventsTrimmed(since, str(trimmed))
        rows = conn.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        # A filtered read that came up short examined the whole log: it continues from the
        # head, so a reader whose filter matches rarely does not fall behind the trim.
        head = _head(conn) if where and len(rows) < limit else 0
    finally:
        if own:
            conn.execute("COMMIT")
    events = [
        Event(str(r[0]), _EVENT_TYPES[r[1]], r[2], r[3], r[4], r[5], r[6],
              orjson.loads(r[7]) if r[7] else {})
        for r in rows
    ]  # fmt: skip
    last = rows[-1][0] if rows else max(after, trimmed)
    return EventPage(events, str(max(last, head)), more=len(rows) == limit)


def _watermark(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM conveyor_meta WHERE key = 'events_trimmed'").fetchone()
    return int(row[0]) if row else 0


def _head(conn: sqlite3.Connection) -> int:
    # The last id ever allocated (AUTOINCREMENT), kept even when trimming emptied the log.
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0


def last_event_cursor(conn: sqlite3.Connection) -> str:
    return str(_head(conn))


_WORKER_COLS = (
    "id, queues, concurrency, active, pid, host, started_at, seen_at, ttl, running, processed, "
    "failed, tasks"
)


def worker_heartbeat(conn: sqlite3.Connection, now: float, w: WorkerInfo) -> None:
    dumps = orjson.dumps
    conn.execute(
        f"INSERT INTO workers ({_WORKER_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, "
        "concurrency = excluded.concurrency, active = excluded.active, seen_at = excluded.seen_at, "
        "ttl = excluded.ttl, running = excluded.running, processed = excluded.processed, "
        "failed = excluded.failed, tasks = excluded.tasks",
        (w.id, dumps(list(w.queues)).decode(), w.concurrency, w.active, w.pid, w.host,
         w.started_at, now, w.ttl, dumps(list(w.running)).decode(), w.processed, w.failed,
         dumps([t.to_dict() for t in w.tasks]).decode()),
    )  # fmt: skip
    # Crashed workers never unregister: forget them once their heartbeat expired.
    conn.execute("DELETE FROM workers WHERE seen_at < ? - ttl", (now,))


def remove_worker(conn: sqlite3.Connection, now: float, worker: str) -> None:
    conn.execute("DELETE FROM workers WHERE id = ?", (worker,))


def list_workers(conn: sqlite3.Connection, now: float) -> list[WorkerInfo]:
    rows = conn.execute(
        f"SELECT {_WORKER_COLS} FROM workers WHERE seen_at >= ? - ttl ORDER BY id", (now,)
    ).fetchall()
    return [_worker(r) for r in rows]


def _worker(r: Sequence[Any]) -> WorkerInfo:
    loads = orjson.loads
    tasks = [TaskInfo.from_dict(t) for t in loads(r[12])]
    return WorkerInfo(r[0], loads(r[1]), r[2], r[3], r[4], r[5], r[6], r[8], loads(r[9]), r[10],
                      r[11], tasks, r[7])  # fmt: skip
