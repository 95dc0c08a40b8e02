"""The claim statement's plan: an index range of ``jobs_ready`` (ready jobs of the queue, by
priority then FIFO), never a scan of the jobs table; and the worker round's completions and
claim as one transaction."""

from __future__ import annotations

from typing import Any

import psycopg

from conveyor import Conveyor
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind
from conveyor.backends.postgres.jobs import _CLAIM, _PROMOTE, caps
from tests.backends.postgres.conftest import plain


async def test_the_claim_reads_the_partial_index_of_ready_jobs(pg_url: str) -> None:
    # Given a queue of 5,000 jobs, most of them finished (as in a busy store)
    app = Conveyor(pg_url)

    @app.task(queue="plan")
    async def t(n: int) -> None: ...

    await app.enqueue_many([("t", {"n": i}) for i in range(5000)])
    schema = pg_url.split("schema=", 1)[1]
    backend = app.backend
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.jobs SET status = 'completed' WHERE seq % 50 <> 0")
        conn.execute(f"ANALYZE {schema}.jobs")
        # When the claim statement is explained
        p = ClaimParams(["plan"], 10, "w1")
        cap = caps(p)
        args = {"queues": list(cap), "caps": list(cap.values()), "limit": 10, "worker": "w1"}
        with conn.transaction():
            plan = "\n".join(
                r[0] for r in conn.execute("EXPLAIN " + backend.s(_CLAIM), args).fetchall()
            )
            promote = "\n".join(
                r[0] for r in conn.execute("EXPLAIN " + backend.s(_PROMOTE), args).fetchall()
            )
    # Then it reads ready jobs through jobs_ready and the jobs table itself only by its seq
    # index; due scheduled jobs are promoted through jobs_scheduled
    assert "jobs_ready" in plan, plan
    assert "Seq Scan on jobs" not in plan, plan
    assert "jobs_scheduled" in promote, promote
    assert "Seq Scan on jobs" not in promote, promote
    await app.close()


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
