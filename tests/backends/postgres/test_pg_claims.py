"""The claim statement's plan: an index range of ``jobs_ready`` (ready jobs of the queue, by
priority then FIFO), never a scan of the jobs table; and the worker round's completions and
claim as one transaction."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from conveyor import Conveyor
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind
from conveyor.backends.postgres import leases
from conveyor.backends.postgres.attempts import _COMPLETE, END_HELD, PLAIN_COMPLETE
from conveyor.backends.postgres.enqueue import KEYS
from conveyor.backends.postgres.jobs import _CLAIM, _PROBE, _PROMOTE, caps
from conveyor.backends.postgres.sql import Schema
from tests.backends.postgres.conftest import plain


def _explain(conn: psycopg.Connection[Any], sql: str, args: dict[str, Any], generic: bool) -> str:
    """The plan of ``sql`` (psycopg's ``%(name)s`` parameters) as the server runs it: a custom
    plan for these values, or the generic plan of the prepared statement (what a worker's round
    runs, see sql.GENERIC_PLANS)."""
    if not generic:
        return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, args).fetchall())
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
    text = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", sql)
    conn.execute(f"PREPARE round_plan AS {text}")
    try:
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cur = psycopg.ClientCursor(conn)
        marks = ", ".join(["%s"] * len(names))
        rows = cur.execute(f"EXPLAIN EXECUTE round_plan({marks})", [args[n] for n in names])
        return "\n".join(r[0] for r in rows.fetchall())
    finally:
        conn.execute("DEALLOCATE round_plan")


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_the_round_reads_its_indexes_never_the_jobs_table(pg_url: str, generic: bool) -> None:
    # Given a queue of 5,000 jobs, most of them finished (as in a busy store)
    app = Conveyor(pg_url)

    @app.task(queue="plan")
    async def t(n: int) -> None: ...

    await app.enqueue_many([("t", {"n": i}) for i in range(5000)])
    schema = pg_url.split("schema=", 1)[1]
    s = app.backend.s  # type: ignore[attr-defined]
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.jobs SET status = 'completed' WHERE seq % 50 <> 0")
        conn.execute(f"UPDATE {schema}.jobs SET status = 'active', token = 1 WHERE seq % 50 = 1")
        conn.execute(f"ANALYZE {schema}.jobs")
        # When the round's statements are explained (custom and generic plans)
        p = ClaimParams(["plan"], 10, "w1")
        cap = caps(p)
        args = {"queues": list(cap), "caps": list(cap.values()), "limit": 10, "worker": "w1"}
        ack = {"ids": ["a", "b"], "tokens": [1, 1], "results": [None, None]}
        with conn.transaction():
            plan = _explain(conn, s(_CLAIM), args, generic)
            promote = _explain(conn, s(_PROMOTE), args, generic)
            probe = _explain(conn, s(_PROBE), args, generic)
            acks = _explain(conn, s(PLAIN_COMPLETE), ack, generic)
    # Then the claim reads ready jobs through jobs_ready and the jobs table itself only by its
    # seq index; due scheduled jobs are promoted (and probed) through jobs_scheduled; the
    # acknowledgements find their jobs by id or through jobs_active
    assert "jobs_ready" in plan, plan
    assert "jobs_scheduled" in promote, promote
    assert "jobs_scheduled" in probe, probe
    assert "jobs_pkey" in acks or "jobs_active" in acks, acks
    for text in (plan, promote, probe, acks):
        assert "Seq Scan on jobs" not in text, text
    await app.close()


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_attempt_lists_find_their_jobs_by_id_whatever_the_statistics_say(
    pg_url: str, generic: bool
) -> None:
    # Given statistics taken while no job was active (autovacuum's ANALYZE after a bulk
    # enqueue), then a drain's history: 2,000 jobs went active and completed (their old
    # versions still in jobs_active) and 20 are active now (a small round: for hundreds of
    # ids a seq scan of this small table is cheaper, and chosen)
    app = Conveyor(pg_url)

    @app.task(queue="acks")
    async def t(n: int) -> None: ...

    await app.enqueue_many([("t", {"n": i}) for i in range(5000)])
    await app.close()
    schema = pg_url.split("schema=", 1)[1]
    s = Schema(schema)
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        conn.execute(f"ANALYZE {schema}.jobs")
        for k in range(10):
            rows = f"seq > {k * 200} AND seq <= {(k + 1) * 200}"
            conn.execute(f"UPDATE {schema}.jobs SET status = 'active', token = 1 WHERE {rows}")
            conn.execute(f"UPDATE {schema}.jobs SET status = 'completed' WHERE {rows}")
        conn.execute(f"UPDATE {schema}.jobs SET status = 'active', token = 1 "
                     "WHERE seq > 2000 AND seq <= 2020")  # fmt: skip
        # ... and, unseen by the statistics too, 2,000 jobs with idempotency keys and 2,000 held
        # attempts (cancelled flow jobs still holding their slots)
        conn.execute(f"UPDATE {schema}.jobs SET idempotency_key = 'k' || seq "
                     "WHERE seq > 3000 AND seq <= 5000")  # fmt: skip
        conn.execute(f"UPDATE {schema}.jobs SET held = true WHERE seq <= 2000")
        ids = [r[0] for r in conn.execute(f"SELECT id FROM {schema}.jobs WHERE status = 'active'")]
        # When the statements that take a list of attempts are explained
        many = {"ids": ids, "tokens": [1] * len(ids), "results": [None] * len(ids)}
        with conn.transaction():
            plans = {
                "plain acknowledgement": _explain(conn, s(PLAIN_COMPLETE), many, generic),
                "acknowledgement": _explain(conn, s(_COMPLETE), {**many, "nexts": None}, generic),
                "lease renewal": _explain(conn, s(leases.EXTEND), many, generic),
                "release": _explain(conn, s(leases.RELEASE), many, generic),
                "held attempts": _explain(conn, s(END_HELD), many, generic),
            }
            keys = _explain(conn, s(KEYS).replace("%s", "%(q)s", 1).replace("%s", "%(t)s", 1)
                            .replace("%s", "%(k)s", 1),
                            {"q": ["acks"] * 3, "t": [""] * 3, "k": ["k3001", "k3002", "x"]},
                            generic)  # fmt: skip
    # Then each finds its jobs by id (the primary key), never by a scan of jobs_active: the
    # stale statistics make that index look empty, and a nested loop over it re-reads the
    # list for every active row (quadratic in the round's size)
    for what, plan in plans.items():
        assert "jobs_pkey" in plan, (what, plan)
        assert "jobs_active" not in plan and "jobs_held" not in plan, (what, plan)
    # and the idempotency keys are probed one by one in jobs_idempotency (an index condition on
    # the key), never read whole in a loop over the list
    assert re.search(r"Index Cond: .*idempotency_key = k\.key", keys), keys


async def test_enqueue_many_members_are_acknowledged_in_the_claim_round(pg_url: str) -> None:
    # Given two jobs of one enqueue_many call (a batch id, no batch record) and a worker that
    # claimed the first
    app = Conveyor(pg_url)

    @app.task(queue="acks")
    async def t(n: int) -> None: ...

    await app.enqueue_many([("t", {"n": 1}), ("t", {"n": 2})])
    backend: Any = app.backend
    first = (await backend.claim_jobs(ClaimParams(["acks"], 1, "w1"))).jobs[0]
    assert first.batch is not None
    # When its completion is sent with the next claim
    done = Outcome(first.id, first.token, OutcomeKind.COMPLETED)
    lost, res = await backend.finish_and_claim("w1", [done], ClaimParams(["acks"], 1, "w1"))
    # Then the completion and the claim were one transaction (the round's pipeline): both rows
    # were last written by the same transaction id, not by a second transaction after it
    assert lost == [] and len(res.jobs) == 1
    schema = pg_url.split("schema=", 1)[1]
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        rows = dict(
            conn.execute(
                f"SELECT status, xmin::text FROM {schema}.jobs WHERE id = ANY(%s)",
                ([first.id, res.jobs[0].id],),
            ).fetchall()
        )
    assert set(rows) == {"completed", "active"}
    assert rows["completed"] == rows["active"]
    await app.close()
