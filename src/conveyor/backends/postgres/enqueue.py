"""PostgreSQL enqueues: new jobs, their events, count deltas and wake-up in one statement.

`enqueue` checks ids, idempotency keys, ``max_queued`` and flow gates before the insert, in the
caller's transaction (the backend's, or the application's for a transactional enqueue);
`enqueue_plain` stores jobs that need none of those checks in one autocommit statement.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter

import orjson

from ...errors import QueueFull
from ..base import EnqueueResult, NewJob
from . import flows
from .sql import NOW, Conn, Schema, arrays

# The new jobs travel as one JSON array of `NewJob` objects (orjson serializes the dataclass in C)
# that the server unpacks with json_to_recordset: 19 parameter arrays dumped element by element
# by psycopg's Python list dumper cost the producer more than the insert (W1 profile: 37 % of
# the producer's samples in ListDumper._dump_list). Fields the statement does not name (gates)
# are ignored by the server.
_ROWS = """ROWS FROM (json_to_recordset(%(jobs)s::json) AS (id text, queue text, task text,
    payload text, priority int, max_attempts int, max_stalls int, timeout float8, lease float8,
    tenant text, batch text, workflow text, parent text, idempotency_key text, delay float8,
    meta text, step text, steps int, flow text)) WITH ORDINALITY
    AS r(id, queue, task, payload, priority, max_attempts, max_stalls, timeout, lease, tenant,
         batch, workflow, parent, ikey, delay, meta, step, steps, flow, n)"""


def _statement(head: str, now: str, tail: str) -> str:
    """The insert of new jobs (CTE ``r``, built by ``head``), their events, count deltas and
    wake-up, at time ``now`` (an SQL expression). A bulk that `_pack` keys gets ONE ``enqueued``
    event row, whose key ``pack`` its jobs name in ``enq_pack`` (schema_2.sql says why); other
    jobs one event each (``pack`` NULL)."""
    return f"""
{head}
ins AS (
  INSERT INTO {{s}}.jobs (id, queue, task, payload, priority, status, max_attempts, max_stalls,
    timeout, lease, tenant, batch, workflow, parent, idempotency_key, created_at, scheduled_for,
    meta, step, steps, flow, enq_pack)
  SELECT id, queue, task, payload, priority,
    CASE WHEN due IS NULL THEN 'queued' ELSE 'scheduled' END, max_attempts, max_stalls, timeout,
    lease, tenant, batch, workflow, parent, ikey, {now}, due, meta, step, steps, flow,
    %(pack)s::bigint
  FROM r ORDER BY n
  ON CONFLICT DO NOTHING
  RETURNING id, seq, queue, task, tenant, status, scheduled_for, flow
),
ev AS (
  INSERT INTO {{s}}.events (type, job_id, queue, task, tenant, time, data)
  SELECT CASE WHEN status = 'queued' THEN 'enqueued' ELSE 'scheduled' END, id, queue, task,
    tenant, {now},
    CASE WHEN scheduled_for IS NULL THEN NULL ELSE json_build_object('due', scheduled_for)::text END
  FROM ins WHERE %(pack)s::bigint IS NULL
),
packed AS (
  INSERT INTO {{s}}.events (type, queue, task, tenant, time, job_ids, pack)
  SELECT 'enqueued', min(queue), min(task), min(tenant), {now}, array_agg(id ORDER BY seq),
    %(pack)s::bigint
  FROM ins HAVING %(pack)s::bigint IS NOT NULL AND count(*) > 0
),
cnt AS (
  INSERT INTO {{s}}.count_deltas (queue, status, n)
  SELECT queue, status, count(*) FROM ins GROUP BY queue, status
),
woke AS (
  SELECT pg_notify(%(channel)s, 'w:' || queue) FROM (SELECT DISTINCT queue FROM ins
  WHERE status = 'queued') q
)
SELECT {tail}(SELECT count(*) FROM woke), array_agg(id),
  array_agg(queue) FILTER (WHERE flow IS NOT NULL AND status = 'queued'),
  array_agg(flow) FILTER (WHERE flow IS NOT NULL AND status = 'queued') FROM ins
