"""Gates of the SQLite backend: a limit's rule and state (table ``gates``), their arithmetic
(GCRA, concurrency slots, breaker transitions), loading and saving in one statement each, and
the process-independent limiter behind ``ctx.limit``. The Redis scripts mirror this arithmetic
(``lua/includes/flow.lua``). See docs/architecture.md, "Flow control"."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import orjson

from ...limits import gcra

UNLIMITED = 1 << 30
MAX_DESCRIBED = 100  # gates listed per queue in stats()


@lru_cache(maxsize=65536)
def gate_names(flow: str) -> tuple[str, ...]:
    """The gate names of a flow id (parsed once per process: flows repeat constantly)."""
    return tuple(orjson.loads(flow))


@lru_cache(maxsize=4096)
def _spec(text: str) -> dict[str, Any]:
    """A gate's rule, parsed once per distinct rule text (treat as read-only)."""
    spec: dict[str, Any] = orjson.loads(text)
    return spec


# Gates whose state changes when a job leaves `active` (rate gates are charged only at claim).
SETTLED = ("conc:", "breaker:")


class GateRow:
    """A gate's rule and state, loaded once per transaction step and written back if changed."""

    __slots__ = ("active", "dirty", "fails", "name", "probe", "queue", "refusal", "spec", "state",
                 "tat", "until", "waiters", "wcalls", "wfails", "wstart")  # fmt: skip

    def __init__(self, queue: str, row: Sequence[Any]) -> None:
        self.queue = queue
        (self.name, spec, self.tat, self.active, self.state, self.fails, self.until, self.probe,
         self.wstart, self.wcalls, self.wfails, self.waiters) = row  # fmt: skip
        self.spec: dict[str, Any] = _spec(spec)
        self.dirty = False
        self.refusal: tuple[float | None, bool] = (None, False)

    def allowance(self, now: float) -> tuple[int, float | None, bool]:
        """(starts allowed now, time when one may be allowed if none, wait for a slot)."""
        kind = self.spec["k"]
        if kind == "rate":
            n, at = gcra(self.tat, now, self.spec["i"], self.spec["b"])
            return n, (at if n == 0 else None), False
        if kind == "conc":
            free = int(self.spec["n"]) - self.active
            return (free, None, False) if free > 0 else (0, None, True)
        if kind == "breaker":
            if self.state == "open":
                if now < (self.until or 0):
                    return 0, self.until, False
                self.state, self.probe, self.dirty = "half", 0, True
            if self.state == "half":
                return (1, None, False) if self.probe == 0 else (0, None, True)
        return UNLIMITED, None, False

    def charge(self, n: int, now: float) -> None:
        kind = self.spec["k"]
        if kind == "rate":
            self.tat = max(self.tat, now) + n * self.spec["i"]
        elif kind == "conc":
            self.active += n
        elif kind == "breaker" and self.state == "half":
            self.probe += n
        else:
            return
        self.dirty = True

    def settle(self, outcome: bool | None, now: float, started: float | None = None) -> str | None:
        """A job that passed this gate left ``active``: free its slot; for a breaker, count
        the attempt (True ok, False failed, None no verdict). Returns an event to emit.

        Half-open, only the probe counts: a job started before the breaker's ``until`` was
        claimed before it opened, and its ending says nothing about the recovery."""
        kind = self.spec["k"]
        if kind == "conc":
            self.active = max(0, self.active - 1)
            self.dirty = True
            return None
        if kind != "breaker":
            return None
        self.dirty = True
        if self.state == "half":
            if started is None or started < (self.until or 0) - 1e-6:
                return None
            if outcome is None:
                self.probe = max(0, self.probe - 1)
                return None
            self.probe = 0
            if outcome:
                self.state, self.fails, self.wcalls, self.wfails, self.wstart = (
                    "closed",
                    0,
                    0,
                    0,
                    now,
                )
                return "breaker_closed"
            self.state, self.until = "open", now + self.spec["c"]
            return "breaker_opened"
        if self.state != "closed" or outcome is None:
            return None
        if now - self.wstart >= self.spec["w"]:
            self.wstart, self.wcalls, self.wfails = now, 0, 0
        self.wcalls += 1
        if outcome:
            self.fails = 0
            return None
        self.fails += 1
        self.wfails += 1
        f, r = self.spec["f"], self.spec["r"]
        if (f and self.fails >= f) or (
            r and self.wcalls >= self.spec["m"] and self.wfails / self.wcalls >= r
        ):
            self.state, self.until, self.probe = "open", now + self.spec["c"], 0
            return "breaker_opened"
        return None

    def room(self) -> int | None:
        """How many waiting flows a settle should admit: free slots of a concurrency gate, or
        None (all) for a breaker, whose state change concerns every waiter."""
        if self.spec["k"] == "conc":
            return max(0, int(self.spec["n"]) - self.active)
        return None

    def frees_waiters(self) -> bool:
        kind = self.spec["k"]
        if kind == "conc":
            return self.active < int(self.spec["n"])
        return kind == "breaker"

    def describe(self, now: float) -> dict[str, Any]:
        spec = self.spec
        out: dict[str, Any] = {"name": self.name, "kind": spec["k"]}
        if spec["k"] == "rate":
            out |= {"interval": spec["i"], "burst": spec["b"], "per_second": 1.0 / spec["i"],
                    "next_start_at": max(now, self.tat - (spec["b"] - 1) * spec["i"])}  # fmt: skip
        elif spec["k"] == "conc":
            out |= {"limit": spec["n"], "active": self.active}
        else:
            state = self.state
            if state == "open" and now >= (self.until or 0):
                state = "half"
            out |= {"state": {"half": "half-open"}.get(state, state), "failures": self.fails,
                    "open_until": self.until if state == "open" else None,
                    "threshold": spec["f"] or None, "ratio": spec["r"] or None}  # fmt: skip
        return out


