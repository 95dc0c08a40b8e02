"""Delayed jobs: ``scheduled`` until due, never started early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor import Conveyor, JobState
from tests.conftest import LATE, SLOW_POLL, events_of, eventually, finished

EPS = 1e-6  # float noise on epoch seconds


async def test_delayed_jobs_never_start_early(app: Conveyor) -> None:
    # Given a running worker
    @app.task
    async def later(tag: str) -> str:
        return tag

    async with app.worker(concurrency=4):
        # When jobs are delayed by seconds, a timedelta and until a datetime
        due_at = datetime.now(UTC) + timedelta(seconds=0.4)
        by_secs = await app.enqueue("later", {"tag": "secs"}, delay=0.5)
        by_td = await app.enqueue("later", {"tag": "td"}, delay=timedelta(seconds=0.3))
        by_dt = await app.enqueue("later", {"tag": "dt"}, delay=due_at)
        # And an immediate job wakes the worker meanwhile
        now_job = await later.enqueue(tag="now")
        # Then they are scheduled, not queued, until due
        for job in (by_secs, by_td, by_dt):
            assert job.status is JobState.SCHEDULED
            assert (await app.get(job.id)).status is JobState.SCHEDULED
        assert await app.wait(now_job.id, timeout=5) == "now"
        assert (await app.get(by_secs.id)).status is JobState.SCHEDULED
        for job in (by_secs, by_td, by_dt):
            await eventually(lambda job=job: finished(app, job.id), what="delayed jobs to run")
    # And none started before its due time
    for job, delay in ((by_secs, 0.5), (by_td, 0.3)):
        done = await app.get(job.id)
        assert done.status is JobState.COMPLETED
        assert done.started_at is not None
        assert done.started_at - done.created_at >= delay - EPS
    done = await app.get(by_dt.id)
    assert done.started_at is not None and done.started_at >= due_at.timestamp() - EPS


async def test_a_delayed_job_records_its_due_time_and_a_scheduled_event(app: Conveyor) -> None:
    # Given a task
    @app.task
    async def later() -> None:
        return None

    # When a job is delayed by 60 s
    job = await app.enqueue("later", delay=60)
    # Then it is stored 'scheduled' with its due time, and logged as 'scheduled'
    stored = await app.get(job.id)
    assert stored.status is JobState.SCHEDULED
    assert stored.scheduled_for is not None
    assert abs(stored.scheduled_for - (stored.created_at + 60)) < 1e-3
    events = await events_of(app, job.id)
    assert [e.type.value for e in events] == ["scheduled"]
    counts = (await app.stats())["default"].counts
    assert (counts["scheduled"], counts["queued"]) == (1, 0)


async def test_zero_delay_and_past_datetime_mean_now(app: Conveyor) -> None:
    # Given a task
    @app.task
    async def now() -> None:
        return None

    # When jobs are delayed by 0 s or until a time already past
    zero = await app.enqueue("now", delay=0)
    past = await app.enqueue("now", delay=datetime.now(UTC) - timedelta(hours=1))
    # Then they are queued right away
    assert (await app.get(zero.id)).status is JobState.QUEUED
    assert (await app.get(past.id)).status is JobState.QUEUED


async def test_an_idle_worker_starts_delayed_jobs_when_due_not_at_its_next_poll(
    app: Conveyor,
) -> None:
    # Given a worker that polls only every 5 s (it must sleep until the next due time instead)
    @app.task
    async def later(n: int) -> int:
        return n

    async with app.worker(concurrency=4, poll_interval=SLOW_POLL):
        # When jobs are due in 0.2 s and 0.4 s
        first = await app.enqueue("later", {"n": 1}, delay=0.2)
        second = await app.enqueue("later", {"n": 2}, delay=0.4)
        for job in (first, second):
            await eventually(lambda job=job: finished(app, job.id), what="jobs to run")
    # Then each started within a short moment of its due time (long before the next poll)
    for job, delay in ((first, 0.2), (second, 0.4)):
        done = await app.get(job.id)
        assert done.started_at is not None
        late = done.started_at - (done.created_at + delay)
        assert -EPS <= late < LATE, f"job due after {delay}s started {late:.3f}s late"
