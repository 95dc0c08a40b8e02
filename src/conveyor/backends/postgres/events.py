"""The PostgreSQL event log and its cursor.

Sequence values are handed out when rows are inserted, not when transactions commit: an event
with a lower id can become visible after a reader went past it. So every event records its
transaction id (``xid``, `pg_current_xact_id()`), and a read hands out only events of
transactions older than the oldest transaction still running (``pg_snapshot_xmin`` of the
reader's snapshot): those are all finished, and no transaction started later can get an xid
below that horizon. Events are ordered by ``(xid, id)`` and the cursor is that pair
(``"p<xid>.<id>"``): everything at or before it was handed out, and nothing can appear there any
more. A transaction's events are contiguous; a transaction that saw another's commit before
writing has the larger xid, so causal order is kept (a job's ``enqueued`` comes before its
``started``). The price: while a transaction is open, events of later transactions wait for it
(a long transaction around a transactional enqueue delays every reader until it ends).

A bulk enqueue of jobs of one queue, task and tenant writes one *packed* row for their
``enqueued`` events (``job_ids``, schema_2.sql). A reader hands its jobs out one by one, at
positions ``(xid, id, k)``, k = 1, 2, ... (cursor ``"p<xid>.<id>.<k>"``) and the last one at
``(xid, id, WHOLE)``: the position of a whole row read, which is also every other row's (one
event each; their cursors keep the two-number form). A cursor inside a packed row resumes with
the job after it.

Trimming deletes whole rows and raises a watermark (``meta`` ``events_trimmed``: a cursor
position) in the trimming transaction; a reader behind it gets `EventsTrimmed`.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...errors import EventsTrimmed, ValidationError
from ..base import EVENTS_OLDEST, Event, EventFilter, EventPage, EventRetention, EventType
from .sql import Conn, Schema

_TYPES = {e.value: e for e in EventType}
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"
_SIZE = "coalesce(cardinality(job_ids), 1)"  # the events a row holds

#: The third number of a row's position once all of it was handed out: a whole (unpacked)
#: row's own position, and the watermark of a deleted row.
WHOLE = 2**31 - 1
Pos = tuple[int, int, int]
# The events after position (x, i, k): rows from (x, i) on, a packed row expanded into the jobs
# of a slice of it (`{lo}` jobs skipped, `{take}` at most: a page never expands more of a
# big bulk than it hands out). A job's k is its place in the row; the last one's is WHOLE.
_K = f"CASE WHEN c.lo + u.n < c.size THEN c.lo + u.n ELSE {WHOLE} END"
_READ = (
    f"SELECT e.xid::text::bigint, e.id, {_K}, e.type, coalesce(u.job, e.job_id), e.queue, "
    "e.task, e.tenant, e.time, e.data FROM {{s}}.events e "
    "LEFT JOIN LATERAL (SELECT cardinality(e.job_ids) AS size, {lo} AS lo) c ON true "
    "LEFT JOIN LATERAL unnest(e.job_ids[c.lo + 1:"
    "least(c.lo::bigint + {take}, coalesce(c.size, 0))::int]) WITH ORDINALITY AS u(job, n) ON true "
    "WHERE (e.xid, e.id) >= (%(x)s::text::xid8, %(i)s) AND e.xid < " + _HORIZON + " "
    f"AND (e.xid, e.id, {_K}) > (%(x)s::text::xid8, %(i)s, %(k)s) "
    "AND (e.job_ids IS NULL OR u.job IS NOT NULL)"
)


def cursor(pos: Pos) -> str:
    xid, ident, k = pos
    return f"p{xid}.{ident}" if k == WHOLE else f"p{xid}.{ident}.{k}"


def position(since: str) -> Pos:
    """A cursor this backend issued -> (xid, id, k); ``"0"`` is before every event."""
    if since == "0":
        return (0, 0, WHOLE)
    parts = since[1:].split(".") if since.startswith("p") else []
    if not (len(parts) in (2, 3) and all(p.isascii() and p.isdigit() for p in parts)
            and len(parts[0]) <= 19 and len(parts[1]) <= 19
            and (len(parts) == 2 or (len(parts[2]) <= 10 and 0 < int(parts[2]) < WHOLE))):  # fmt: skip
        raise ValidationError(f"invalid event cursor {since[:40]!r}", field="since")
    return (int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else WHOLE)


async def watermark(conn: Conn, s: Schema) -> Pos:
    cur = await conn.execute(s("SELECT value FROM {s}.meta WHERE key = 'events_trimmed'"))
    row = await cur.fetchone()
    return position(row[0]) if row else (0, 0, WHOLE)


async def read(
    conn: Conn, s: Schema, since: str, limit: int, where: EventFilter | None
) -> EventPage:
    """Events after ``since`` of finished transactions, in (xid, id, k) order (see module doc).
    Runs in one REPEATABLE READ transaction (the caller's): the watermark, the horizon and the
    rows come from one snapshot."""
    oldest = since == EVENTS_OLDEST
    after = (0, 0, WHOLE) if oldest else position(since)
    trimmed = await watermark(conn, s)
    if not oldest and after < trimmed:
        raise EventsTrimmed(since, cursor(trimmed))
    after = max(after, trimmed)
    args: dict[str, Any] = {"x": str(after[0]), "i": after[1], "k": after[2], "limit": limit}
    # (An empty EventFilter is falsy: ``where and where.queue`` would be the filter itself.)
    w = where or EventFilter()
    if w.job_id is None:  # a packed row yields the page's worth of jobs after the cursor
        lo = ("CASE WHEN e.job_ids IS NOT NULL AND e.xid = %(x)s::text::xid8 AND e.id = %(i)s "
              "THEN least(%(k)s, cardinality(e.job_ids) - 1) ELSE 0 END")  # fmt: skip
        take = "%(limit)s"
        cond = ""
    else:  # the job's own events, and its place in the packed row of its enqueue
        args["job"] = w.job_id
        lo, take = "array_position(e.job_ids, %(job)s) - 1", "1"
        cond = " AND coalesce(u.job, e.job_id) = %(job)s AND " + await _job_rows(conn, s, args)
    sql = _READ.format(lo=lo, take=take) + cond
    for col, val in (("queue", w.queue), ("tenant", w.tenant)):
        if val is not None:
            sql += f" AND e.{col} = %({col})s"
            args[col] = val
    cur = await conn.execute(s(sql + " ORDER BY e.xid, e.id, 3 LIMIT %(limit)s"), args)
    rows = await cur.fetchall()
    events = [
        Event(cursor((r[0], r[1], r[2])), _TYPES[r[3]], r[4], r[5], r[6], r[7], r[8],
              orjson.loads(r[9]) if r[9] else {})
        for r in rows
    ]  # fmt: skip
    last = (rows[-1][0], rows[-1][1], rows[-1][2]) if rows else after
    if where and len(rows) < limit:
        # A filtered read that came up short examined everything up to the horizon: continue
        # from there, so a reader whose filter rarely matches does not fall behind a trim.
        last = max(last, await _horizon(conn))
    return EventPage(events, cursor(last), more=len(rows) == limit)


async def _job_rows(conn: Conn, s: Schema, args: dict[str, Any]) -> str:
    """The condition on rows holding events of job ``args["job"]``: its own rows (events_job)
    and the packed row of its enqueue, which the job names by its key (events_packed). A job
    deleted by retention no longer names it: the packed rows are searched (rare, and as many as
    bulk enqueues)."""
    cur = await conn.execute(s("SELECT enq_pack FROM {s}.jobs WHERE id = %s"), (args["job"],))
    row = await cur.fetchone()
    if row is None:
        return "(e.job_id = %(job)s OR (e.pack IS NOT NULL AND %(job)s = ANY(e.job_ids)))"
    if row[0] is None:
        return "e.job_id = %(job)s"
    args["pack"] = row[0]
    return "(e.job_id = %(job)s OR e.pack = %(pack)s)"


async def _horizon(conn: Conn) -> Pos:
    """The position before every event of transactions not finished yet."""
    cur = await conn.execute(f"SELECT {_HORIZON}::text::bigint")
    xmin = int((await cur.fetchone())[0])
    return (xmin - 1, 2**63 - 1, WHOLE)


async def last_cursor(conn: Conn, s: Schema) -> str:
    return cursor(await _horizon(conn))


async def append(conn: Conn, s: Schema, type: str, job_id: str | None, queue: str | None,
                 task: str | None, tenant: str | None, data: dict[str, Any] | None) -> None:  # fmt: skip
    await conn.execute(
        s("INSERT INTO {s}.events (type, job_id, queue, task, tenant, time, data) "
          "VALUES (%s, %s, %s, %s, %s, extract(epoch FROM clock_timestamp()), %s)"),
        (type, job_id, queue, task, tenant, orjson.dumps(data).decode() if data else None),
    )  # fmt: skip


async def trim(conn: Conn, s: Schema, now: float, rule: EventRetention) -> int:
    """Delete the oldest handed-out events beyond the rule's age and count, in (xid, id)
    order, and raise the watermark in the same transaction. Rows go whole: a packed row is
    kept while any of its events is within the count (at most one row keeps a few more)."""
    cut: Pos | None = None
    if rule.max_age is not None:
        cur = await conn.execute(
            s(f"SELECT xid::text::bigint, id FROM {{s}}.events WHERE xid < {_HORIZON} "
              "AND time < %s ORDER BY xid DESC, id DESC LIMIT 1"),
            (now - rule.max_age,),
        )  # fmt: skip
        row = await cur.fetchone()
        if row:
            cut = (row[0], row[1], WHOLE)
    if rule.max_count is not None:
        # The newest row with at least max_count events after it (a packed row counts its
        # jobs): it and every older row go.
        cur = await conn.execute(
            s(f"SELECT x, i FROM (SELECT xid::text::bigint AS x, id AS i, sum({_SIZE}) OVER "
              "(ORDER BY xid DESC, id DESC ROWS UNBOUNDED PRECEDING) - "
              f"{_SIZE} AS newer FROM {{s}}.events WHERE xid < {_HORIZON} "
              "ORDER BY xid DESC, id DESC) r WHERE newer >= %s LIMIT 1"),
            (rule.max_count,),
        )  # fmt: skip
        row = await cur.fetchone()
        if row and (cut is None or (row[0], row[1], WHOLE) > cut):
            cut = (row[0], row[1], WHOLE)
    if cut is None:
        return 0
    removed = 0
    while True:  # in chunks: one huge delete would hold its locks and bloat in one go
        cur = await conn.execute(
            s(f"WITH d AS (DELETE FROM {{s}}.events WHERE (xid, id) IN (SELECT xid, id FROM "
              "{s}.events WHERE (xid, id) <= (%s::text::xid8, %s) ORDER BY xid, id "
              f"LIMIT 10000) RETURNING {_SIZE} AS n) SELECT count(*), coalesce(sum(n), 0) FROM d"),
            (str(cut[0]), cut[1]),
        )  # fmt: skip
        rows, events = await cur.fetchone()
        removed += int(events)
        if rows < 10000:
            break
    if removed:
        old = await watermark(conn, s)
        await conn.execute(
            s("INSERT INTO {s}.meta (key, value) VALUES ('events_trimmed', %s) "
              "ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
            (cursor(max(old, cut)),),
        )  # fmt: skip
    return removed