"""


_INSERT = _statement(
    f"""WITH r AS (
  SELECT r.*, CASE WHEN r.delay > 0 THEN %(now)s + r.delay END AS due FROM {_ROWS}
),""",
    "%(now)s",
    "",
)
# A bulk whose jobs differ only in id and payload (an enqueue_many of one task: the common case)
# sends those two as one JSON document of two arrays of strings, and the rest once: the server
# parsed the JSON of every field of every job twice (json_in, then json_to_recordset), a quarter
# of its CPU in a bulk enqueue. (As text[] parameters, psycopg's Python array dumper cost the
# producer more than all the rest of an enqueue.)
_UNIFORM = attrgetter("queue", "task", "priority", "max_attempts", "max_stalls", "timeout",
                      "lease", "delay", "tenant", "batch", "workflow", "parent", "idempotency_key",
                      "flow", "gates", "meta", "step", "steps")  # fmt: skip
# jsonb holds at most 256 MB (2**28 - 1 bytes of elements); json text up to 1 GB: a bigger bulk
# takes the general statement.
_JSONB_MAX = 2**27
_INSERT_UNIFORM = _statement(
    f"""WITH t AS (SELECT {NOW} AS now),
r AS (
  SELECT u.id, %(queue)s::text AS queue, %(task)s::text AS task, u.payload,
    %(priority)s::int AS priority, %(max_attempts)s::int AS max_attempts,
    %(max_stalls)s::int AS max_stalls, %(timeout)s::float8 AS timeout, %(lease)s::float8 AS lease,
    %(tenant)s::text AS tenant, %(batch)s::text AS batch, %(workflow)s::text AS workflow,
    %(parent)s::text AS parent, NULL::text AS ikey, %(meta)s::text AS meta,
    %(step)s::text AS step, %(steps)s::int AS steps, NULL::text AS flow, u.n,
    CASE WHEN %(delay)s::float8 > 0 THEN t.now + %(delay)s::float8 END AS due
  FROM (SELECT %(doc)s::jsonb AS d) d, ROWS FROM (jsonb_array_elements_text(d.d -> 0),
    jsonb_array_elements_text(d.d -> 1)) WITH ORDINALITY AS u(id, payload, n), t
),""",
    "(SELECT now FROM t)",
    "(SELECT now FROM t), ",
)
_INSERT_PLAIN = _statement(
    f"""WITH t AS (SELECT {NOW} AS now),
u AS (SELECT * FROM {_ROWS}),
r AS (SELECT u.*, CASE WHEN u.delay > 0 THEN t.now + u.delay END AS due FROM u, t),""",
    "(SELECT now FROM t)",
    "(SELECT now FROM t), ",
)


# Idempotency keys already stored: one probe of jobs_idempotency per key (LATERAL, LIMIT 1),
# never a join the planner may drive from the index: with statistics taken while no job had a
# key the partial index looks empty, and it was read whole with the key list scanned again for
# every keyed row (75-82 ms for 10 keys against 30,000 keyed jobs).
KEYS = """
SELECT k.q, k.t, k.key, j.id FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(q, t, key)
CROSS JOIN LATERAL (SELECT x.id FROM {s}.jobs x WHERE x.queue = k.q
  AND coalesce(x.tenant, '') = k.t AND x.idempotency_key = k.key
  AND x.idempotency_key IS NOT NULL LIMIT 1) j
