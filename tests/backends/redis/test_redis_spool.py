"""``Conveyor(url, spool=...)`` in front of a real Redis that stops, freezes and comes back:
acknowledged enqueues are kept in the local spool and forwarded in order, each stored once (also
after a forwarder is killed -9 between storing and forgetting, and with two forwarders at once),
and run once."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from tests.conftest import eventually
from tests.servers import RedisServer


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path / "redis", appendonly=True)
    yield s
    if s.proc is not None:
        s.proc.send_signal(signal.SIGCONT)
    s.stop()


def _app(url: str, spool: Path, ran: list[int] | None = None) -> Conveyor:
    app = Conveyor(url, spool=f"sqlite:///{spool}")

    @app.task
    async def work(n: int) -> int:
        if ran is not None:
            ran.append(n)
        return n

    return app


async def _spooled(app: Conveyor) -> int:
    return sum(s.spooled for s in (await app.stats()).values())


async def _stored(app: Conveyor) -> int:
    st = await app.stats()
    return sum(sum(s.counts.values()) for s in st.values())


@pytest.mark.parametrize("fault", ["restart", "freeze"])
async def test_no_acknowledged_enqueue_is_lost_or_doubled_across_an_outage(
    srv: RedisServer, tmp_path: Path, fault: str
) -> None:
    # Given a producer with a spool, enqueueing continuously
    ran: list[int] = []
    app = _app(srv.url, tmp_path / "spool.db", ran)
    total, acked, spooled = 300, [], 0
    assert srv.proc is not None
    try:
        for n in range(total):
            # When Redis stops (or freezes) a third of the way and is back at two thirds
            if n == 100:
                if fault == "restart":
                    await asyncio.to_thread(srv.stop)
                else:
                    srv.proc.send_signal(signal.SIGSTOP)
            elif n == 200:
                if fault == "restart":
                    await asyncio.to_thread(srv.start)
                else:
                    srv.proc.send_signal(signal.SIGCONT)
            job = await app.enqueue("work", {"n": n})
            acked.append(job.id)
            spooled += job.spooled
        # Then the outage's jobs were spooled, and all are forwarded
        assert spooled >= 90, spooled
        await eventually(lambda: _spooled_is(app, 0), timeout=30, what="the spool draining")
        # And Redis holds every acknowledged job exactly once
        assert await _stored(app) == total
        jobs = [await app.get(i) for i in acked]
        assert [j.payload["n"] for j in jobs] == list(range(total))
        assert not any(j.spooled for j in jobs)
        # And a worker runs each exactly once
        async with app.worker(concurrency=20):
            await eventually(lambda: len(ran) >= total, timeout=30, what="every job run")
        assert Counter(ran) == Counter(range(total))
    finally:
        await app.close()


async def _spooled_is(app: Conveyor, n: int) -> bool:
    return await _spooled(app) == n


async def test_spooled_jobs_keep_their_order_options_and_read_back_while_waiting(
    srv: RedisServer, tmp_path: Path
) -> None:
    # Given a producer whose Redis is down
    ran: list[int] = []
    app = _app(srv.url, tmp_path / "spool.db", ran)
    try:
        await app.enqueue("work", {"n": -1})
        await asyncio.to_thread(srv.stop)
        # When it enqueues jobs with every option, a batch and plain jobs
        delayed = await app.enqueue(
            "work", {"n": 100}, delay=3600, priority="high", tenant="acme", idempotency_key="k1"
        )
        again = await app.enqueue("work", {"n": 101}, tenant="acme", idempotency_key="k1")
        batch = await app.enqueue_many([("work", {"n": n}) for n in range(10)], tenant="acme")
        plain = [await app.enqueue("work", {"n": n}) for n in range(10, 30)]
        # Then each is acknowledged as spooled; the repeated key returns the spooled job
        assert delayed.spooled and batch.spooled and all(j.spooled for j in plain)
        assert again.id == delayed.id and again.payload == {"n": 100}
        # And a spooled job reads back from the spool as it will be stored
        got = await app.get(delayed.id)
        assert got.spooled and got.status is JobState.SCHEDULED and got.tenant == "acme"
        assert got.priority == 10 and got.idempotency_key == "k1"
        # When Redis is back and the spool drained
        await asyncio.to_thread(srv.start)
        await eventually(lambda: _spooled_is(app, 0), timeout=30, what="the spool draining")
        # Then the options survived exactly
        stored = await app.get(delayed.id)
        assert not stored.spooled and stored.status is JobState.SCHEDULED
        assert stored.tenant == "acme" and stored.priority == 10
        assert stored.scheduled_for is not None and stored.scheduled_for > stored.created_at + 3500
        assert (await app.batch(batch.id)).id == batch.id
        assert (await (await app.batch(batch.id)).status()).total == 10
        # And one worker slot runs them in enqueue order (the delayed one is not due)
        async with app.worker(concurrency=1, prefetch=0):
            await eventually(lambda: len(ran) >= 31, timeout=30, what="31 jobs run")
        assert ran == [-1, *range(30)]
    finally:
        await app.close()


async def test_stats_show_the_spool_and_a_worker_forwards_what_a_closed_producer_left(
    srv: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a producer that spooled 25 jobs while Redis was down, then closed
    spool = tmp_path / "spool.db"
    producer = _app(srv.url, spool)
    await producer.enqueue("work", {"n": 0})
    await asyncio.to_thread(srv.stop)
    for n in range(25):
        await producer.enqueue("work", {"n": n})
    with caplog.at_level(logging.WARNING, logger="conveyor"):
        await producer.close()
    # Then closing said how many wait in the spool
    assert any("25 jobs wait in the spool" in r.getMessage() for r in caplog.records)
    # When Redis is back, another app on the same spool file shows them in stats
    await asyncio.to_thread(srv.start)
    ran: list[int] = []
    app = _app(srv.url, spool, ran)
    try:
        st = await app.stats()
        assert st["default"].spooled == 25 and st["default"].to_dict()["spooled"] == 25
        # And its worker forwards and runs them
        async with app.worker(concurrency=5):
            await eventually(lambda: len(ran) >= 26, timeout=30, what="the spooled jobs run")
        assert (await app.stats())["default"].spooled == 0
        assert sorted(ran) == [0, *range(25)]  # the one stored before the outage too
    finally:
        await app.close()


_KILLED_FORWARDER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from conveyor import Conveyor
    from conveyor.spool import Spool

    async def die(self, ids):  # the backend has stored the chunk: die before forgetting it
        os.kill(os.getpid(), signal.SIGKILL)

    Spool.remove = die
    app = Conveyor(sys.argv[1], spool="sqlite:///" + sys.argv[2])
    asyncio.run(app._spooler.forward_once())
    """
)


