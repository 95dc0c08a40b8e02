"""Flows of the SQLite backend kept in step with their jobs: gates and flows stored at enqueue,
flow heads refreshed as ready jobs change, and gates given back their slots (and breakers fed)
as jobs leave ``active``. The model is in `flow`; the claim side is `flow_claim`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

from ..base import NewJob
from .gates import SETTLED, GateRow, Gates, gate_names, task_of

SCORE_SHIFT = 1 << 40  # score = (100 - priority) * 2^40 + seq, as in the Redis ready sets

_HEAD = (
    "UPDATE flows SET head = (SELECT (100 - j.priority) * 1099511627776 + j.seq FROM jobs AS j "
    "WHERE j.queue = flows.queue AND j.flow = flows.flow AND j.status = 'queued' "
    "AND j.flow IS NOT NULL ORDER BY j.priority DESC, j.seq LIMIT 1) "
    "WHERE (queue, flow) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
)


# -- enqueue side -------------------------------------------------------------------------------


def store_gates(conn: sqlite3.Connection, jobs: Iterable[NewJob]) -> None:
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
    keys = orjson.dumps(list(gates)).decode()
    changed = [
        (q, n)
        for q, n, spec in conn.execute(
            "SELECT queue, name, spec FROM gates WHERE (queue, name) IN "
            "(SELECT value ->> 0, value ->> 1 FROM json_each(?))",
            (keys,),
        )
        if spec != gates[(q, n)]
    ]
    conn.executemany(
        "INSERT INTO gates (queue, name, spec) VALUES (?, ?, ?) "
        "ON CONFLICT (queue, name) DO UPDATE SET spec = excluded.spec WHERE spec != excluded.spec",
        [(q, n, s) for (q, n), s in gates.items()],
    )
    # A changed rule (a raised cap, say) may admit flows waiting on the old one.
    conn.executemany("UPDATE flows SET wait_gate = NULL WHERE queue = ? AND wait_gate = ?", changed)
    conn.executemany("UPDATE gates SET waiters = 0 WHERE queue = ? AND name = ?", changed)
    conn.executemany("INSERT OR IGNORE INTO flows (queue, flow) VALUES (?, ?)", sorted(flows))


def refresh_heads(
    conn: sqlite3.Connection, pairs: Iterable[tuple[str, str | None]], *, claimed: bool = False
) -> None:
    """Recompute the head of flows whose ready jobs changed (``flow`` None entries are skipped).

    A waiting flow that got a ready job while its gate has room (freed slots are handed to the
    best waiters of that moment, see `unwait`) becomes claimable now: its new job may come
    before the flows that were handed the room. ``claimed``: the flows were just claimed from,
    so none of them waits.
    """
    keys = sorted({(q, f) for q, f in pairs if f is not None})
    if not keys:
        return
    text = orjson.dumps(keys).decode()
    conn.execute(_HEAD, (text,))
    if claimed:
        return
    waiting = conn.execute(
        "SELECT queue, flow, wait_gate FROM flows WHERE (queue, flow) IN "
        "(SELECT value ->> 0, value ->> 1 FROM json_each(?)) AND wait_gate IS NOT NULL "
        "AND head IS NOT NULL",
        (text,),
    ).fetchall()
    if not waiting:
        return
    gates = Gates(conn)
    gates.load({(q, g) for q, _, g in waiting})
    for q, flow, name in waiting:
        g = gates.rows.get((q, name))
        if g is not None and g.spec["k"] == "conc" and g.room():
            conn.execute(
                "UPDATE flows SET wait_gate = NULL WHERE queue = ? AND flow = ?", (q, flow)
            )
            g.waiters = max(0, g.waiters - 1)
            g.dirty = True
    gates.save()


# -- jobs leaving `active` ----------------------------------------------------------------------


def settle(
    conn: sqlite3.Connection,
    now: float,
    left: Iterable[tuple[str, str | None, bool | None, float | None]],
) -> bool:
    """Jobs ``(queue, flow, outcome)`` left ``active``: give their gates back their slots and
    feed breakers. Returns True when set-aside flows became claimable (wake workers)."""
    jobs = [(q, [n for n in gate_names(f) if n.startswith(SETTLED)], ok, started)
            for q, f, ok, started in left if f is not None]  # fmt: skip
    jobs = [j for j in jobs if j[1]]
    if not jobs:
        return False
    gates = Gates(conn)
    gates.load({(q, n) for q, names, _, _ in jobs for n in names})
    events: list[tuple[Any, ...]] = []
    touched: set[tuple[str, str]] = set()
    for queue, names, outcome, started in jobs:
        for name in names:
            g = gates.rows.get((queue, name))
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
    for queue, name in touched:
        g = gates.rows[(queue, name)]
        if g is not None and g.waiters > 0 and g.frees_waiters():
            woke = unwait(conn, g, g.room()) > 0 or woke
    gates.save()
    if events:
        conn.executemany(
            "INSERT INTO events (type, job_id, queue, task, tenant, time, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            events,
        )
    return woke


def unwait(conn: sqlite3.Connection, g: GateRow, n: int | None) -> int:
    """Make the ``n`` best flows waiting on gate ``g`` claimable again (all when None), and
    any that have no ready job (they cost nothing; a job enqueued later must not find them
    waiting on a gate with room). Keeps ``g.waiters`` in step; returns how many.

    A freed concurrency slot admits as many waiting flows as it has room for, not all of them:
    under a saturated shared cap with thousands of keyed flows, admitting all would make every
    claim set them aside again. A flow admitted but refused by another of its gates hands its
    turn to the next waiter (`FlowClaim._allowance`), so free room never sits idle.
    """
    if n is None:
        count = conn.execute(
            "UPDATE flows SET wait_gate = NULL WHERE queue = ? AND wait_gate = ?", (g.queue, g.name)
        ).rowcount
    else:
        count = conn.execute(
            "UPDATE flows SET wait_gate = NULL WHERE queue = ? AND wait_gate = ? AND head IS NULL",
            (g.queue, g.name),
        ).rowcount
        if n > 0:
            count += conn.execute(
                "UPDATE flows SET wait_gate = NULL WHERE (queue, flow) IN (SELECT queue, flow "
                "FROM flows WHERE queue = ? AND wait_gate = ? AND head IS NOT NULL "
                "ORDER BY head LIMIT ?)",
                (g.queue, g.name, n),
            ).rowcount
    g.waiters = 0 if n is None else max(0, g.waiters - count)
    g.dirty = True
    return count
