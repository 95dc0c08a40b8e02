"""PostgreSQL ends of attempts: finish (in batches), the jobs outcomes create, costs, and the
gate slots of cancelled attempts (release, renewal, progress and lease recovery: `leases`). An attempt is ``(job_id, token)``: an outcome, renewal or report of
an attempt that is no longer the job's current one matches no row and is ignored.

Completions are acknowledged with one statement per round over ``unnest`` arrays (rows, events
and count deltas together); failures and retries, rarer, one statement each, through
`end_failed` (the one place an attempt fails: handler failures and stalls alike).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..base import Outcome, OutcomeKind
from ..outcomes import Encoded, encode
from . import awaiting, fanin, flows
from . import batches as bt
from . import enqueue as enq
from . import jobs as ops
from .sql import ACTIVE, NOW, Conn, Schema, arrays

_COMPLETE = f"""
WITH t AS (SELECT {NOW} AS now), {ACTIVE},
o AS (SELECT * FROM unnest(%(ids)s::text[], %(tokens)s::bigint[], %(results)s::text[])
      AS o(id, token, result)),
done AS (
  UPDATE {{s}}.jobs j SET status = 'completed', result = o.result, finished_at = t.now,
    error = NULL, lease_expires_at = NULL
  FROM o, t, act WHERE j.id = o.id AND j.token = o.token AND j.status = act.status
  RETURNING j.id, j.queue, j.task, j.tenant, j.batch, j.seq, t.now, j.parent, j.flow,
    j.started_at
),
ev AS (
  INSERT INTO {{s}}.events (type, job_id, queue, task, tenant, time, data)
  SELECT 'completed', id, queue, task, tenant, now,
    CASE WHEN %(nexts)s::text IS NULL THEN NULL ELSE %(nexts)s::jsonb ->> id END
  FROM done ORDER BY seq
),
cnt AS (
  INSERT INTO {{s}}.count_deltas (queue, status, n)
  SELECT queue, 'active', -count(*) FROM done GROUP BY queue
  UNION ALL SELECT queue, 'completed', count(*) FROM done GROUP BY queue
)
SELECT id, batch, now, parent IS NOT NULL, queue, flow, started_at FROM done
"""
# The acknowledgement of plain completions (no batch record, parent, flow, chain, cost) as one
# statement: it needs nothing else in its transaction, so it rides in the claim's pipeline
# (`Backend.finish_and_claim`: one round trip and one commit per worker round). Jobs it leaves
# (another kind, or no longer held) go through `finish`. The members of an `enqueue_many`
# without callbacks carry a batch id with no record (a fresh id that can never gain one: a
# record is created with its first members, under a new id), so they are plain too.
PLAIN_COMPLETE = f"""
WITH t AS (SELECT {NOW} AS now), {ACTIVE},
o AS (SELECT * FROM unnest(%(ids)s::text[], %(tokens)s::bigint[], %(results)s::text[])
      AS o(id, token, result)),
