"""The flow-aware claim of the PostgreSQL backend (SQLite's `flow_claim`, ported): under the
claim's queues' flow locks, take jobs from unlimited candidates and claimable flow heads in
(priority, FIFO) order, charging gates. Runs in one transaction (`claim`)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from ..base import ClaimParams, ClaimResult
from ..sqlite.flow_claim import pick
from ..sqlite.gates import UNLIMITED, gate_names, task_of
from . import flows as fl
from .gates import Gates
from .sql import J_COLS, NOW, Conn, Schema, row_to_job

MAX_REFUSED = 64
FETCH_MORE = 8
SCORE = "(100 - priority)::bigint * 1099511627776 + seq"

CLAIM_SEQS = f"""
WITH claimed AS (
  UPDATE {{s}}.jobs j SET status = 'active', attempt = j.attempt + 1, token = j.token + 1,
    started_at = %(now)s, lease_expires_at = %(now)s + j.lease, worker = %(worker)s,
    progress = NULL
  WHERE j.seq = ANY(%(seqs)s) AND j.status = 'queued'
  RETURNING j.seq, {J_COLS}
),
ev AS (
  INSERT INTO {{s}}.events (type, job_id, queue, task, tenant, time, data)
  SELECT 'started', id, queue, task, tenant, started_at, '{{"attempt":' || attempt || '}}'
  FROM claimed ORDER BY priority DESC, seq
),
cnt AS (
  INSERT INTO {{s}}.count_deltas (queue, status, n)
  SELECT queue, 'queued', -count(*) FROM claimed GROUP BY queue
  UNION ALL SELECT queue, 'active', count(*) FROM claimed GROUP BY queue
)
SELECT * FROM claimed
"""


_PROMOTE = f"""
WITH p AS (UPDATE {{s}}.jobs SET status = 'queued' WHERE status = 'scheduled'
  AND queue = ANY(%s) AND flow IS NOT NULL AND scheduled_for <= {NOW} RETURNING queue, flow)
