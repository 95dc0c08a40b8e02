"""Transactional enqueue: a job enqueued with ``connection=`` exists if and only if the caller's
transaction commits, and a worker wakes for it on commit (async and the sync facade)."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from conveyor import Conveyor, JobNotFound, JobState
from conveyor.errors import BackendError, ConfigurationError
from tests.backends.postgres.conftest import plain
from tests.conftest import eventually


def _tasks(app: Conveyor) -> list[str]:
    ran: list[str] = []

    @app.task(queue="tx")
    async def send(ctx, to: str) -> str:  # type: ignore[no-untyped-def]
        ran.append(ctx.job.id)
        return to

    return ran


async def _count(app: Conveyor) -> int:
    return (await app.stats(["tx"]))["tx"].waiting


async def test_a_committed_transaction_stores_exactly_one_job_and_wakes_a_worker(
    pg_url: str,
) -> None:
    # Given an idle worker that would poll only once a minute by itself
    app = Conveyor(pg_url)
    ran = _tasks(app)
    await app.open()
    async with app.worker(concurrency=2, poll_interval=60.0):
        await asyncio.sleep(0)  # the worker's listener is up once worker() returned
        async with await psycopg.AsyncConnection.connect(plain(pg_url)) as conn:
            # When a job is enqueued inside the caller's transaction
            async with conn.transaction():
                await conn.execute("CREATE TEMP TABLE orders (id int)")
                job = await app.enqueue("send", {"to": "a"}, connection=conn)
                # Then nobody else sees it before the commit
                with pytest.raises(JobNotFound):
                    await app.get(job.id)
            committed = time.monotonic()
            # And once committed the worker wakes for it (not at its next poll) and runs it once
            await eventually(lambda: ran == [job.id], timeout=10, what="the job to run")
            assert time.monotonic() - committed < 5
    assert (await app.get(job.id)).status is JobState.COMPLETED
    page = await app.list(queue="tx")
    assert [j.id for j in page.jobs] == [job.id]
    await app.close()


async def test_a_rolled_back_transaction_leaves_no_job_no_event_no_count(pg_url: str) -> None:
    # Given a producer and a caller's transaction that enqueues two jobs, then fails
    app = Conveyor(pg_url)
    _tasks(app)
    await app.open()
    before = await app.backend.last_event_cursor()
    async with await psycopg.AsyncConnection.connect(plain(pg_url)) as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                job = await app.enqueue("send", {"to": "a"}, connection=conn)
                batch = await app.enqueue_many([("send", {"to": "b"})], connection=conn)
                raise RuntimeError("the caller's own work failed")
    # Then neither job exists, the log has no event of them, and nothing counts as waiting
    with pytest.raises(JobNotFound):
        await app.get(job.id)
    with pytest.raises(JobNotFound):
        await app.get(batch.ids[0])
    assert [e async for e in app.events(since=before, follow=False)] == []
    assert await _count(app) == 0
    await app.close()


def test_the_sync_facade_takes_a_sync_connection(pg_url: str) -> None:
    # Given a sync caller (a Django / Flask view) with its own psycopg connection
    app = Conveyor(pg_url)
    _tasks(app)
    with psycopg.connect(plain(pg_url)) as conn:
        # When it enqueues in a transaction it commits, and in one it rolls back
        with conn.transaction():
            kept = app.sync.enqueue("send", {"to": "a"}, connection=conn)
        with pytest.raises(ZeroDivisionError), conn.transaction():
            lost = app.sync.enqueue("send", {"to": "b"}, connection=conn)
            1 / 0  # noqa: B018
    # Then exactly the committed job exists
    assert app.sync.get(kept.id).status is JobState.QUEUED
    with pytest.raises(JobNotFound):
        app.sync.get(lost.id)
    assert app.sync.stats(["tx"])["tx"].waiting == 1
    app.sync.close()


async def test_connection_on_another_backend_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given an app on SQLite
    app = Conveyor(f"sqlite:///{tmp_path}/x.db")
    _tasks(app)
    # Then connection= says it needs PostgreSQL, and stores nothing
    with pytest.raises(ConfigurationError, match="postgres"):
        await app.enqueue("send", {"to": "a"}, connection=object())
    assert (await app.list(queue="tx")).jobs == []
    await app.close()


async def test_a_connection_that_is_not_psycopg_is_refused(pg_url: str) -> None:
    app = Conveyor(pg_url)
    _tasks(app)
    with pytest.raises(ConfigurationError, match="psycopg"):
        await app.enqueue("send", {"to": "a"}, connection=object())
    await app.close()


async def test_an_idempotency_key_matches_a_job_of_the_callers_open_transaction(
    pg_url: str,
) -> None:
    # Given a caller's transaction that enqueued a job with an idempotency key
    app = Conveyor(pg_url)
    _tasks(app)
    await app.open()
    async with await psycopg.AsyncConnection.connect(plain(pg_url)) as conn, conn.transaction():
        first = await app.enqueue("send", {"to": "a"}, idempotency_key="k", connection=conn)
        # When the same transaction enqueues with that key again, before it commits
        again = await app.enqueue("send", {"to": "b"}, idempotency_key="k", connection=conn)
        # Then it gets the job it stored (read in its own transaction), not a new one
        assert (again.id, again.created, again.payload) == (first.id, False, {"to": "a"})
        assert first.created
    # And once committed, exactly that one job exists
    page = await app.list(queue="tx")
    assert [j.id for j in page.jobs] == [first.id]
    await app.close()


async def test_a_transaction_already_in_error_gets_a_clear_error_and_no_job(pg_url: str) -> None:
    # Given a caller's transaction in which one of its own statements failed
    app = Conveyor(pg_url)
    _tasks(app)
    await app.open()
    conn = await psycopg.AsyncConnection.connect(plain(pg_url))
    async with conn, conn.transaction(force_rollback=True):
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / 0")
        # When it enqueues there, Then a conveyor error says why (not psycopg's
        # InFailedSqlTransaction after a failed savepoint) and nothing is stored
        with pytest.raises(BackendError, match="failed transaction"):
            await app.enqueue("send", {"to": "a"}, connection=conn)
    assert await _count(app) == 0
    await app.close()
