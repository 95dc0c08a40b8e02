"""Races between a worker's statements and concurrent transitions of the same job rows: a
statement that waited on a row lock acts on the row only if it still holds the attempt it
names (``(job_id, token)``), whatever the transactions it waited for did."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from conveyor import Conveyor, JobNotFound, JobState
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind, Retention
from tests.backends.postgres.conftest import plain
from tests.conftest import eventually


async def _blocked_on_a_lock(conn: psycopg.AsyncConnection[object]) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%%UPDATE%%jobs%%' AND pid <> pg_backend_pid()"
    )
    row = await cur.fetchone()
    return bool(row and row[0])


NEWER = 300_000


async def _running(conn: psycopg.AsyncConnection[object], pattern: str) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
        "AND pid <> pg_backend_pid()",
        (pattern.replace("%%", "%"),),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def test_a_release_that_waited_on_the_row_leaves_a_newer_attempt_alone(pg_url: str) -> None:
    # Given a job claimed by worker w1 (attempt token t)
    app = Conveyor(pg_url)
    app.declare("t", queue="races")
    job = await app.enqueue("t", {})
    backend = app.backend
    (mine,) = (await backend.claim_jobs(ClaimParams(["races"], 1, "w1"))).jobs
    schema = backend.s.ident
    async with (
        await psycopg.AsyncConnection.connect(plain(pg_url)) as other,
        await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as watch,
    ):
        # And a concurrent transaction that holds the row and leaves it with another attempt
        # (what lease recovery and a claim by worker w2 do between them)
        await other.execute(
            f"UPDATE {schema}.jobs SET token = token + 1, worker = 'w2' WHERE id = %s", (job.id,)
        )
        # When w1 releases its attempt while that transaction holds the row, then it commits
        release = asyncio.create_task(backend.release_jobs("w1", [(mine.id, mine.token)]))
        await eventually(lambda: _blocked_on_a_lock(watch), what="the release to wait")
        await other.commit()
        released = await release
    # Then w1's stale release changed nothing: w2's attempt is still active, still w2's
    assert released == 0
    now = await app.get(job.id)
    assert now is not None
    assert (now.status, now.token, now.worker) == (JobState.ACTIVE, mine.token + 1, "w2")
    await app.close()


async def test_retention_by_count_never_deletes_a_job_retried_meanwhile(pg_url: str) -> None:
    # Given a queue whose oldest failed job failed for real, and many newer failed jobs (the
    # retention below sorts them all before it locks the one row it deletes)
    app = Conveyor(pg_url)
    app.declare("t", queue="ret")
    backend = app.backend
    first = await app.enqueue("t", {})
    (mine,) = (await backend.claim_jobs(ClaimParams(["ret"], 1, "w1"))).jobs
    failure = Outcome(mine.id, mine.token, OutcomeKind.FAILED, error={"type": "E", "message": "x"})
    assert await backend.finish_jobs("w1", [failure]) == []
    async with await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as conn:
        await conn.execute(
            f"INSERT INTO {backend.s.ident}.jobs (id, queue, task, payload, priority, status, "
            "max_attempts, max_stalls, lease, created_at, finished_at) SELECT 'f' || g, 'ret', "
            "'t', '{}', 5, 'failed', 1, 1, 30, 0, 4e9 + g FROM generate_series(1, %s) g",
            (NEWER,),
        )
        await conn.execute(f"ANALYZE {backend.s.ident}.jobs")
    # When the job is retried by hand while retention keeps the newest NEWER failed jobs
    retention = asyncio.create_task(
        backend.apply_retention("ret", Retention(None, None, None, NEWER, None, None))
    )
    async with await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as watch:
        await eventually(lambda: _running(watch, "%%DELETE FROM%%jobs%%"),
                         what="retention's delete to run")  # fmt: skip
        try:
            retried = await app.retry(first.id)
        except JobNotFound:
            retried = None  # retention took the row first: the retry lost, nothing else changed
    await retention
    # Then a retry that succeeded left a queued job behind, not a job deleted under it
    if retried is not None:
        assert retried.status is JobState.QUEUED
        assert await backend.get_job(first.id) is not None, "retention deleted the retried job"
    await app.close()


async def test_a_cancel_takes_the_flow_lock_before_the_row_no_deadlock_with_a_claim(
    pg_url: str,
) -> None:
    # Given a queued flow-controlled job
    app = Conveyor(pg_url)

    @app.task(queue="flowq", rate_limit="100/s")
    async def limited() -> None: ...

    job = await app.enqueue("limited", {})
    backend = app.backend
    async with (
        await psycopg.AsyncConnection.connect(plain(pg_url)) as claimer,
        await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as watch,
    ):
        # And a flow claim of its queue under way: it holds the queue's flow lock (and checks
        # for deadlocks at once, so that it is the one PostgreSQL would abort)
        await claimer.execute("SET deadlock_timeout = '10ms'")
        await claimer.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{backend.s.name}:flow:flowq",)
        )
        # When the job is cancelled meanwhile (the cancel waits for the claim)
        cancel = asyncio.create_task(app.cancel(job.id))
        await eventually(lambda: _blocked(watch), what="the cancel to wait")
        # Then the claim can still take the job's row, as a flow claim does, and commit: the
        # cancel waits on the flow lock, not holding the row (no deadlock for PostgreSQL to
        # break by aborting one of them)
        await claimer.execute(
            f"SELECT 1 FROM {backend.s.ident}.jobs WHERE id = %s FOR UPDATE", (job.id,)
        )
        await claimer.commit()
        cancelled = await cancel
    assert cancelled.status is JobState.CANCELLED
    await app.close()


async def _blocked(conn: psycopg.AsyncConnection[object]) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND pid <> pg_backend_pid()"
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def test_a_deadlock_that_outlasts_the_retries_is_a_backend_error(pg_url: str) -> None:
    # Given an operation that PostgreSQL rolls back as a deadlock every time it runs
    from conveyor.backends.postgres.connections import DEADLOCK_RETRIES
    from conveyor.errors import BackendError, BackendUnavailable

    app = Conveyor(pg_url)
    await app.open()
    runs = 0

    async def always_deadlocked(conn: psycopg.AsyncConnection[object]) -> None:
        nonlocal runs
        runs += 1
        await conn.execute("DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$")

    # When the backend runs it, it retries, then says what happened: a deadlock, not an outage
    # (BackendUnavailable would send callers into their outage paths: a producer's spool, a
    # worker's wait for the store to come back)
    with pytest.raises(BackendError, match="DeadlockDetected") as err:
        await app.backend._call(always_deadlocked)  # type: ignore[attr-defined]
    assert not isinstance(err.value, BackendUnavailable)
    assert runs == DEADLOCK_RETRIES + 1
    await app.close()


async def test_a_rate_reservation_that_waited_on_the_gate_counts_from_when_it_got_it(
    pg_url: str,
) -> None:
    # Given a rate gate of one start per 0.3 s, just used (the next start is due in 0.3 s)
    app = Conveyor(pg_url)
    await app.open()
    assert await app.backend.reserve_rate("api", 0.3, 1) == 0.0
    schema = pg_url.rsplit("schema=", 1)[1]
    async with (
        await psycopg.AsyncConnection.connect(plain(pg_url)) as other,
        # (pg_stat_activity is read outside `other`'s transaction, which would cache it)
        await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as watcher,
    ):
        # When another transaction holds the gate's row for 0.6 s while a reservation waits
        async with other.transaction():
            await other.execute(f"SELECT 1 FROM {schema}.gates WHERE name = 'api' FOR UPDATE")
            waiting = asyncio.create_task(app.backend.reserve_rate("api", 0.3, 1))
            await eventually(lambda: _running(watcher, "%%gates%%FOR UPDATE%%"),
                             what="the reservation to wait on the row")  # fmt: skip
            await asyncio.sleep(0.6)  # the lock is held this long: the test's subject
        # Then the reservation, made 0.6 s after the last start, may start at once: the gate's
        # time is read once the row is its own (read before, it said "wait 0.3 s")
        assert await waiting < 0.05
    await app.close()