async def test_a_forwarder_killed_after_storing_never_causes_a_duplicate(
    srv: RedisServer, tmp_path: Path
) -> None:
    # Given 40 jobs in the spool
    spool = tmp_path / "spool.db"
    ran: list[int] = []
    app = _app(srv.url, spool, ran)
    try:
        await app.open()
        await asyncio.to_thread(srv.stop)
        ids = [(await app.enqueue("work", {"n": n})).id for n in range(40)]
        await app._spooler.close()  # this process's forwarder stays out of it
        await asyncio.to_thread(srv.start)
        # When a forwarder process is killed -9 after Redis stored them, before it forgot them
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _KILLED_FORWARDER, srv.url, str(spool)],
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
        # Then Redis has them and the spool still lists them
        assert await _stored(app) == 40
        assert (await app.stats())["default"].spooled == 40
        # When another forwarder finishes the job
        while await app._spooler.forward_once():
            pass
        # Then nothing was stored twice, and each runs once
        assert await _stored(app) == 40 and await _spooled(app) == 0
        async with app.worker(concurrency=10):
            await eventually(lambda: len(ran) >= 40, timeout=30, what="40 jobs run")
        assert Counter(ran) == Counter(range(40))
        assert {(await app.get(i)).status for i in ids} == {JobState.COMPLETED}
    finally:
        await app.close()


async def test_two_forwarders_on_one_spool_store_each_job_once(
    srv: RedisServer, tmp_path: Path
) -> None:
    # Given 2,000 jobs spooled while Redis was down
    spool = tmp_path / "spool.db"
    a = _app(srv.url, spool)
    b = _app(srv.url, spool)
    try:
        await a.open()
        await asyncio.to_thread(srv.stop)
        for start in range(0, 2000, 100):
            await a.enqueue_many([("work", {"n": n}) for n in range(start, start + 100)])
        await a._spooler.close()
        await asyncio.to_thread(srv.start)

        async def drain(app: Conveyor) -> int:
            sent = 0
            while n := await app._spooler.forward_once():
                sent += n
            return sent

        # When two apps (own connections to the spool file and to Redis) forward at once
        sent = await asyncio.gather(drain(a), drain(b))
        # Then the rows went through both, and Redis holds each job once
        assert sum(sent) >= 2000
        assert await _stored(a) == 2000 and await _spooled(a) == 0
    finally:
        await a.close()
        await b.close()