SELECT queue, flow, count(*) FROM p GROUP BY queue, flow
"""
_UNBLOCK = f"""
UPDATE {{s}}.flows SET blocked_until = NULL WHERE queue = ANY(%s) AND blocked_until <= {NOW}
"""
_UNLIMITED = f"""
SELECT {SCORE}, seq FROM {{s}}.jobs WHERE status = 'queued' AND queue = %(q)s
AND flow IS NULL AND NOT EXISTS (SELECT 1 FROM {{s}}.paused_queues WHERE queue = %(q)s)
ORDER BY priority DESC, seq LIMIT %(n)s FOR UPDATE SKIP LOCKED
"""


async def claim(conn: Conn, s: Schema, p: ClaimParams, caps: dict[str, int]) -> ClaimResult:
    """The claim when a queue of the claim has flows (the caller's transaction). Its first
    statements (the flow locks, the clock and paused queues, due flow jobs promoted, set-aside
    flows whose time came released, unlimited candidates) go out in one pipeline."""
    queues = list(caps)
    pipeline = getattr(conn, "pipeline", None)
    async with pipeline() if pipeline is not None else _nothing():
        for q in sorted(queues):
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{s.name}:flow:{q}",)
            )
        c_now = await conn.execute(
            s(f"SELECT {NOW}, ARRAY(SELECT queue FROM {{s}}.paused_queues WHERE queue = ANY(%s))"),
            (queues,),
        )
        c_prom = await conn.execute(s(_PROMOTE), (queues,))
        await conn.execute(s(_UNBLOCK), (queues,))
        c_un = [
            (q, await conn.execute(s(_UNLIMITED), {"q": q, "n": cap}))
            for q, cap in caps.items()
            if cap > 0
        ]
    now_row = await c_now.fetchone()
    now = float(now_row[0])
    for q in now_row[1]:
        caps[q] = 0
    live = [q for q in p.queues if caps.get(q, 0) > 0]
    promoted = await c_prom.fetchall()
    if promoted:
        from .jobs import write_deltas

        deltas: Counter[tuple[str, str]] = Counter()
        for q, _, n in promoted:
            deltas[(q, "queued")] += n
            deltas[(q, "scheduled")] -= n
        await write_deltas(conn, s, deltas)
        await fl.refresh_heads(conn, s, [(q, f) for q, f, _ in promoted])
    unlimited: list[tuple[int, int, str]] = []
    for q, cur in c_un:
        rows_q = await cur.fetchall()
        if caps[q] > 0:
            unlimited += [(score, seq, q) for score, seq in rows_q]
    unlimited.sort()
    fc = FlowClaim(conn, s, now, p.worker, dict(caps), p.limit)
    take_u, rows = await fc.run(unlimited)
    if take_u:
        cur = await conn.execute(s(CLAIM_SEQS), {"now": now, "worker": p.worker, "seqs": take_u})
        rows += await cur.fetchall()
    if fc.events:
        from .jobs import add_events

        await add_events(conn, s, fc.events)
    limited = dict(Counter(e[2] for e in fc.events if e[0] == "rate_limited"))
    rows.sort(key=lambda r: (-r[5], r[0]))
    due = None
    if len(rows) < p.limit:
        due = now if fc.truncated else await next_due(conn, s, live)
    return ClaimResult([row_to_job(r[1:]) for r in rows], due, limited)


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


async def next_due(conn: Conn, s: Schema, queues: Sequence[str]) -> float | None:
    """The earliest due scheduled job or set-aside flow's permitted time of ``queues``."""
    cur = await conn.execute(
        s("SELECT least((SELECT min(scheduled_for) FROM {s}.jobs WHERE status = 'scheduled' "
          "AND queue = ANY(%(q)s)), (SELECT min(blocked_until) FROM {s}.flows WHERE "
          "queue = ANY(%(q)s) AND blocked_until IS NOT NULL AND head IS NOT NULL "
          "AND wait_gate IS NULL))"),
        {"q": list(queues)},
    )  # fmt: skip
    return (await cur.fetchone())[0]


class FlowClaim:
    """SQLite's `FlowClaim`, async: passes over the best claimable flow heads per queue, each
    gate's allowance computed once per pass, refused flows set aside."""

    def __init__(self, conn: Conn, s: Schema, now: float, worker: str, caps: dict[str, int],
                 total: int) -> None:  # fmt: skip
        self.conn, self.s, self.now, self.worker = conn, s, now, worker
        self.caps = caps
        self.total = total
        self.gates = Gates(conn, s)
        self.events: list[tuple[Any, ...]] = []
        self.truncated = False
        self.refused = 0
        self.replaced = False
        self.budget: dict[tuple[str, str], int] = {}

    async def run(self, unlimited: list[tuple[int, int, str]]) -> tuple[list[int], list[Any]]:
        take_u: list[int] = []
        take_f: list[Any] = []
        ui = 0
        while self.total > 0 and not self.truncated:
            listed, bound = await self._listed()
            if not listed:
                break
            self.replaced = False
            flows = await self._admit(listed)
            if not flows or self.replaced:
                continue
            cands: list[tuple[int, int, str, str | None]] = [
                (head, head % fl.SCORE_SHIFT, q, flow) for head, q, flow in flows
            ]
            if len(flows) <= FETCH_MORE:
                cands += await self._more(flows, bound)
            else:
                second = await self._second(flows)
                if second is not None and second < bound:
                    bound = second
                    cands = [c for c in cands if c[0] < bound]
            while ui < len(unlimited) and unlimited[ui][0] < bound:
                score, seq, q = unlimited[ui]
                cands.append((score, seq, q, None))
                ui += 1
            cands.sort()
            taken = self._take(cands, take_u)
            if taken:
                take_f += await self._apply(taken)
        for _, seq, q in unlimited[ui:]:
            if self.total <= 0:
                break
            if self.caps[q] > 0:
                take_u.append(seq)
                self.caps[q] -= 1
                self.total -= 1
        await self.gates.save()
        return take_u, take_f

    async def _listed(self) -> tuple[list[tuple[int, str, str]], int]:
        bound = 1 << 62
        out: list[tuple[int, str, str]] = []
        for q, cap in self.caps.items():
            if cap <= 0:
                continue
            cur = await self.conn.execute(
                self.s("SELECT head, flow FROM {s}.flows WHERE queue = %s AND head IS NOT NULL "
                       "AND blocked_until IS NULL AND wait_gate IS NULL ORDER BY head LIMIT %s"),
                (q, self.total + 1),
            )  # fmt: skip
            rows = await cur.fetchall()
            if len(rows) > self.total:
                bound = min(bound, rows[-1][0])
                rows = rows[:-1]
            out += [(h, q, f) for h, f in rows]
        return [x for x in sorted(out) if x[0] < bound], bound

    async def _admit(self, listed: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
        await self.gates.load({(q, n) for _, q, f in listed for n in gate_names(f)})
        self.budget = {}
        admitted = []
        for head, q, flow in listed:
            if await self._allowance(q, flow) > 0:
                admitted.append((head, q, flow))
            else:
                self.refused += 1
                if self.refused >= MAX_REFUSED:
                    self.truncated = True
                    break
        return admitted

    async def _more(
        self, flows: list[tuple[int, str, str]], bound: int
    ) -> list[tuple[int, int, str, str | None]]:
        out: list[tuple[int, int, str, str | None]] = []
        for head, q, flow in flows:
            n = min(self._flow_budget(q, flow), self.caps[q], self.total) - 1
            if n <= 0:
                continue
            cur = await self.conn.execute(
                self.s(f"SELECT {SCORE}, seq FROM {{s}}.jobs WHERE queue = %s AND flow = %s "
                       f"AND status = 'queued' AND {SCORE} > %s AND {SCORE} < %s "
                       "ORDER BY priority DESC, seq LIMIT %s"),
                (q, flow, head, bound, n),
            )  # fmt: skip
            out += [(score, seq, q, flow) for score, seq in await cur.fetchall()]
        return out

    async def _second(self, flows: list[tuple[int, str, str]]) -> int | None:
        best: int | None = None
        for _, q, flow in flows:
            cur = await self.conn.execute(
                self.s(f"SELECT {SCORE} FROM {{s}}.jobs WHERE queue = %s AND flow = %s "
                       "AND status = 'queued' ORDER BY priority DESC, seq LIMIT 1 OFFSET 1"),
                (q, flow),
            )  # fmt: skip
            row = await cur.fetchone()
            if row is not None and (best is None or row[0] < best):
                best = int(row[0])
        return best

    def _take(
        self, cands: list[tuple[int, int, str, str | None]], take_u: list[int]
    ) -> dict[str, tuple[str, list[int]]]:
        taken, self.total = pick(cands, self.caps, self.budget, self.total, take_u)
        return taken

    async def _apply(self, taken: dict[str, tuple[str, list[int]]]) -> list[Any]:
        seqs = [seq for _, ss in taken.values() for seq in ss]
        cur = await self.conn.execute(
            self.s(CLAIM_SEQS), {"now": self.now, "worker": self.worker, "seqs": seqs}
        )
        rows = await cur.fetchall()
        for flow, (q, ss) in taken.items():
            for name in gate_names(flow):
                g = self.gates.get(q, name)
                if g is not None:
                    g.charge(len(ss), self.now)
        await fl.refresh_heads(self.conn, self.s, [(q, f) for f, (q, _) in taken.items()],
                               claimed=True)  # fmt: skip
        return list(rows)

    def _flow_budget(self, queue: str, flow: str) -> int:
        return min((self.budget.get((queue, n), UNLIMITED) for n in gate_names(flow)),
                   default=UNLIMITED)  # fmt: skip

    async def _allowance(self, queue: str, flow: str) -> int:
        allowed = UNLIMITED
        until: float | None = None
        wait: str | None = None
        rate_gate: str | None = None
        for name in gate_names(flow):
            g = self.gates.get(queue, name)
            if g is None:
                continue
            key = (queue, name)
            if key not in self.budget:
                n, at, waits = g.allowance(self.now)
                self.budget[key] = n
                g.refusal = (at, waits)
            n = self.budget[key]
            allowed = min(allowed, n)
            if n == 0:
                at, waits = g.refusal
                if waits:
                    wait = name
                elif at is not None and (until is None or at > until):
                    until = at
                    if g.spec["k"] == "rate":
                        rate_gate = name
        if allowed > 0:
            return allowed
        if until is None and wait is None:
            until = self.now
        for name in gate_names(flow):
            g = self.gates.get(queue, name)
            if g is not None and g.waiters > 0 and self.budget.get((queue, name), 0) > 0:
                self.replaced = await fl.unwait(self.conn, self.s, g, 1) > 0 or self.replaced
        if wait is not None:
            w = self.gates.get(queue, wait)
            if w is not None:
                w.waiters += 1
                w.dirty = True
        await self.conn.execute(
            self.s("UPDATE {s}.flows SET blocked_until = %s, wait_gate = %s "
                   "WHERE queue = %s AND flow = %s"),
            (until, wait, queue, flow),
        )  # fmt: skip
        if rate_gate is not None and wait is None:
            self.events.append(("rate_limited", None, queue, task_of(rate_gate), None, self.now,
                                orjson.dumps({"gate": rate_gate, "until": until}).decode()))  # fmt: skip
        return 0
