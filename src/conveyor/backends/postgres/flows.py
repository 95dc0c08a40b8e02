"""Flows of the PostgreSQL backend, kept in step with their jobs (the model is SQLite's, see
`conveyor.backends.sqlite.flow`): gates and flows stored at enqueue, flow heads refreshed as
ready jobs change, gates given back their slots (and breakers fed) as jobs leave ``active``.
The claim side is `flow_claim`.

Concurrency: every transaction that changes a queue's gates or flows first takes that queue's
flow lock (`lock`: ``pg_advisory_xact_lock``, held to its commit), in queue-name order. So
flow-controlled work of one queue is serialized as on SQLite's single writer, while unlimited
jobs never take the lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..base import NewJob
from ..sqlite.gates import SETTLED, GateRow, gate_names, task_of
from .gates import Gates
from .sql import Conn, Schema, arrays

SCORE_SHIFT = 1 << 40


async def lock(conn: Conn, s: Schema, queues: Iterable[str]) -> None:
    """Take the flow locks of ``queues`` (name order) until the transaction ends."""
    for q in sorted(set(queues)):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{s.name}:flow:{q}",))


async def store_gates(conn: Conn, s: Schema, jobs: Iterable[NewJob]) -> None:
    """Upsert the gates' rules and create the flows of jobs about to be inserted."""
    gates: dict[tuple[str, str], str] = {}
    flows: set[tuple[str, str]] = set()
    for j in jobs:
        if j.flow is None:
            continue
        flows.add((j.queue, j.flow))
        for g in j.gates:
            gates[(j.queue, g.name)] = g.spec
    if not flows:
        return
    keys = sorted(gates)
    cur = await conn.execute(
        s("SELECT g.queue, g.name, g.spec FROM {s}.gates g JOIN unnest(%s::text[], %s::text[]) "
          "AS k(q, n) ON g.queue = k.q AND g.name = k.n"),
        arrays(keys, 2),
    )  # fmt: skip
    changed = sorted((q, n) for q, n, spec in await cur.fetchall() if spec != gates[(q, n)])
    rows = [(q, n, gates[(q, n)]) for q, n in keys]
    await conn.execute(
        s("INSERT INTO {s}.gates (queue, name, spec) SELECT * FROM unnest(%s::text[], "
          "%s::text[], %s::text[]) ON CONFLICT (queue, name) DO UPDATE SET spec = excluded.spec "
          "WHERE gates.spec <> excluded.spec"),
        arrays(rows, 3),
    )  # fmt: skip
    for q, n in changed:  # a changed rule (a raised cap) may admit flows waiting on the old one
        await conn.execute(
            s("UPDATE {s}.flows SET wait_gate = NULL WHERE queue = %s AND wait_gate = %s"), (q, n)
        )
        await conn.execute(
            s("UPDATE {s}.gates SET waiters = 0 WHERE queue = %s AND name = %s"), (q, n)
        )
    await conn.execute(
        s("INSERT INTO {s}.flows (queue, flow) SELECT * FROM unnest(%s::text[], %s::text[]) "
          "ON CONFLICT DO NOTHING"),
        arrays(sorted(flows), 2),
    )  # fmt: skip


_HEAD = """
UPDATE {s}.flows f SET head = (
  SELECT (100 - j.priority)::bigint * 1099511627776 + j.seq FROM {s}.jobs j
  WHERE j.queue = f.queue AND j.flow = f.flow AND j.status = 'queued' AND j.flow IS NOT NULL
  ORDER BY j.priority DESC, j.seq LIMIT 1)
FROM unnest(%s::text[], %s::text[]) AS k(q, fl) WHERE f.queue = k.q AND f.flow = k.fl
"""