"""


async def lock_queues(conn: Conn, s: Schema, queues: Iterable[str]) -> None:
    """Serialize the enqueues that check ``max_queued`` of these queues (in name order: two
    callers never wait on each other crosswise), until the transaction ends."""
    for q in sorted(set(queues)):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{s.name}:q:{q}",))


async def waiting(conn: Conn, s: Schema, queue: str) -> int:
    cur = await conn.execute(
        s("SELECT coalesce(sum(n), 0) FROM (SELECT n FROM {s}.counts WHERE queue = %(q)s AND "
          "status IN ('queued', 'scheduled') UNION ALL SELECT n FROM {s}.count_deltas WHERE "
          "queue = %(q)s AND status IN ('queued', 'scheduled')) x"),
        {"q": queue},
    )  # fmt: skip
    return int((await cur.fetchone())[0])


async def check_backpressure(
    conn: Conn, s: Schema, new: Counter[str], limits: Mapping[str, int]
) -> None:
    """`QueueFull` (nothing written yet) unless the new jobs fit under their queues' limits.
    Takes the queues' advisory locks first: racing producers never store past a limit."""
    limited = {q: n for q, n in new.items() if n > 0 and limits.get(q) is not None}
    if not limited:
        return
    await lock_queues(conn, s, limited)
    for q, n in sorted(limited.items()):
        count = await waiting(conn, s, q)
        if count + n > limits[q]:
            raise QueueFull(q, limits[q], count, n)
    for q in sorted(limited):
        await conn.execute(
            s("INSERT INTO {s}.meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
              "SET value = excluded.value WHERE meta.value <> excluded.value"),
            (f"max_queued:{q}", str(limits[q])),
        )  # fmt: skip


async def enqueue(
    conn: Conn,
    s: Schema,
    jobs: Sequence[NewJob],
    max_queued: Mapping[str, int] | None = None,
    *,
    at: float | None = None,
) -> EnqueueResult:
    """Store ``jobs`` (see `Backend.enqueue_jobs`): one statement inserts the rows, their
    events and count deltas, and sends the wake-up (delivered when the transaction commits)."""
    ids = [j.id for j in jobs]
    created = [True] * len(jobs)
    cur = await conn.execute(
        s(f"SELECT {NOW}, ARRAY(SELECT id FROM {{s}}.jobs WHERE id = ANY(%s))"), (ids,)
    )
    t, stored = await cur.fetchone()
    t = at if at is not None else float(t)
    skip = _repeated(ids, set(stored))
    keyed: dict[tuple[str, str, str], int] = {}
    for i, j in enumerate(jobs):
        if j.idempotency_key:
            keyed.setdefault((j.queue, j.tenant or "", j.idempotency_key), i)
    if keyed:
        existing = await _keys(conn, s, list(keyed))
        for i, j in enumerate(jobs):
            if not j.idempotency_key or i in skip:
                continue
            key = (j.queue, j.tenant or "", j.idempotency_key)
            if key in existing:
                ids[i], created[i] = existing[key], False
                skip.add(i)
            elif keyed[key] != i:  # a duplicate key within this call: the first one wins
                ids[i], created[i] = jobs[keyed[key]].id, False
                skip.add(i)
    for i in skip:
        created[i] = False
    new = [j for i, j in enumerate(jobs) if i not in skip]
    if max_queued:
        await check_backpressure(conn, s, Counter(j.queue for j in new), max_queued)
    if any(j.flow is not None for j in new):  # gates and flows change under the flow lock
        await flows.lock(conn, s, {j.queue for j in new if j.flow is not None})
        await flows.store_gates(conn, s, new)
    if new:
        inserted = await _insert(conn, s, new, t)
        if len(inserted) < len(new):  # another transaction stored an id or key meanwhile
            await _raced(conn, s, jobs, ids, created, inserted)
    return EnqueueResult(ids, created, t)


def plain(jobs: Sequence[NewJob], max_queued: Mapping[str, int] | None) -> bool:
    """Whether `enqueue_plain` can store ``jobs``: no idempotency key, flow or enforced
    ``max_queued``, and no id twice."""
    return (
        all(j.idempotency_key is None and j.flow is None for j in jobs)
        and not (max_queued and any(j.queue in max_queued for j in jobs))
        and len({j.id for j in jobs}) == len(jobs)
    )