_GATE_COLS = "name, spec, tat, active, state, fails, until, probe, wstart, wcalls, wfails, waiters"


class Gates:
    """Gate rows of one transaction step, loaded on first use and written back at the end."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.rows: dict[tuple[str, str], GateRow | None] = {}

    def get(self, queue: str, name: str) -> GateRow | None:
        key = (queue, name)
        if key not in self.rows:
            r = self.conn.execute(
                f"SELECT {_GATE_COLS} FROM gates WHERE queue = ? AND name = ?", key
            ).fetchone()
            self.rows[key] = None if r is None else GateRow(queue, r)
        return self.rows[key]

    def load(self, keys: Iterable[tuple[str, str]]) -> None:
        """Load many gates in one statement (those not loaded yet)."""
        missing = sorted(k for k in keys if k not in self.rows)
        if not missing:
            return
        for k in missing:
            self.rows[k] = None
        for r in self.conn.execute(
            f"SELECT queue, {_GATE_COLS} FROM gates WHERE (queue, name) IN "
            "(SELECT value ->> 0, value ->> 1 FROM json_each(?))",
            (orjson.dumps(missing).decode(),),
        ):
            self.rows[(r[0], r[1])] = GateRow(r[0], r[1:])

    def save(self) -> None:
        dirty = [g for g in self.rows.values() if g is not None and g.dirty]
        if not dirty:
            return
        # One statement over a JSON array each (parsed in C, cheaper than executemany); a
        # claim changes only `tat` of rate gates, the common case, so those write one column.
        rates = [(g.queue, g.name, g.tat) for g in dirty if g.spec["k"] == "rate"]
        concs = [(g.queue, g.name, g.active, g.waiters) for g in dirty if g.spec["k"] == "conc"]
        others = [(g.queue, g.name, g.tat, g.active, g.state, g.fails, g.until, g.probe,
                   g.wstart, g.wcalls, g.wfails, g.waiters)
                  for g in dirty if g.spec["k"] == "breaker"]  # fmt: skip
        if rates:
            self.conn.execute(
                "UPDATE gates SET tat = v.value ->> 2 FROM json_each(?) AS v "
                "WHERE gates.queue = v.value ->> 0 AND gates.name = v.value ->> 1",
                (orjson.dumps(rates).decode(),),
            )
        if concs:
            self.conn.execute(
                "UPDATE gates SET active = v.value ->> 2, waiters = v.value ->> 3 "
                "FROM json_each(?) AS v "
                "WHERE gates.queue = v.value ->> 0 AND gates.name = v.value ->> 1",
                (orjson.dumps(concs).decode(),),
            )
        if others:
            self.conn.execute(
                "UPDATE gates SET tat = v.value ->> 2, active = v.value ->> 3, "
                "state = v.value ->> 4, fails = v.value ->> 5, until = v.value ->> 6, "
                "probe = v.value ->> 7, wstart = v.value ->> 8, wcalls = v.value ->> 9, "
                "wfails = v.value ->> 10, waiters = v.value ->> 11 FROM json_each(?) AS v "
                "WHERE gates.queue = v.value ->> 0 AND gates.name = v.value ->> 1",
                (orjson.dumps(others).decode(),),
            )
        for g in dirty:
            g.dirty = False


def task_of(gate: str) -> str | None:
    """``rate:task:enrich[k=v]`` -> ``enrich`` (for events); None for queue or named gates."""
    _, _, rest = gate.partition(":")
    if not rest.startswith("task:"):
        return None
    return rest[5:].split("[", 1)[0]


def reserve_rate(
    conn: sqlite3.Connection, now: float, name: str, interval: float, burst: int
) -> float:
    """Reserve the next start on a process-independent rate gate; seconds to wait first."""
    row = conn.execute("SELECT tat FROM gates WHERE queue = '' AND name = ?", (name,)).fetchone()
    base = max(row[0] if row else 0.0, now)
    wait = max(0.0, base - (burst - 1) * interval - now)
    spec = orjson.dumps({"k": "rate", "i": interval, "b": burst}).decode()
    conn.execute(
        "INSERT INTO gates (queue, name, spec, tat) VALUES ('', ?, ?, ?) "
        "ON CONFLICT (queue, name) DO UPDATE SET spec = excluded.spec, tat = excluded.tat",
        (name, spec, base + interval),
    )
    return wait


def describe_gates(conn: sqlite3.Connection, now: float, queue: str) -> list[dict[str, Any]]:
    """The queue's gates for stats (the first MAX_DESCRIBED by name: keyed limits can be many)."""
    rows = conn.execute(
        f"SELECT {_GATE_COLS} FROM gates WHERE queue = ? ORDER BY name LIMIT ?",
        (queue, MAX_DESCRIBED),
    ).fetchall()
    return [GateRow(queue, r).describe(now) for r in rows]