async def refresh_heads(
    conn: Conn, s: Schema, pairs: Iterable[tuple[str, str | None]], *, claimed: bool = False
) -> None:
    """Recompute the head of flows whose ready jobs changed (``flow`` None entries skipped).
    A waiting flow that got a ready job while its gate has room becomes claimable now."""
    keys = sorted({(q, f) for q, f in pairs if f is not None})
    if not keys:
        return
    cols = arrays(keys, 2)
    await conn.execute(s(_HEAD), cols)
    if claimed:
        return
    cur = await conn.execute(
        s("SELECT f.queue, f.flow, f.wait_gate FROM {s}.flows f JOIN unnest(%s::text[], "
          "%s::text[]) AS k(q, fl) ON f.queue = k.q AND f.flow = k.fl "
          "WHERE f.wait_gate IS NOT NULL AND f.head IS NOT NULL"),
        cols,
    )  # fmt: skip
    waiting = await cur.fetchall()
    if not waiting:
        return
    gates = Gates(conn, s)
    await gates.load({(q, g) for q, _, g in waiting})
    for q, flow, name in waiting:
        g = gates.get(q, name)
        if g is not None and g.spec["k"] == "conc" and g.room():
            await conn.execute(
                s("UPDATE {s}.flows SET wait_gate = NULL WHERE queue = %s AND flow = %s"),
                (q, flow),
            )
            g.waiters = max(0, g.waiters - 1)
            g.dirty = True
    await gates.save()


async def settle(
    conn: Conn,
    s: Schema,
    now: float,
    left: Iterable[tuple[str, str | None, bool | None, float | None]],
) -> bool:
    """Jobs ``(queue, flow, outcome, started)`` left ``active``: give their gates back their
    slots and feed breakers. True when set-aside flows became claimable (wake workers)."""
    jobs = [(q, [n for n in gate_names(f) if n.startswith(SETTLED)], ok, started)
            for q, f, ok, started in left if f is not None]  # fmt: skip
    jobs = [j for j in jobs if j[1]]
    if not jobs:
        return False
    gates = Gates(conn, s)
    await gates.load({(q, n) for q, names, _, _ in jobs for n in names})
    events: list[tuple[Any, ...]] = []
    touched: set[tuple[str, str]] = set()
    for queue, names, outcome, started in jobs:
        for name in names:
            g = gates.get(queue, name)
            if g is None:
                continue
            ev = g.settle(outcome, now, started)
            touched.add((queue, name))
            if ev is not None:
                data = {"gate": name, "failures": g.fails}
                if ev == "breaker_opened":
                    data["open_until"] = g.until
                events.append((ev, None, queue, task_of(name), None, now,
                               orjson.dumps(data).decode()))  # fmt: skip
    woke = False
    for queue, name in sorted(touched):
        g = gates.get(queue, name)
        if g is not None and g.waiters > 0 and g.frees_waiters():
            woke = await unwait(conn, s, g, g.room()) > 0 or woke
    await gates.save()
    if events:
        from .jobs import add_events

        await add_events(conn, s, events)
    return woke


async def unwait(conn: Conn, s: Schema, g: GateRow, n: int | None) -> int:
    """Make the ``n`` best flows waiting on gate ``g`` claimable again (all when None), and
    any that have no ready job. Keeps ``g.waiters`` in step; returns how many."""
    if n is None:
        cur = await conn.execute(
            s("UPDATE {s}.flows SET wait_gate = NULL WHERE queue = %s AND wait_gate = %s"),
            (g.queue, g.name),
        )
        count = cur.rowcount
    else:
        cur = await conn.execute(
            s("UPDATE {s}.flows SET wait_gate = NULL WHERE queue = %s AND wait_gate = %s "
              "AND head IS NULL"),
            (g.queue, g.name),
        )  # fmt: skip
        count = cur.rowcount
        if n > 0:
            cur = await conn.execute(
                s("UPDATE {s}.flows SET wait_gate = NULL WHERE (queue, flow) IN (SELECT queue, "
                  "flow FROM {s}.flows WHERE queue = %s AND wait_gate = %s AND head IS NOT NULL "
                  "ORDER BY head LIMIT %s)"),
                (g.queue, g.name, n),
            )  # fmt: skip
            count += cur.rowcount
    g.waiters = 0 if n is None else max(0, g.waiters - count)
    g.dirty = True
    return int(count)