done AS (
  UPDATE {{s}}.jobs j SET status = 'completed', result = o.result, finished_at = t.now,
    error = NULL, lease_expires_at = NULL
  FROM o, t, act WHERE j.id = o.id AND j.token = o.token AND j.status = act.status
  AND j.parent IS NULL AND j.flow IS NULL
  AND (j.batch IS NULL OR NOT EXISTS (SELECT 1 FROM {{s}}.batches b WHERE b.id = j.batch))
  RETURNING j.id, j.queue, j.task, j.tenant, j.seq, t.now
),
ev AS (
  INSERT INTO {{s}}.events (type, job_id, queue, task, tenant, time)
  SELECT 'completed', id, queue, task, tenant, now FROM done ORDER BY seq
),
cnt AS (
  INSERT INTO {{s}}.count_deltas (queue, status, n)
  SELECT queue, 'active', -count(*) FROM done GROUP BY queue
  UNION ALL SELECT queue, 'completed', count(*) FROM done GROUP BY queue
)
SELECT id FROM done
"""


def plain_args(outcomes: Sequence[Outcome]) -> dict[str, Any] | None:
    """The arguments of `PLAIN_COMPLETE`, or None when an outcome is not a plain completion
    (it fails, awaits, hands over, reports a cost, or its result cannot be stored)."""
    rows = []
    for o in outcomes:
        if o.kind is not OutcomeKind.COMPLETED or o.then or o.cost or o.fanout is not None:
            return None
        enc = encode(o)
        if enc.kind is not OutcomeKind.COMPLETED:
            return None
        rows.append((enc.job_id, enc.token, enc.result))
    ids, tokens, results = arrays(rows, 3)
    return {"ids": ids, "tokens": tokens, "results": results}


_RETRY = (
    "UPDATE {s}.jobs SET status = %s, scheduled_for = %s, error = %s, lease_expires_at = NULL, "
    "worker = NULL, progress = NULL WHERE id = %s AND token = %s AND status = 'active' "
    "RETURNING queue, task, tenant, attempt, flow, started_at"
)
_FAIL = (
    "UPDATE {s}.jobs SET status = 'failed', error = %s, finished_at = %s, lease_expires_at = NULL "
    "WHERE id = %s AND token = %s AND status = 'active' "
    "RETURNING queue, task, tenant, attempt, flow, started_at, batch"
)


@dataclass(slots=True)
class Ended:
    """What one step of finishing attempts changed, written once at its end."""

    now: float
    deltas: Counter[tuple[str, str]] = field(default_factory=Counter)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    ended: Counter[tuple[str, str]] = field(default_factory=Counter)  # (batch, final state)
    woke: set[str] = field(default_factory=set)  # queues with jobs made ready
    # Flow jobs that left active (queue, flow, outcome, started) / went back to queued.
    left: list[tuple[str, str | None, bool | None, float | None]] = field(default_factory=list)
    requeued: list[tuple[str, str | None]] = field(default_factory=list)

    async def apply(self, conn: Conn, s: Schema) -> bool:
        await ops.add_events(conn, s, self.events)
        await ops.write_deltas(conn, s, self.deltas)
        fired = await bt.settle(conn, s, self.now, self.ended) if self.ended else False
        if self.left or self.requeued:
            await flows.lock(conn, s, {q for q, *_ in self.left} | {q for q, _ in self.requeued})
            if await flows.settle(conn, s, self.now, self.left):
                fired = True
                self.woke |= {q for q, *_ in self.left}
            await flows.refresh_heads(conn, s, self.requeued)
        for q in sorted(self.woke):
            await conn.execute("SELECT pg_notify(%s, %s)", (s.channel, f"w:{q}"))
        return fired or bool(self.woke)


async def end_failed(conn: Conn, s: Schema, e: Ended, o: Encoded) -> bool:
    """Fail one attempt: ``retry`` (scheduled or queued again) or ``failed`` for good. False:
    the attempt is not held."""
    now = e.now
    batch = None
    if o.kind is OutcomeKind.RETRY:
        status = "scheduled" if o.retry_in > 0 else "queued"
        due = now + o.retry_in if o.retry_in > 0 else None
        cur = await conn.execute(s(_RETRY), (status, due, o.error, o.job_id, o.token))
        row = await cur.fetchone()
        event = "retrying"
    else:
        status, event = "failed", "failed"
        cur = await conn.execute(s(_FAIL), (o.error, now, o.job_id, o.token))
        row = await cur.fetchone()
        if row is not None:
            batch = row[6]
    if row is None:
        return False
    queue, task, tenant, attempt, flow, started = row[:6]
    if batch is not None:
        e.ended[(batch, "failed")] += 1
    if flow is not None:
        e.left.append((queue, flow, False, started))
        if status == "queued":
            e.requeued.append((queue, flow))
    if status == "queued":
        e.woke.add(queue)
    e.deltas[(queue, "active")] -= 1
    e.deltas[(queue, status)] += 1
    data = orjson.dumps({"attempt": attempt, **o.brief}).decode()
    e.events.append((event, o.job_id, queue, task, tenant, now, data))
    return True


async def finish(conn: Conn, s: Schema, outcomes: Sequence[Outcome]) -> list[str]:
    """Apply outcomes in the caller's transaction; returns the ids of ignored ones. The jobs an
    applied outcome carries (``then``: a chain's next step) are inserted in it too."""
    done: list[tuple[str, int, str | None]] = []
    nexts: dict[str, str] = {}
    others: list[Encoded] = []
    for o in outcomes:
        enc = encode(o)
        if enc.kind is OutcomeKind.COMPLETED:
            done.append((enc.job_id, enc.token, enc.result))
            if o.then:
                nexts[o.job_id] = orjson.dumps({"next": [nj.id for nj in o.then]}).decode()
        else:
            others.append(enc)
    acked: set[str] = set()
    children: list[str] = []
    t: float | None = None
    e = Ended(0.0)
    if done:
        ids, tokens, results = arrays(done, 3)
        cur = await conn.execute(s(_COMPLETE), {
            "ids": ids, "tokens": tokens, "results": results,
            "nexts": orjson.dumps(nexts).decode() if nexts else None,
        })  # fmt: skip
        for job_id, batch, at, child, queue, flow, started in await cur.fetchall():
            t = at
            acked.add(job_id)
            if flow is not None:
                e.left.append((queue, flow, True, started))
            if child:  # a spawned child (or a chain step): its fan-in edge, if any, settles
                children.append(job_id)
            if batch is not None:
                e.ended[(batch, "completed")] += 1
    lost = [o for o in outcomes if o.job_id not in acked]
    if others or e.ended or e.left or children or lost or any(o.then or o.cost for o in outcomes):
        e.now = t if t is not None else await ops.now(conn)
        for enc in others:
            ok = (await awaiting.park(conn, s, e, enc) if enc.kind is OutcomeKind.AWAIT
                  else await end_failed(conn, s, e, enc))  # fmt: skip
            if ok:
                acked.add(enc.job_id)
        await e.apply(conn, s)
        handed = [o for o in outcomes if o.then and o.job_id in acked]
        if handed:
            await hand_over(conn, s, e.now, handed)
        parked = [o for o in outcomes if o.fanout is not None and o.job_id in acked]
        if parked:
            await fanin.park(conn, s, e.now, parked)
        ended = children + [o.job_id for o in others if o.job_id in acked]
        if ended:  # children that ended settle their edges
            await fanin.settle(conn, s, e.now, ended)
        costs = [o for o in outcomes if o.cost and o.job_id in acked]
        if costs:
            await add_costs(conn, s, costs)
        gone = [(o.job_id, o.token) for o in outcomes if o.job_id not in acked]
        if gone:  # cancelled attempts that ended: their gates' slots are free
            await end_held(conn, s, e.now, gone)
    return [o.job_id for o in outcomes if o.job_id not in acked]


# By id, whatever the statistics say (as sql.ACTIVE): ``held`` compared with a materialized
# CTE's true, so the planner cannot read the partial index jobs_held in a nested loop.
END_HELD = """
WITH h AS MATERIALIZED (SELECT true AS held)
UPDATE {s}.jobs j SET lease_expires_at = NULL, held = false
FROM unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS o(id, token), h
WHERE j.id = o.id AND j.token = o.token AND j.held = h.held
RETURNING j.queue, j.flow, j.started_at
"""


async def end_held(conn: Conn, s: Schema, now: float, jobs: Sequence[tuple[str, int]]) -> bool:
    """Attempts of flow jobs cancelled while they ran have ended: give their gates' slots
    back. True: flows became claimable."""
    ids, tokens = arrays(jobs, 2)
    cur = await conn.execute(s(END_HELD), {"ids": ids, "tokens": tokens})
    rows = await cur.fetchall()
    if not rows:
        return False
    await flows.lock(conn, s, {q for q, _, _ in rows})
    woke = await flows.settle(conn, s, now, [(q, f, None, st) for q, f, st in rows])
    if woke:
        for q in sorted({q for q, _, _ in rows}):
            await conn.execute("SELECT pg_notify(%s, %s)", (s.channel, f"w:{q}"))
    return woke


async def hand_over(conn: Conn, s: Schema, now: float, outcomes: Sequence[Outcome]) -> None:
    """Store the jobs created with applied outcomes and record their ids on their creator."""
    rows = [(o.job_id, orjson.dumps([nj.id for nj in o.then]).decode()) for o in outcomes]
    await conn.execute(
        s("UPDATE {s}.jobs j SET next_jobs = n.ids FROM unnest(%s::text[], %s::text[]) "
          "AS n(id, ids) WHERE j.id = n.id"),
        arrays(rows, 2),
    )  # fmt: skip
    await enq.enqueue(conn, s, [nj for o in outcomes for nj in o.then], at=now)


async def add_costs(conn: Conn, s: Schema, outcomes: Sequence[Outcome]) -> None:
    """Add what each attempt reported through ``ctx.cost`` to its job and the per-task sums."""
    for o in outcomes:
        cur = await conn.execute(
            s("SELECT queue, task, cost FROM {s}.jobs WHERE id = %s AND token = %s"),
            (o.job_id, o.token),
        )
        row = await cur.fetchone()
        if row is None or not o.cost:
            continue
        queue, task, old = row
        total: dict[str, float] = orjson.loads(old) if old else {}
        for unit, amount in o.cost.items():
            total[unit] = total.get(unit, 0.0) + amount
        await conn.execute(
            s("UPDATE {s}.jobs SET cost = %s WHERE id = %s"),
            (orjson.dumps(total).decode(), o.job_id),
        )
        for unit, amount in sorted(o.cost.items()):
            await conn.execute(
                s("INSERT INTO {s}.costs (queue, task, unit, total) VALUES (%s, %s, %s, %s) "
                  "ON CONFLICT (queue, task, unit) DO UPDATE SET total = costs.total + "
                  "excluded.total"),
                (queue, task, unit, amount),
            )  # fmt: skip
