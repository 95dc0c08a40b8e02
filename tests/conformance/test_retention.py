"""Retention of finished jobs (worker maintenance) and ``app.cleanup``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor import Conveyor, JobState, Retention
from conveyor.worker import services
from tests.conftest import eventually


@pytest.fixture
def fast_maintenance(monkeypatch: pytest.MonkeyPatch) -> float:
    """Run the worker's retention pass every 50 ms instead of every 10 s; returns the
    ``maintenance_interval`` to give the worker."""
    monkeypatch.setattr(services, "RETENTION_INTERVAL", 0.05)
    return 0.05


async def _completed(app: Conveyor, queue: str = "default") -> list[str]:
    page = await app.list(status=JobState.COMPLETED, queue=queue, limit=1000)
    return [j.id for j in page.jobs]


async def _count(app: Conveyor, queue: str, state: str) -> int:
    return (await app.stats([queue]))[queue].counts[state]


async def test_retention_by_count_keeps_the_newest(
    make_app: Callable[..., Conveyor], fast_maintenance: float
) -> None:
    # Given an app keeping at most 5 completed jobs (no age limit)
    app = make_app(retention=Retention(completed_max_count=5, completed_max_age=None))

    @app.task
    async def t(i: int) -> int:
        return i

    # When 20 jobs complete one after another on a worker
    batch = await app.enqueue_many([("t", {"i": i}) for i in range(20)])
    async with app.worker(concurrency=1, maintenance_interval=fast_maintenance):
        await batch.wait(timeout=10)
        # Then maintenance eventually deletes all but the newest 5
        await eventually(
            lambda: _at_most(app, 5), timeout=2, what="retention to leave <= 5 completed jobs"
        )
    kept = await _completed(app)
    assert sorted(kept) == sorted(batch.ids[-5:])
    # And the counts stay exact after the deletions
    assert await _count(app, "default", "completed") == 5


async def test_retention_by_count_with_jobs_finishing_together(
    make_app: Callable[..., Conveyor], fast_maintenance: float
) -> None:
    # Given an app keeping at most 5 completed jobs
    app = make_app(retention=Retention(completed_max_count=5, completed_max_age=None))

    @app.task
    async def t(i: int) -> int:
        return i

    # When 20 jobs complete at once (acknowledged together, so their finish times tie)
    batch = await app.enqueue_many([("t", {"i": i}) for i in range(20)])
    async with app.worker(concurrency=20, maintenance_interval=fast_maintenance):
        await batch.wait(timeout=10)
        await eventually(
            lambda: _at_most(app, 5), timeout=2, what="retention to leave <= 5 completed jobs"
        )
    # Then exactly 5 remain: the rule is a count to keep, not a lower bound
    assert len(await _completed(app)) == 5
    assert await _count(app, "default", "completed") == 5


async def _at_most(app: Conveyor, n: int) -> bool:
    return len(await _completed(app)) <= n


async def test_per_queue_retention_by_age(app: Conveyor, fast_maintenance: float) -> None:
    # Given queue 'short' keeping completed jobs 0.2 s, and queue 'long' with the default rule
    app.queue("short", retention=Retention(completed_max_age=0.2))

    @app.task(queue="short")
    async def brief() -> None:
        return None

    @app.task(queue="long")
    async def kept() -> None:
        return None

    b1 = await app.enqueue_many([("brief", {}) for _ in range(3)])
    b2 = await app.enqueue_many([("kept", {}) for _ in range(2)])
    async with app.worker(concurrency=4, maintenance_interval=fast_maintenance):
        await b1.wait(timeout=5)
        await b2.wait(timeout=5)
        # When they are older than 0.2 s, then maintenance removes the 'short' ones only
        await eventually(lambda: _none_left(app, "short"), what="old 'short' jobs removed")
    assert len(await _completed(app, "long")) == 2
    assert await _count(app, "short", "completed") == 0
    assert await _count(app, "long", "completed") == 2


async def _none_left(app: Conveyor, queue: str) -> bool:
    return not await _completed(app, queue)


async def test_cleanup_removes_finished_jobs_and_returns_the_count(app: Conveyor) -> None:
    # Given 3 completed, 1 failed, 1 cancelled and 1 queued job
    @app.task(retries=0)
    async def job(ok: bool) -> None:
        if not ok:
            raise RuntimeError("x")

    batch = await app.enqueue_many([("job", {"ok": True})] * 3 + [("job", {"ok": False})])
    async with app.worker(concurrency=2):
        await batch.wait(timeout=5)
    doomed = await job.enqueue(ok=True)
    await app.cancel(doomed.id)
    waiting = await job.enqueue(ok=True)
    # When finished jobs older than an hour are cleaned up, then none qualify
    assert await app.cleanup(older_than=3600) == 0
    # When every finished job is cleaned up
    removed = await app.cleanup(older_than=0)
    # Then the 5 finished ones are gone, the queued one stays, and counts are exact
    assert removed == 5
    page = await app.list(limit=100)
    assert [j.id for j in page.jobs] == [waiting.id]
    counts = (await app.stats())["default"].counts
    assert {s: counts[s] for s in ("queued", "completed", "failed", "cancelled")} == {
        "queued": 1, "completed": 0, "failed": 0, "cancelled": 0,
    }  # fmt: skip
    # And a second cleanup finds nothing
    assert await app.cleanup(older_than=0) == 0


async def test_cleanup_can_be_limited_to_some_states(app: Conveyor) -> None:
    # Given a completed and a cancelled job
    @app.task
    async def job() -> None:
        return None

    done = await job.enqueue()
    async with app.worker(concurrency=1):
        await app.wait(done.id, timeout=5)
    cancelled = await job.enqueue()
    await app.cancel(cancelled.id)
    # When only cancelled jobs are cleaned up
    assert await app.cleanup(older_than=0, states=["cancelled"]) == 1
    # Then the completed one stays
    assert [j.id for j in (await app.list()).jobs] == [done.id]


async def test_cleanup_rejects_unfinished_states_and_negative_age(app: Conveyor) -> None:
    from conveyor import ValidationError

    # Then cleaning up queued jobs, or with a negative age, is refused
    with pytest.raises(ValidationError):
        await app.cleanup(states=["queued"])
    with pytest.raises(ValidationError):
        await app.cleanup(older_than=-1)
