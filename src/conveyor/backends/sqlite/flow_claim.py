"""The flow-aware part of a SQLite claim: which flows are claimable, and `FlowClaim`, which
takes jobs from unlimited candidates and flow heads in (priority, FIFO) order, charging gates.
The model is in `flow`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from .flow_state import SCORE_SHIFT, refresh_heads, unwait
from .gates import UNLIMITED, Gates, gate_names, task_of

MAX_REFUSED = 64  # flows set aside per claim before returning (keeps one claim's work bounded)
FETCH_MORE = 8  # a pass reads more than the head of each flow only when this few are listed

_MORE = (
    "SELECT (100 - priority) * 1099511627776 + seq, seq FROM jobs WHERE queue = ? AND flow = ? "
    "AND status = 'queued' AND flow IS NOT NULL "
    "AND (100 - priority) * 1099511627776 + seq > ? AND (100 - priority) * 1099511627776 + seq < ? "
    "ORDER BY priority DESC, seq LIMIT ?"
)
_SECOND = (
    "SELECT min((SELECT (100 - j.priority) * 1099511627776 + j.seq FROM jobs AS j "
    "WHERE j.queue = f.value ->> 0 AND j.flow = f.value ->> 1 AND j.status = 'queued' "
    "AND j.flow IS NOT NULL ORDER BY j.priority DESC, j.seq LIMIT 1 OFFSET 1)) "
    "FROM json_each(?) AS f"
)


def has_flows(conn: sqlite3.Connection, now: float, queues: Sequence[str]) -> bool:
    """Release flows whose set-aside time passed; True if any flow of ``queues`` is claimable."""
    found = False
    for q in queues:
        conn.execute(
            "UPDATE flows SET blocked_until = NULL WHERE queue = ? AND blocked_until <= ?", (q, now)
        )
        if not found:
            found = (
                conn.execute(
                    "SELECT 1 FROM flows WHERE queue = ? AND head IS NOT NULL "
                    "AND blocked_until IS NULL AND wait_gate IS NULL LIMIT 1",
                    (q,),
                ).fetchone()
                is not None
            )
    return found


def next_permitted(conn: sqlite3.Connection, queues: Sequence[str]) -> float | None:
    """The earliest time a set-aside flow with ready jobs may be claimable again."""
    best: float | None = None
    for q in queues:
        row = conn.execute(
            "SELECT min(blocked_until) FROM flows WHERE queue = ? AND blocked_until IS NOT NULL "
            "AND head IS NOT NULL AND wait_gate IS NULL",
            (q,),
        ).fetchone()
        if row and row[0] is not None and (best is None or row[0] < best):
            best = row[0]
    return best


class FlowClaim:
    """The flow-aware claim of one transaction: takes, in (priority, FIFO) order, from the
    unlimited candidates and the claimable flows, charging gates as it takes.

    It works in passes so that many flows cost about what one does: a pass lists the best
    ``total + 1`` claimable flow heads per queue (their head seq is part of the stored score, so
    no job is read to know it), computes every gate's allowance once, sets aside flows a gate
    refuses, and merges heads with unlimited candidates below the first unlisted head. Only when
    few flows are listed does it read more than their head from each (one range read per flow).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        now: float,
        worker: str,
        caps: dict[str, int],
        total: int,
        claim_sql: str,
    ) -> None:
        self.conn = conn
        self.claim_sql = claim_sql  # moves seqs to active, RETURNING the job rows (ops)
        self.now = now
        self.worker = worker
        self.caps = caps  # queue -> how many more this claim may take from it
        self.total = total  # how many more this claim may take in all
        self.gates = Gates(conn)
        self.events: list[tuple[Any, ...]] = []
        self.truncated = False  # stopped early (MAX_REFUSED): more may be claimable now
        self.refused = 0
        self.replaced = False  # this pass admitted a waiter in a refused flow's place

    def run(self, unlimited: list[tuple[int, int, str]]) -> tuple[list[int], list[Any]]:
        """``unlimited``: candidates (score, seq, queue) in order, not yet claimed. Returns the
        seqs of unlimited jobs to claim and of flow jobs claimed (already moved to active)."""
        take_u: list[int] = []
        take_f: list[Any] = []
        ui = 0
        while self.total > 0 and not self.truncated:
            listed, bound = self._listed()
            if not listed:
                break
            self.replaced = False
            flows = self._admit(listed)
            if not flows or self.replaced:
                # Every listed flow was set aside, or a refused one handed its turn to a waiter
                # that may come first: list again before taking anything.
                continue
            cands: list[tuple[int, int, str, str | None]] = [
                (head, head % SCORE_SHIFT, q, flow) for head, q, flow in flows
            ]
            if len(flows) <= FETCH_MORE:
                cands += self._more(flows, bound)
            else:
                # Heads only: stop the pass below the best second job of any listed flow, so
                # no job is taken ahead of a better one this pass did not read.
                second = self._second(flows)
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
                take_f += self._apply(taken)
        # What is left of the unlimited candidates once no flow competes.
        for _, seq, q in unlimited[ui:]:
            if self.total <= 0:
                break
            if self.caps[q] > 0:
                take_u.append(seq)
                self.caps[q] -= 1
                self.total -= 1
        self.gates.save()
        return take_u, take_f

    def _listed(self) -> tuple[list[tuple[int, str, str]], int]:
        """Claimable flow heads below ``bound``: the first head not listed (2^62 if none)."""
        bound = 1 << 62
        out: list[tuple[int, str, str]] = []
        for q, cap in self.caps.items():
            if cap <= 0:
                continue
            rows = self.conn.execute(
                "SELECT head, flow FROM flows WHERE queue = ? AND head IS NOT NULL "
                "AND blocked_until IS NULL AND wait_gate IS NULL ORDER BY head LIMIT ?",
                (q, self.total + 1),
            ).fetchall()
            if len(rows) > self.total:
                bound = min(bound, rows[-1][0])
                rows = rows[:-1]
            out += [(h, q, f) for h, f in rows]
        return [x for x in sorted(out) if x[0] < bound], bound

    def _admit(self, listed: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
        """Flows some gate allows now; the others are set aside. Loads their gates at once."""
        need = {(q, n) for _, q, f in listed for n in gate_names(f)}
        self.gates.load(need)
        self.budget: dict[tuple[str, str], int] = {}
        admitted = []
        for head, q, flow in listed:
            if self._allowance(q, flow) > 0:
                admitted.append((head, q, flow))
            else:
                self.refused += 1
                if self.refused >= MAX_REFUSED:
                    self.truncated = True
                    break
        return admitted

    def _more(
        self, flows: list[tuple[int, str, str]], bound: int
    ) -> list[tuple[int, int, str, str | None]]:
        """Jobs after each flow's head, below ``bound``, as many as its gates could allow."""
        out: list[tuple[int, int, str, str | None]] = []
        for head, q, flow in flows:
            n = min(self._flow_budget(q, flow), self.caps[q], self.total) - 1
            if n <= 0:
                continue
            out += [
                (score, seq, q, flow)
                for score, seq in self.conn.execute(_MORE, (q, flow, head, bound, n))
            ]
        return out

    def _second(self, flows: list[tuple[int, str, str]]) -> int | None:
        """The best score among the listed flows' second ready jobs (one statement)."""
        row = self.conn.execute(_SECOND, (orjson.dumps([(q, f) for _, q, f in flows]).decode(),))
        value = row.fetchone()[0]
        return None if value is None else int(value)

    def _take(
        self, cands: list[tuple[int, int, str, str | None]], take_u: list[int]
    ) -> dict[str, tuple[str, list[int]]]:
        """Pick candidates in order within caps and gate budgets; unlimited seqs go to
        ``take_u``; returns flow -> (queue, seqs) taken from flows."""
        taken, self.total = pick(cands, self.caps, self.budget, self.total, take_u)
        return taken

    def _apply(self, taken: dict[str, tuple[str, list[int]]]) -> list[Any]:
        """Move the picked flow jobs to active (returning their rows), charge their gates,
        refresh their heads."""
        seqs = [seq for _, ss in taken.values() for seq in ss]
        rows = self.conn.execute(
            self.claim_sql,
            {"now": self.now, "worker": self.worker, "seqs": orjson.dumps(seqs).decode()},
        ).fetchall()
        for flow, (q, ss) in taken.items():
            for name in gate_names(flow):
                g = self.gates.get(q, name)
                if g is not None:
                    g.charge(len(ss), self.now)
        refresh_heads(self.conn, [(q, flow) for flow, (q, _) in taken.items()], claimed=True)
        return rows

    def _flow_budget(self, queue: str, flow: str) -> int:
        return min((self.budget.get((queue, n), UNLIMITED) for n in gate_names(flow)),
                   default=UNLIMITED)  # fmt: skip

    def _allowance(self, queue: str, flow: str) -> int:
        """How many jobs the flow may start now (gate allowances computed once per pass);
        when none, set it aside (until a time, or until a slot of a full gate frees)."""
        allowed = UNLIMITED
        until: float | None = None
        wait: str | None = None
        rate_gate: str | None = None
        for name in gate_names(flow):
            g = self.gates.get(queue, name)
            if g is None:  # rule not stored (cannot happen: stored at enqueue): no limit
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
        if until is None and wait is None:  # drained by other flows in this pass: retry later
            until = self.now
        for name in gate_names(flow):  # hand this flow's turn at gates with room to a waiter
            g = self.gates.rows.get((queue, name))
            if g is not None and g.waiters > 0 and self.budget.get((queue, name), 0) > 0:
                self.replaced = unwait(self.conn, g, 1) > 0 or self.replaced
        if wait is not None:
            w = self.gates.rows.get((queue, wait))
            if w is not None:
                w.waiters += 1
                w.dirty = True
        self.conn.execute(
            "UPDATE flows SET blocked_until = ?, wait_gate = ? WHERE queue = ? AND flow = ?",
            (until, wait, queue, flow),
        )
        if rate_gate is not None and wait is None:
            self.events.append(("rate_limited", None, queue, task_of(rate_gate), None, self.now,
                                orjson.dumps({"gate": rate_gate, "until": until}).decode()))  # fmt: skip
        return 0


def pick(
    cands: list[tuple[int, int, str, str | None]],
    caps: dict[str, int],
    budget: dict[tuple[str, str], int],
    total: int,
    take_u: list[int],
) -> tuple[dict[str, tuple[str, list[int]]], int]:
    """Pick claim candidates in order within the per-queue ``caps``, the gates' ``budget`` and
    ``total`` (all charged as they are taken); unlimited seqs go to ``take_u``. Returns flow ->
    (queue, seqs) taken from flows, and what is left of ``total``. Shared by the SQLite and
    PostgreSQL flow claims."""
    taken: dict[str, tuple[str, list[int]]] = {}
    out_of_budget: set[str] = set()
    for _, seq, q, flow in cands:
        if total <= 0:
            break
        if caps[q] <= 0:
            continue
        if flow is not None:
            if flow in out_of_budget:
                continue
            keys = [(q, n) for n in gate_names(flow)]
            if any(budget.get(k, UNLIMITED) <= 0 for k in keys):
                out_of_budget.add(flow)
                continue
            for k in keys:
                if k in budget:
                    budget[k] -= 1
            taken.setdefault(flow, (q, []))[1].append(seq)
        else:
            take_u.append(seq)
        caps[q] -= 1
        total -= 1
    return taken, total
