"""The claim statement's plan: an index range of ``jobs_ready`` (ready jobs of the queue, by
priority then FIFO), never a scan of the jobs table."""

from __future__ import annotations

import psycopg

from conveyor import Conveyor
from conveyor.backends.base import ClaimParams
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
