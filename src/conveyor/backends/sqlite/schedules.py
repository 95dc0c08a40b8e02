"""Schedule state on SQLite (`conveyor.backends.schedules`): each function runs on the database
thread in the transaction `DbThread` opened, like `ops`.

`claim` reads and moves the schedule's ``last_tick`` and inserts the tick's job (`ops.enqueue`)
in that one transaction: the write lock is held from the read to the commit, so two processes
claiming the same tick are serialized and the second sees the first's tick."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..schedules import ScheduleState, TickClaim, TickOutcome, TickResult
from . import ops

_FINAL = ("completed", "failed", "cancelled")


def init(conn: sqlite3.Connection, now: float, name: str, queue: str, tick: int) -> int:
    conn.execute(
        "INSERT INTO schedules (queue, name, last_tick) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (queue, name, tick),
    )
    row = conn.execute(
        "SELECT last_tick FROM schedules WHERE queue = ? AND name = ?", (queue, name)
    ).fetchone()
    return int(row[0])


def claim(conn: sqlite3.Connection, now: float, c: TickClaim) -> TickOutcome:
    row = conn.execute(
        "SELECT last_tick, last_job FROM schedules WHERE queue = ? AND name = ?",
        (c.queue, c.schedule),
    ).fetchone()
    if row is not None and row[0] >= c.tick:
        return TickOutcome(TickResult.TAKEN, int(row[0]))
    conn.execute(
        "INSERT INTO schedules (queue, name, last_tick) VALUES (?, ?, ?) "
        "ON CONFLICT DO UPDATE SET last_tick = excluded.last_tick",
        (c.queue, c.schedule, c.tick),
    )
    if c.job is None:
        return TickOutcome(TickResult.CLAIMED, c.tick)
    previous = row[1] if row is not None else None
    if c.skip_overlap and previous is not None:
        status = conn.execute("SELECT status FROM jobs WHERE id = ?", (previous,)).fetchone()
        if status is not None and status[0] not in _FINAL:
            return TickOutcome(TickResult.BUSY, c.tick, previous)
    res = ops.enqueue(conn, now, [c.job])
    conn.execute(
        "UPDATE schedules SET last_fire = ?, last_job = ? WHERE queue = ? AND name = ?",
        (c.tick, res.ids[0], c.queue, c.schedule),
    )
    return TickOutcome(TickResult.FIRED, c.tick, res.ids[0])


def states(conn: sqlite3.Connection, items: Sequence[tuple[str, str]]) -> dict[str, ScheduleState]:
    out: dict[str, ScheduleState] = {}
    for name, queue in items:
        row = conn.execute(
            "SELECT last_tick, last_fire, last_job FROM schedules WHERE queue = ? AND name = ?",
            (queue, name),
        ).fetchone()
        if row is not None:
            out[name] = ScheduleState(int(row[0]), row[1], row[2])
    return out
