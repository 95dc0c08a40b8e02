"""Gates of the PostgreSQL backend: the rows of table ``gates`` loaded and saved in one
statement each. The arithmetic (GCRA, slots, breakers) is SQLite's `GateRow`, shared: one
model of flow control, as the Redis scripts mirror it. Callers hold the queue's flow lock."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..sqlite.gates import MAX_DESCRIBED, GateRow
from .sql import Conn, Schema, arrays

_COLS = "name, spec, tat, active, state, fails, until, probe, wstart, wcalls, wfails, waiters"


class Gates:
    """Gate rows of one transaction step, loaded on first use and written back at the end."""

    def __init__(self, conn: Conn, s: Schema) -> None:
        self.conn = conn
        self.s = s
        self.rows: dict[tuple[str, str], GateRow | None] = {}

    def get(self, queue: str, name: str) -> GateRow | None:
        """A gate loaded before (`load`); None when it has no row."""
        return self.rows.get((queue, name))

    async def load(self, keys: Iterable[tuple[str, str]]) -> None:
        missing = sorted(k for k in keys if k not in self.rows)
        if not missing:
            return
        for k in missing:
            self.rows[k] = None
        cur = await self.conn.execute(
            self.s(f"SELECT g.queue, {', '.join('g.' + c.strip() for c in _COLS.split(','))} "
                   "FROM {s}.gates g JOIN unnest(%s::text[], %s::text[]) AS k(q, n) "
                   "ON g.queue = k.q AND g.name = k.n"),
            arrays(missing, 2),
        )  # fmt: skip
        for r in await cur.fetchall():
            self.rows[(r[0], r[1])] = GateRow(r[0], r[1:])

    async def save(self) -> None:
        dirty = sorted(
            (g for g in self.rows.values() if g is not None and g.dirty),
            key=lambda g: (g.queue, g.name),
        )
        if not dirty:
            return
        rows = [(g.queue, g.name, g.tat, g.active, g.state, g.fails, g.until, g.probe, g.wstart,
                 g.wcalls, g.wfails, g.waiters) for g in dirty]  # fmt: skip
        await self.conn.execute(
            self.s("UPDATE {s}.gates g SET tat = v.tat, active = v.active, state = v.state, "
                   "fails = v.fails, until = v.until, probe = v.probe, wstart = v.wstart, "
                   "wcalls = v.wcalls, wfails = v.wfails, waiters = v.waiters "
                   "FROM unnest(%s::text[], %s::text[], %s::float8[], %s::int[], %s::text[], "
                   "%s::int[], %s::float8[], %s::int[], %s::float8[], %s::int[], %s::int[], "
                   "%s::int[]) AS v(queue, name, tat, active, state, fails, until, probe, wstart, "
                   "wcalls, wfails, waiters) WHERE g.queue = v.queue AND g.name = v.name"),
            arrays(rows, 12),
        )  # fmt: skip
        for g in dirty:
            g.dirty = False


async def describe(conn: Conn, s: Schema, now: float, queue: str) -> list[dict[str, Any]]:
    """The queue's gates for stats (the first MAX_DESCRIBED by name)."""
    cur = await conn.execute(
        s(f"SELECT {_COLS} FROM {{s}}.gates WHERE queue = %s ORDER BY name LIMIT %s"),
        (queue, MAX_DESCRIBED),
    )
    return [GateRow(queue, r).describe(now) for r in await cur.fetchall()]
