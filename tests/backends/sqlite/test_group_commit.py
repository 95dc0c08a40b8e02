"""Group commit: operations queued while the database thread is busy share one transaction,
each in its own savepoint, so one failing operation fails alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import BackendError, Conveyor, Job, JobState
from conveyor.backends.base import NewJob
from conveyor.job import new_id
from tests.conftest import eventually


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Conveyor]:
    a = Conveyor(f"sqlite:///{tmp_path}/q.db")

    @a.task
    async def t(n: int) -> int:
        return n

    await a.open()
    yield a
    await a.close()


class HeldThread:
    """Keeps the backend's database thread busy until released, so that everything submitted
    meanwhile lands in the next round (one transaction)."""

    def __init__(self, app: Conveyor) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.db: Any = app.backend._db  # type: ignore[attr-defined]

        def block(conn: object, now: float) -> None:
            self.entered.set()
            self.gate.wait(10)

        self.blocker = app.backend._run(block, write=False)  # type: ignore[attr-defined]

    @classmethod
    async def hold(cls, app: Conveyor) -> HeldThread:
        held = cls(app)
        await eventually(held.entered.is_set, what="the database thread to be held")
        return held

    async def queued(self, n: int) -> None:
        await eventually(lambda: self.db._queue.qsize() >= n, what=f"{n} operations queued")

    async def release(self) -> None:
        self.gate.set()
        await self.blocker


async def _stored(app: Conveyor) -> int:
    return (await app.stats())["default"].counts["queued"]


async def test_200_concurrent_enqueues_are_all_stored(app: Conveyor) -> None:
    # Given 200 producers enqueueing at once while the database thread is busy
    held = await HeldThread.hold(app)
    tasks = [asyncio.ensure_future(app.enqueue("t", {"n": i})) for i in range(200)]
    await held.queued(200)
    # When the thread is free and commits them together
    await held.release()
    jobs: list[Job] = await asyncio.gather(*tasks)
    # Then every one is stored once, with its own id, payload and event
    assert len({j.id for j in jobs}) == 200
    assert await _stored(app) == 200
    page = await app.list(limit=1000)
    assert sorted(j.payload["n"] for j in page.jobs) == list(range(200))
    events = [e async for e in app.events(since="0", follow=False)]
    assert len(events) == 200 and {e.type.value for e in events} == {"enqueued"}


async def test_a_failing_operation_in_a_group_fails_alone(app: Conveyor) -> None:
    # Given an existing job, and a group of enqueues of which one breaks a constraint of the
    # table (a job without a task: only a bug could send it, past the producer's checks)
    existing = await app.enqueue("t", {"n": -1})
    held = await HeldThread.hold(app)
    good = [asyncio.ensure_future(app.enqueue("t", {"n": i})) for i in range(50)]
    clash = NewJob(new_id(), "default", None, '{"n":0}', 5, 1, 3, None, 30.0)  # type: ignore[arg-type]
    bad = asyncio.ensure_future(app.backend.enqueue_jobs([clash]))
    more = [asyncio.ensure_future(app.enqueue("t", {"n": 50 + i})) for i in range(50)]
    await held.queued(101)
    # When the group is committed
    await held.release()
    # Then only the clashing operation fails, with a BackendError
    with pytest.raises(BackendError):
        await bad
    jobs = await asyncio.gather(*good, *more)
    assert len(jobs) == 100
    # And the others are stored, and the counts agree with the rows
    assert await _stored(app) == 101
    assert len((await app.list(limit=1000)).jobs) == 101
    assert (await app.get(existing.id)).payload == {"n": -1}


async def test_the_same_idempotency_key_within_one_group(app: Conveyor) -> None:
    # Given 20 producers enqueueing with one idempotency key, committed in one transaction
    held = await HeldThread.hold(app)
    tasks = [
        asyncio.ensure_future(app.enqueue("t", {"n": i}, idempotency_key="once")) for i in range(20)
    ]
    await held.queued(20)
    await held.release()
    jobs = await asyncio.gather(*tasks)
    # Then all got the same job, stored once: the first one
    assert len({j.id for j in jobs}) == 1
    assert await _stored(app) == 1
    assert (await app.get(jobs[0].id)).payload == {"n": 0}


async def test_mixed_operations_in_one_group(app: Conveyor) -> None:
    # Given queued jobs, then cancels, reads, enqueues and a bad cancel submitted together
    jobs = [await app.enqueue("t", {"n": i}) for i in range(10)]
    held = await HeldThread.hold(app)
    cancels = [asyncio.ensure_future(app.cancel(j.id)) for j in jobs[:5]]
    reads = [asyncio.ensure_future(app.get(j.id)) for j in jobs[5:]]
    unknown = asyncio.ensure_future(app.cancel("no-such-job"))
    adds = [asyncio.ensure_future(app.enqueue("t", {"n": 100 + i})) for i in range(5)]
    await held.queued(16)
    await held.release()
    # Then each got its own answer
    assert {(await c).status for c in cancels} == {JobState.CANCELLED}
    assert {(await r).status for r in reads} == {JobState.QUEUED}
    with pytest.raises(KeyError):
        await unknown
    assert len({(await a).id for a in adds}) == 5
    counts = (await app.stats())["default"].counts
    assert (counts["queued"], counts["cancelled"]) == (10, 5)


async def test_a_cancelled_caller_does_not_break_the_group(app: Conveyor) -> None:
    # Given a group in which one caller gives up before the commit
    held = await HeldThread.hold(app)
    quitter = asyncio.ensure_future(app.enqueue("t", {"n": 0}))
    others = [asyncio.ensure_future(app.enqueue("t", {"n": i})) for i in range(1, 10)]
    await held.queued(10)
    quitter.cancel()
    await held.release()
    # Then the others complete; the quitter's job may or may not be stored, but counts agree
    assert len(await asyncio.gather(*others)) == 9
    with pytest.raises(asyncio.CancelledError):
        await quitter
    stored = await _stored(app)
    assert stored in (9, 10)
    assert len((await app.list(limit=100)).jobs) == stored


async def test_ids_are_the_callers_and_unique_under_load(app: Conveyor) -> None:
    # Given many enqueue_many calls at once
    batches = await asyncio.gather(
        *(app.enqueue_many([("t", {"n": i}) for i in range(20)]) for _ in range(20))
    )
    # Then all 400 ids are distinct and stored
    ids = [i for b in batches for i in b.ids]
    assert len(set(ids)) == 400
    assert await _stored(app) == 400
    assert all(new_id() > i for i in ids)


async def test_an_operation_alone_in_its_round_is_all_or_nothing(app: Conveyor) -> None:
    # Given an operation that writes a count and then fails, alone in its round
    def half(conn: Any, now: float) -> None:
        conn.execute("INSERT INTO counts (queue, status, n) VALUES ('drift', 'queued', 1)")
        raise BackendError("second write failed")

    # When it runs
    with pytest.raises(BackendError, match="second write failed"):
        await app.backend._run(half)  # type: ignore[attr-defined]

    # Then none of its writes committed (the next operation sees no stray count)
    def read(conn: Any, now: float) -> Any:
        return conn.execute("SELECT n FROM counts WHERE queue = 'drift'").fetchall()

    assert await app.backend._run(read, write=False) == []  # type: ignore[attr-defined]
