"""PostgreSQL reads (list, stats, batch counts) and maintenance (counts folding, retention,
cleanup)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from ...errors import ValidationError
from ...inputs import brief
from ...job import FINAL_STATES, JobState
from ..base import BatchCounts, JobPage, ListParams, QueueStats, Retention
from . import batches as bt
from . import fanin, flows, gates
from . import jobs as ops
from .sql import JOB_COLS, Conn, Schema, row_to_job

DELETE_CHUNK = 5000
STATS_WINDOW = 60.0

# Deltas folded into counts: the oldest rows first, rows another folder holds are skipped (two
# folders never count a delta twice); counts rows are upserted in key order (no deadlock).
_FOLD = """
WITH d AS (
  DELETE FROM {s}.count_deltas WHERE id IN (
    SELECT id FROM {s}.count_deltas ORDER BY id LIMIT 50000 FOR UPDATE SKIP LOCKED)
  RETURNING queue, status, n
)
INSERT INTO {s}.counts (queue, status, n)
SELECT queue, status, sum(n) FROM d GROUP BY queue, status ORDER BY queue, status
ON CONFLICT (queue, status) DO UPDATE SET n = counts.n + excluded.n
"""


async def fold_counts(conn: Conn, s: Schema) -> None:
    """Fold count deltas into ``counts`` (each call up to 50,000 deltas; nothing is locked
    or written when there are none)."""
    await conn.execute(s(_FOLD))


async def list_jobs(conn: Conn, s: Schema, p: ListParams) -> JobPage:
    where: list[str] = [f"status = '{p.status.value}'"] if p.status else []
    args: list[Any] = []
    for col, val in (("queue", p.queue), ("task", p.task), ("batch", p.batch),
                     ("tenant", p.tenant)):  # fmt: skip
        if val is not None:
            where.append(f"{col} = %s")
            args.append(val)
    if p.cursor:
        if not (p.cursor.isascii() and p.cursor.isdigit() and len(p.cursor) <= 18):
            raise ValidationError(f"invalid cursor {brief(p.cursor)}", field="cursor")
        where.append("seq < %s")
        args.append(int(p.cursor))
    sql = f"SELECT seq, {JOB_COLS} FROM {{s}}.jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT %s"
    cur = await conn.execute(s(sql), (*args, p.limit + 1))
    rows = await cur.fetchall()
    more = len(rows) > p.limit
    rows = rows[: p.limit]
    return JobPage([row_to_job(r[1:]) for r in rows], str(rows[-1][0]) if more else None)


async def batch_counts(conn: Conn, s: Schema, batch: str, tenant: str | None) -> BatchCounts:
    t = await ops.now(conn)
    recorded = await bt.counts(conn, s, t, batch, tenant)
    if recorded is not None:
        return recorded
    counts: dict[str, int] = {}
    total = 0
    first = last = None
    cur = await conn.execute(
        s("SELECT status, count(*), min(started_at), max(finished_at) FROM {s}.jobs "
          "WHERE batch = %(b)s AND (%(t)s::text IS NULL OR tenant = %(t)s) GROUP BY status"),
        {"b": batch, "t": tenant},
    )  # fmt: skip
    for status, n, started, finished in await cur.fetchall():
        counts[status] = n
        total += n
        if started is not None:
            first = started if first is None else min(first, started)
        if finished is not None:
            last = finished if last is None else max(last, finished)
    return BatchCounts(batch, counts, total, first, last, t)


# The head of a queue's line: its best unlimited job and its best claimable flow, by score.
_HEAD = """
SELECT (100 - priority)::bigint * 1099511627776 + seq, created_at, scheduled_for FROM {s}.jobs
WHERE queue = %s AND status = 'queued' AND flow IS NULL ORDER BY priority DESC, seq LIMIT 1
"""
_HEAD_FLOW = """
SELECT j.created_at, j.scheduled_for, f.head FROM {s}.flows f JOIN {s}.jobs j
ON j.seq = f.head %% 1099511627776 WHERE f.queue = %s AND f.head IS NOT NULL
AND f.blocked_until IS NULL AND f.wait_gate IS NULL ORDER BY f.head LIMIT 1
"""


async def _oldest(conn: Conn, s: Schema, now: float, queue: str) -> float | None:
    """Seconds since the queue's next job to claim became ready (None: nothing claimable)."""
    cur = await conn.execute(s(_HEAD), (queue,))
    ready = await cur.fetchone()
    cur = await conn.execute(s(_HEAD_FLOW), (queue,))
    flow = await cur.fetchone()
    if flow is not None and (ready is None or flow[2] < ready[0]):
        times = (flow[0], flow[1])
    elif ready is not None:
        times = (ready[1], ready[2])
    else:
        return None
    return max(0.0, now - (times[1] or times[0]))


