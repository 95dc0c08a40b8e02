"""The durable event log: per-job order, increasing ids, resumable reads."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import Context, Conveyor, Event, EventRetention, EventType, Job, JobState
from tests.conftest import events_of, eventually, finished


def _types(events: list[Event]) -> list[str]:
    return [e.type.value for e in events]


async def test_a_job_logs_enqueued_started_progress_completed_in_order(app: Conveyor) -> None:
    # Given a handler that reports progress
    @app.task(queue="ev")
    async def step(ctx: Context, n: int) -> int:
        await ctx.progress(50, "halfway")
        return n

    # When a job runs
    async with app.worker(concurrency=1, queues=["ev"]):
        job = await step.enqueue(n=1)
        await app.wait(job.id, timeout=5)
    events = await events_of(app, job.id)
    # Then its events are enqueued, started, progress, completed, each with its own cursor
    assert _types(events) == ["enqueued", "started", "progress", "completed"]
    assert len({e.cursor for e in events}) == len(events)
    times = [e.time for e in events]
    assert times == sorted(times)
    # And each names the job, its queue and task
    for e in events:
        assert (e.job_id, e.queue, e.task) == (job.id, "ev", "step")
    assert events[1].data.get("attempt") == 1
    assert events[2].data.get("percent") == 50


async def test_every_job_has_its_full_history_once_in_the_log(app: Conveyor) -> None:
    # Given several jobs run concurrently
    @app.task
    async def quick(i: int) -> int:
        await asyncio.sleep(0)
        return i

    batch = await app.enqueue_many([("quick", {"i": i}) for i in range(10)])
    async with app.worker(concurrency=5):
        await batch.wait(timeout=5)
    # When the whole log is read
    log = [e async for e in app.events(since="0", follow=False)]
    # Then every event has its own cursor and every job has its own full history, in order
    assert len({e.cursor for e in log}) == len(log) == 30
    for job_id in batch.ids:
        assert _types([e for e in log if e.job_id == job_id]) == [
            "enqueued", "started", "completed",
        ]  # fmt: skip


async def test_delayed_retried_failed_and_cancelled_jobs_log_their_events(app: Conveyor) -> None:
    # Given a task that fails once then fails for good, and a plain one
    @app.task(retries=1, backoff_initial=0, backoff_jitter=0)
    async def bad() -> None:
        raise RuntimeError("nope")

    @app.task
    async def fine() -> None:
        return None

    async with app.worker(concurrency=2):
        delayed = await app.enqueue("fine", delay=0.05)
        failing = await bad.enqueue()
        for j in (delayed, failing):
            await eventually(lambda j=j: finished(app, j.id), what="jobs to end")
    cancelled = await fine.enqueue()
    await app.cancel(cancelled.id)
    # Then each logged what happened to it, in order
    assert _types(await events_of(app, delayed.id)) == ["scheduled", "started", "completed"]
    failing_events = await events_of(app, failing.id)
    assert _types(failing_events) == ["enqueued", "started", "retrying", "started", "failed"]
    assert failing_events[2].data["error"]["type"] == "RuntimeError"
    assert failing_events[4].data["error"]["message"] == "nope"
    assert _types(await events_of(app, cancelled.id)) == ["enqueued", "cancelled"]


async def test_reading_resumes_after_a_given_event_cursor(app: Conveyor) -> None:
    # Given a log with some events
    @app.task
    async def t(i: int) -> None:
        return None

    for i in range(5):
        await t.enqueue(i=i)
    log = [e async for e in app.events(since="0", follow=False)]
    assert len(log) == 5
    # When a reader resumes from the second event's cursor
    rest = [e async for e in app.events(since=log[1].cursor, follow=False)]
    # Then it gets exactly the events after it
    assert rest == log[2:]
    # And from the last cursor, nothing
    assert [e async for e in app.events(since=log[-1].cursor, follow=False)] == []


async def test_following_the_log_sees_new_events_from_now_on(app: Conveyor) -> None:
    # Given an old job, and a reader following the log from "now" (since=None)
    @app.task
    async def t(i: int) -> None:
        return None

    old = await t.enqueue(i=0)
    seen: list[Event] = []

    async def follow() -> None:
        async for e in app.events(poll=0.01):
            seen.append(e)
            if e.type == "completed" and e.job_id == new.id:
                return

    reader = asyncio.create_task(follow())

    async def following() -> bool:
        # The reader takes "now" at its first read, which a busy machine may delay past the
        # enqueue below: a probe job per try until the reader has seen one
        await t.enqueue(i=-1)
        return bool(seen)

    await eventually(following, interval=0.05, what="the reader to follow the log")
    # When a new job is enqueued and runs
    new = await t.enqueue(i=1)
    async with app.worker(concurrency=1):
        await app.wait(new.id, timeout=5)
        await asyncio.wait_for(reader, 5)
    # Then the reader saw the new job complete, and nothing logged before it started
    assert ("completed", new.id) in [(e.type.value, e.job_id) for e in seen]
    assert ("enqueued", old.id) not in [(e.type.value, e.job_id) for e in seen]


async def test_custom_events_are_appended_and_the_log_is_capped(app: Conveyor) -> None:
    # Given a log with five job events and one custom event outside any job
    @app.task
    async def t(i: int) -> None:
        return None

    for i in range(5):
        await t.enqueue(i=i)
    await app.open()
    await app.backend.append_event(EventType.BREAKER_OPENED, queue="default", data={"failures": 5})
    log = [e async for e in app.events(since="0", follow=False)]
    assert (log[-1].type, log[-1].job_id, log[-1].data) == ("breaker_opened", None, {"failures": 5})
    head = await app.backend.last_event_cursor()
    assert [e async for e in app.events(since=head, follow=False)] == []
    # When the log is capped to its 3 newest events
    removed = await app.backend.trim_events(EventRetention(max_count=3, max_age=None))
    # Then the oldest 3 are gone and the newest 3 remain
    assert removed == 3
    assert [e async for e in app.events(since="oldest", follow=False)] == log[-3:]
    # And capping by age 0 empties it (every event is older than now)
    await app.backend.trim_events(EventRetention(max_count=None, max_age=0))
    assert [e async for e in app.events(since="oldest", follow=False)] == []
    # And a reader that had read everything still resumes: it lost nothing
    await t.enqueue(i=9)
    (new,) = [e async for e in app.events(since="oldest", follow=False)]
    assert [e async for e in app.events(since=log[-1].cursor, follow=False)] == [new]


@pytest.mark.allow_errors(r"listener .*broken.* for 'started' failed")  # the raising listener
async def test_in_process_listeners_see_job_events_and_cannot_break_jobs(app: Conveyor) -> None:
    # Given a listener for every event, an async one for 'completed', and one that raises
    seen: list[tuple[str, str]] = []
    completed: list[object] = []

    def everything(event: str, job: Job, data: object) -> None:
        seen.append((event, job.id))

    async def on_completed(event: str, job: Job, data: object) -> None:
        completed.append(data)

    def broken(event: str, job: Job, data: object) -> None:
        raise RuntimeError("listener bug")

    app.on("*", everything)
    app.on("completed", on_completed)
    app.on("started", broken)
    unsubscribe = app.on("enqueued", everything)
    unsubscribe()

    @app.task
    async def t(n: int) -> int:
        return n

    # When a job runs in this process
    async with app.worker(concurrency=1):
        job = await t.enqueue(n=4)
        assert await app.wait(job.id, timeout=5) == 4
        await eventually(lambda: completed, what="the async listener to run")
    # Then the listeners saw its life in order, and the raising one did not disturb it
    assert seen == [("enqueued", job.id), ("started", job.id), ("completed", job.id)]
    assert completed == [{"result": 4, "error": None, "retry_in": 0.0}]
    assert (await app.get(job.id)).status is JobState.COMPLETED
