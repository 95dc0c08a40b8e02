"""Backlog age (``QueueStats.oldest_seconds``, the metric ``conveyor_queue_oldest_seconds``) and
the due time a claimed job carries (``Job.scheduled_for``, the start of its wait)."""

from __future__ import annotations

import pytest

from conveyor import Context, Conveyor, JobState
from tests.conftest import eventually


async def test_backlog_age_is_the_age_of_the_next_job_to_claim(app: Conveyor) -> None:
    # Given a queue with nothing queued
    @app.task(queue="old")
    async def noop() -> None:
        return None

    assert (await app.stats(["old"]))["old"].oldest_seconds is None
    # When a normal job waits a while, then a high-priority one is enqueued
    first = await app.enqueue("noop", {})
    await eventually(lambda: app.backend.now() - first.created_at >= 0.05, what="time to pass")
    head = await app.enqueue("noop", {}, priority="high")
    before = app.backend.now()
    age = (await app.stats(["old"]))["old"].oldest_seconds
    after = app.backend.now()
    # Then the age is the head's (the high job, claimed next), on the backend's clock
    assert age is not None
    assert before - head.created_at - 1e-3 <= age <= after - head.created_at + 1e-3
    assert age < before - first.created_at
    assert (await app.stats(["old"]))["old"].to_dict()["oldest_seconds"] is not None


async def test_a_delayed_job_waits_from_its_due_time(app: Conveyor) -> None:
    # Given a task that records the job it was given
    seen: list[float | None] = []

    @app.task(queue="due")
    async def rec(ctx: Context) -> None:
        seen.append(ctx.job.scheduled_for)

    # When a delayed job comes due and runs
    async with app.worker(concurrency=1, queues=["due"], poll_interval=0.05):
        job = await app.enqueue("rec", {}, delay=0.2)
        assert job.scheduled_for is not None
        await eventually(lambda: seen, what="the delayed job to run")
        done = await eventually(lambda: _completed(app, job.id), what="the delayed job to complete")
    # Then the claimed job carried its due time (its wait starts there, not at enqueue), and
    # the stored job keeps it
    # (to the microsecond: a backend may store the time as text of ~16 digits)
    assert seen == [pytest.approx(job.scheduled_for, abs=1e-6)]
    assert done.scheduled_for == pytest.approx(job.scheduled_for, abs=1e-6)
    assert done.started_at is not None and done.started_at >= job.scheduled_for - 1e-3


async def _completed(app: Conveyor, job_id: str) -> object:
    job = await app.get(job_id)
    return job if job.status is JobState.COMPLETED else None