async def enqueue_plain(conn: Conn, s: Schema, jobs: Sequence[NewJob]) -> EnqueueResult:
    """`enqueue` in one statement (autocommit: one round trip) for jobs that need no checks
    before the insert (`plain`): the clock is read by the statement, an id stored already (a
    spool's resend) is not stored again and reported as not created."""
    if not jobs:  # nothing to store: the time only
        cur = await conn.execute(f"SELECT {NOW}")
        return EnqueueResult([], [], float((await cur.fetchone())[0]))
    first = _UNIFORM(jobs[0])
    doc = b""
    if len(jobs) > 1 and all(_UNIFORM(j) == first for j in jobs):
        doc = orjson.dumps([[j.id for j in jobs], [j.payload for j in jobs]])
    if 0 < len(doc) < _JSONB_MAX:  # bytes: the limit is jsonb's, in bytes
        one = jobs[0]
        args = {"doc": doc.decode(), "queue": one.queue, "task": one.task, "priority": one.priority,
                "max_attempts": one.max_attempts, "max_stalls": one.max_stalls,
                "timeout": one.timeout, "lease": one.lease, "delay": one.delay,
                "tenant": one.tenant, "batch": one.batch, "workflow": one.workflow,
                "parent": one.parent, "meta": one.meta, "step": one.step, "steps": one.steps,
                "channel": s.channel, "pack": _key() if one.delay <= 0 else None}  # fmt: skip
        cur = await conn.execute(s(_INSERT_UNIFORM), args)
    else:
        args = {"jobs": _json(jobs), "channel": s.channel, "pack": _pack(jobs)}
        cur = await conn.execute(s(_INSERT_PLAIN), args)
    row = await cur.fetchone()
    inserted = set(row[2] or ())
    return EnqueueResult([j.id for j in jobs], [j.id in inserted for j in jobs], float(row[0]))


def _repeated(ids: list[str], stored: set[str]) -> set[int]:
    seen: dict[str, int] = {}
    out: set[int] = set()
    for i, job_id in enumerate(ids):
        if seen.setdefault(job_id, i) != i or job_id in stored:
            out.add(i)
    return out


async def _keys(
    conn: Conn, s: Schema, keys: list[tuple[str, str, str]]
) -> dict[tuple[str, str, str], str]:
    cur = await conn.execute(s(KEYS), arrays(keys, 3))
    return {(q, t, k): job_id for q, t, k, job_id in await cur.fetchall()}


def _pack(jobs: Sequence[NewJob]) -> int | None:
    """The key of one packed row for the jobs' ``enqueued`` events, or None (a row per job):
    packed when more than one job, all queued now (a delayed job's event is ``scheduled``), of
    one queue, task and tenant."""
    if len(jobs) < 2:
        return None
    first = jobs[0]
    packs = all(
        j.delay <= 0 and j.queue == first.queue and j.task == first.task
        and j.tenant == first.tenant for j in jobs
    )  # fmt: skip
    return _key() if packs else None


def _key() -> int:
    """A packed row's key: random, so producers need no shared counter (two rows with one key
    would only make a job-filtered read look at both)."""
    return secrets.randbits(63)


def _json(jobs: Sequence[NewJob]) -> str:
    """The jobs as the JSON document `_ROWS` unpacks. Every field is a str, int, float, None or
    a `Gate` (not a column); floats are finite (`TaskOptions` refuses others: orjson would
    write nan and inf as null)."""
    return orjson.dumps(jobs).decode()


async def _insert(conn: Conn, s: Schema, jobs: Sequence[NewJob], t: float) -> set[str]:
    args = {"jobs": _json(jobs), "now": t, "channel": s.channel, "pack": _pack(jobs)}
    cur = await conn.execute(s(_INSERT), args)
    row = await cur.fetchone()
    if row[2]:
        await flows.refresh_heads(conn, s, zip(row[2], row[3], strict=True))
    return set(row[1] or ())


async def _raced(
    conn: Conn,
    s: Schema,
    jobs: Sequence[NewJob],
    ids: list[str],
    created: list[bool],
    inserted: set[str],
) -> None:
    """Jobs a concurrent transaction stored first (same id, or same idempotency key): report
    the stored job's id, not created."""
    for i, j in enumerate(jobs):
        if not created[i] or j.id in inserted:
            continue
        created[i] = False
        if j.idempotency_key:
            found = await _keys(conn, s, [(j.queue, j.tenant or "", j.idempotency_key)])
            ids[i] = next(iter(found.values()), j.id)
