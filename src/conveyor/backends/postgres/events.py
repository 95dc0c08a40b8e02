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

Trimming raises a watermark (``meta`` ``events_trimmed``: a cursor position) in the trimming
transaction; a reader behind it gets `EventsTrimmed`.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...errors import EventsTrimmed, ValidationError
from ..base import EVENTS_OLDEST, Event, EventFilter, EventPage, EventRetention, EventType
from .sql import Conn, Schema

_TYPES = {e.value: e for e in EventType}
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"
Pos = tuple[int, int]


def cursor(pos: Pos) -> str:
    return f"p{pos[0]}.{pos[1]}"


def position(since: str) -> Pos:
    """A cursor this backend issued -> (xid, id); ``"0"`` is before every event."""
    if since == "0":
        return (0, 0)
    xid, dot, ident = since[1:].partition(".") if since.startswith("p") else ("", "", "")
    if not (dot and xid.isascii() and xid.isdigit() and ident.isascii() and ident.isdigit()
            and len(xid) <= 19 and len(ident) <= 19):  # fmt: skip
        raise ValidationError(f"invalid event cursor {since[:40]!r}", field="since")
    return (int(xid), int(ident))


async def watermark(conn: Conn, s: Schema) -> Pos:
    cur = await conn.execute(s("SELECT value FROM {s}.meta WHERE key = 'events_trimmed'"))
    row = await cur.fetchone()
    return position(row[0]) if row else (0, 0)


async def read(
    conn: Conn, s: Schema, since: str, limit: int, where: EventFilter | None
) -> EventPage:
    """Events after ``since`` of finished transactions, in (xid, id) order (see module doc).
    Runs in one REPEATABLE READ transaction (the caller's): the watermark, the horizon and the
    rows come from one snapshot."""
    oldest = since == EVENTS_OLDEST
    after = (0, 0) if oldest else position(since)
    trimmed = await watermark(conn, s)
    if not oldest and after < trimmed:
        raise EventsTrimmed(since, cursor(trimmed))
    after = max(after, trimmed)
    sql = (f"SELECT xid::text::bigint, id, type, job_id, queue, task, tenant, time, data "
           f"FROM {{s}}.events WHERE (xid, id) > (%s::text::xid8, %s) AND xid < {_HORIZON}")  # fmt: skip
    args: list[Any] = [str(after[0]), after[1]]
    # (An empty EventFilter is falsy: ``where and where.queue`` would be the filter itself.)
    w = where or EventFilter()
    for col, val in (("queue", w.queue), ("tenant", w.tenant), ("job_id", w.job_id)):
        if val is not None:
            sql += f" AND {col} = %s"
            args.append(val)
    cur = await conn.execute(s(sql + " ORDER BY xid, id LIMIT %s"), (*args, limit))
    rows = await cur.fetchall()
    events = [
        Event(cursor((r[0], r[1])), _TYPES[r[2]], r[3], r[4], r[5], r[6], r[7],
              orjson.loads(r[8]) if r[8] else {})
        for r in rows
    ]  # fmt: skip
    last = (rows[-1][0], rows[-1][1]) if rows else after
    if where and len(rows) < limit:
        # A filtered read that came up short examined everything up to the horizon: continue
        # from there, so a reader whose filter rarely matches does not fall behind a trim.
        last = max(last, await _horizon(conn))
    return EventPage(events, cursor(last), more=len(rows) == limit)


async def _horizon(conn: Conn) -> Pos:
    """The position before every event of transactions not finished yet."""
    cur = await conn.execute(f"SELECT {_HORIZON}::text::bigint")
    xmin = int((await cur.fetchone())[0])
    return (xmin - 1, 2**63 - 1)


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
    order, and raise the watermark in the same transaction."""
    cut: Pos | None = None
    if rule.max_age is not None:
        cur = await conn.execute(
            s(f"SELECT xid::text::bigint, id FROM {{s}}.events WHERE xid < {_HORIZON} "
              "AND time < %s ORDER BY xid DESC, id DESC LIMIT 1"),
            (now - rule.max_age,),
        )  # fmt: skip
        row = await cur.fetchone()
        if row:
            cut = (row[0], row[1])
    if rule.max_count is not None:
        cur = await conn.execute(
            s(f"SELECT xid::text::bigint, id FROM {{s}}.events WHERE xid < {_HORIZON} "
              "ORDER BY xid DESC, id DESC OFFSET %s LIMIT 1"),
            (rule.max_count,),
        )  # fmt: skip
        row = await cur.fetchone()
        if row and (cut is None or (row[0], row[1]) > cut):
            cut = (row[0], row[1])
    if cut is None:
        return 0
    removed = 0
    while True:  # in chunks: one huge delete would hold its locks and bloat in one go
        cur = await conn.execute(
            s("DELETE FROM {s}.events WHERE (xid, id) IN (SELECT xid, id FROM {s}.events "
              "WHERE (xid, id) <= (%s::text::xid8, %s) ORDER BY xid, id LIMIT 10000)"),
            (str(cut[0]), cut[1]),
        )  # fmt: skip
        removed += cur.rowcount
        if cur.rowcount < 10000:
            break
    if removed:
        old = await watermark(conn, s)
        await conn.execute(
            s("INSERT INTO {s}.meta (key, value) VALUES ('events_trimmed', %s) "
              "ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
            (cursor(max(old, cut)),),
        )  # fmt: skip
    return removed