async def stats(conn: Conn, s: Schema, queues: Sequence[str] | None) -> dict[str, QueueStats]:
    """Counts from ``counts`` plus the deltas not folded yet (folded first: O(queues) rows to
    read); throughput and average run time from the jobs finished in the window (an index
    range of ``jobs_finished``), no counter row written by the finish path."""
    await fold_counts(conn, s)
    t = await ops.now(conn)
    out: dict[str, QueueStats] = {}

    def get(q: str) -> QueueStats:
        if q not in out:
            out[q] = QueueStats(q, {st.value: 0 for st in JobState}, window=STATS_WINDOW)
        return out[q]

    for q in queues or ():
        get(q)
    cur = await conn.execute(
        s("SELECT queue, status, sum(n) FROM (SELECT queue, status, n FROM {s}.counts "
          "UNION ALL SELECT queue, status, n FROM {s}.count_deltas) c GROUP BY queue, status")
    )  # fmt: skip
    for q, status, n in await cur.fetchall():
        if queues is None or q in out:
            get(q).counts[status] = int(n)
    cur = await conn.execute(
        s("SELECT queues, concurrency FROM {s}.workers WHERE seen_at >= %s - ttl"), (t,)
    )
    for queues_json, conc in await cur.fetchall():
        for q in orjson.loads(queues_json):
            if queues is None or q in out:
                st = get(q)
                st.workers += 1
                st.concurrency += conc
    cur = await conn.execute(s("SELECT queue FROM {s}.paused_queues"))
    for (q,) in await cur.fetchall():
        if queues is None or q in out:
            get(q).paused = True
    cur = await conn.execute(s("SELECT queue, task, unit, total FROM {s}.costs"))
    for q, task, unit, total in await cur.fetchall():
        if q in out:
            out[q].cost.setdefault(task, {})[unit] = total
    cur = await conn.execute(s("SELECT key, value FROM {s}.meta WHERE key LIKE 'max_queued:%%'"))
    limits = {k[len("max_queued:") :]: int(v) for k, v in await cur.fetchall()}
    for st in out.values():
        st.active = st.counts.get("active", 0)
        st.max_queued = limits.get(st.queue)
        st.limits = await gates.describe(conn, s, t, st.queue)
        cur = await conn.execute(
            s("SELECT count(*), sum(finished_at - started_at) FROM {s}.jobs WHERE queue = %s "
              "AND status = 'completed' AND finished_at IS NOT NULL AND finished_at > %s"),
            (st.queue, t - STATS_WINDOW),
        )  # fmt: skip
        done, secs = await cur.fetchone()
        if done:
            st.throughput_per_s = done / STATS_WINDOW
            st.avg_run_seconds = (secs or 0.0) / done
        if st.counts.get("queued", 0):
            st.oldest_seconds = await _oldest(conn, s, t, st.queue)
    return out


async def _delete(conn: Conn, s: Schema, where: str, args: tuple[Any, ...]) -> int:
    """Delete matching jobs in chunks of `DELETE_CHUNK` (bounded locks and WAL per statement;
    autovacuum reclaims the space between runs), keeping counts exact."""
    total = 0
    while True:
        cur = await conn.execute(
            s(f"WITH d AS (DELETE FROM {{s}}.jobs WHERE seq IN (SELECT seq FROM {{s}}.jobs "
              f"WHERE {where} LIMIT {DELETE_CHUNK} FOR UPDATE SKIP LOCKED) "
              "RETURNING queue, status, CASE WHEN fanin IS NULL THEN NULL ELSE id END AS parent, "
              "CASE WHEN held THEN flow END AS hflow, started_at) "
              "SELECT queue, status, count(*), array_remove(array_agg(parent), NULL), "
              "array_agg(hflow) FILTER (WHERE hflow IS NOT NULL), "
              "array_agg(started_at) FILTER (WHERE hflow IS NOT NULL) FROM d "
              "GROUP BY queue, status"),
            args,
        )  # fmt: skip
        rows = await cur.fetchall()
        n = sum(r[2] for r in rows)
        await ops.write_deltas(conn, s, Counter({(q, st): -c for q, st, c, *_ in rows}))
        held = [(r[0], f, None, st) for r in rows if r[4] for f, st in zip(r[4], r[5], strict=True)]
        if held:  # a cancelled attempt still running held its gates' slots: deleting frees them
            await flows.lock(conn, s, {h[0] for h in held})
            t = await ops.now(conn)
            await flows.settle(conn, s, t, held)
        parents = [p for r in rows for p in r[3]]
        if parents:  # a deleted parent's edges go with it
            await fanin.forget(conn, s, parents)
        total += n
        if n < DELETE_CHUNK:
            return total


async def apply_retention(conn: Conn, s: Schema, queue: str, rule: Retention) -> int:
    t = await ops.now(conn)
    removed = 0
    for state, max_age, max_count in (
        ("completed", rule.completed_max_age, rule.completed_max_count),
        ("failed", rule.failed_max_age, rule.failed_max_count),
        ("cancelled", rule.cancelled_max_age, rule.cancelled_max_count),
    ):
        if max_count is not None:
            # The state is checked on the row too, not only in the list: a row locked after
            # a retry committed is re-checked on its new version, the list is not re-read.
            removed += await _delete(
                conn, s,
                "queue = %s AND status = %s AND seq IN (SELECT seq FROM {s}.jobs WHERE "
                "queue = %s AND status = %s AND finished_at IS NOT NULL "
                "ORDER BY finished_at DESC, seq DESC OFFSET %s)",
                (queue, state, queue, state, max_count),
            )  # fmt: skip
        if max_age is not None:
            removed += await _delete(
                conn, s, "queue = %s AND status = %s AND finished_at < %s",
                (queue, state, t - max_age),
            )  # fmt: skip
    await bt.expire(conn, s, t)
    return removed


async def cleanup(conn: Conn, s: Schema, older_than: float, states: Sequence[JobState]) -> int:
    t = await ops.now(conn)
    removed = 0
    for state in states:
        if state in FINAL_STATES:
            removed += await _delete(
                conn, s, "status = %s AND finished_at IS NOT NULL AND finished_at < %s",
                (state.value, t - older_than),
            )  # fmt: skip
    return removed
