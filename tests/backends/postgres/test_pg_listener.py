"""The LISTEN connection: a worker's wake-ups survive a listening connection that dies silently
(its server process stopped: no error, no EOF), without waiting for the worker's next poll."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import psycopg
import pytest

from conveyor import Conveyor
from conveyor.backends.postgres import listener
from tests.backends.postgres.conftest import plain
from tests.conftest import eventually


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Server processes a test stops (SIGSTOP): continued and terminated at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


async def test_a_listener_whose_connection_went_silent_reconnects_and_wakes_its_worker(
    pg_url: str, stopped: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an idle worker that would poll only once a minute by itself, whose listener checks
    # its connection after 0.5 s without a notification
    monkeypatch.setattr(listener, "PING_EVERY", 0.5)
    monkeypatch.setattr(listener, "PING_TIMEOUT", 0.5)
    app = Conveyor(pg_url)
    ran: list[str] = []

    @app.task(queue="wake")
    async def noop(ctx) -> None:  # type: ignore[no-untyped-def]
        ran.append(ctx.job.id)

    await app.open()
    async with (
        app.worker(concurrency=1, poll_interval=60.0),
        await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as admin,
    ):
        # When the server process behind the listening connection stops answering
        cur = await admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
        )
        pids = [row[0] for row in await cur.fetchall()]
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGSTOP)
        stopped.append(pids[0])
        # And another process enqueues a job (its notification reaches no live listener)
        producer = Conveyor(pg_url)
        producer.task(name="noop", queue="wake")(lambda: None)
        job = await producer.enqueue("noop", {})
        await producer.close()
        # Then the listener notices, reconnects and wakes the worker, long before its poll
        await eventually(lambda: ran == [job.id], timeout=15, what="the job to run")
    await app.close()
