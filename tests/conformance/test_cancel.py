"""Cancelling jobs: pending ones never run; active ones are stopped; final ones are refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from conveyor import Context, Conveyor, JobNotFound, JobState, JobStateError
from tests.conftest import events_of, eventually


async def _status(app: Conveyor, job_id: str) -> JobState:
    return (await app.get(job_id)).status


async def test_cancelled_queued_job_never_runs(app: Conveyor) -> None:
    # Given two queued jobs
    ran: list[str] = []

    @app.task
    async def record(tag: str) -> None:
        ran.append(tag)

    doomed = await record.enqueue(tag="doomed")
    after = await record.enqueue(tag="after")
    # When the first is cancelled and a worker runs
    cancelled = await app.cancel(doomed.id)
    assert cancelled.status is JobState.CANCELLED
    async with app.worker(concurrency=1):
        await app.wait(after.id, timeout=5)
    # Then the cancelled one never ran and stays cancelled
    assert ran == ["after"]
    job = await app.get(doomed.id)
    assert job.status is JobState.CANCELLED
    assert job.attempt == 0
    assert [e.type.value for e in await events_of(app, doomed.id)] == ["enqueued", "cancelled"]


async def test_cancelled_scheduled_job_never_runs(app: Conveyor) -> None:
    # Given a job delayed by 0.1 s and another delayed by 0.2 s
    ran: list[str] = []

    @app.task
    async def record(tag: str) -> None:
        ran.append(tag)

    doomed = await app.enqueue("record", {"tag": "doomed"}, delay=0.1)
    after = await app.enqueue("record", {"tag": "after"}, delay=0.2)
    # When the first is cancelled before it is due
    await app.cancel(doomed.id)
    async with app.worker(concurrency=1):
        await app.wait(after.id, timeout=5)
    # Then it never ran
    assert ran == ["after"]
    assert await _status(app, doomed.id) is JobState.CANCELLED
    counts = (await app.stats())["default"].counts
    assert (counts["scheduled"], counts["cancelled"], counts["completed"]) == (0, 1, 1)


def _long_async(app: Conveyor, started: asyncio.Event, seen: list[str]) -> None:
    @app.task
    async def long(ctx: Context) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise
        return "finished"

    @app.task
    async def next_one() -> str:
        return "next"


async def test_cancel_active_async_job(app: Conveyor) -> None:
    # Given an async handler awaiting a long sleep on a one-slot worker
    started = asyncio.Event()
    seen: list[str] = []
    _long_async(app, started, seen)
    async with app.worker(concurrency=1):
        job = await app.enqueue("long")
        await asyncio.wait_for(started.wait(), 5)
        # When it is cancelled
        res = await app.cancel(job.id)
        # Then the handler sees CancelledError where it awaits, the job ends cancelled
        assert res.status is JobState.CANCELLED
        await eventually(lambda: seen, what="the handler to see CancelledError")
        assert seen == ["CancelledError"]
        # And the worker keeps working: the slot is free for the next job
        nxt = await app.enqueue("next_one")
        assert await app.wait(nxt.id, timeout=5) == "next"
    job = await app.get(job.id)
    assert job.status is JobState.CANCELLED
    assert job.result is None
    types = [e.type.value for e in await events_of(app, job.id)]
    assert types == ["enqueued", "started", "cancelled"]
    counts = (await app.stats())["default"].counts
    assert (counts["active"], counts["cancelled"], counts["completed"]) == (0, 1, 1)


async def test_cancel_from_another_producer_reaches_the_worker(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given an active async job on this app's worker, and another app on the same store
    # (as in another process: no in-process shortcut to the worker)
    started = asyncio.Event()
    seen: list[str] = []
    _long_async(app, started, seen)
    other = make_app()
    async with app.worker(concurrency=1):
        job = await app.enqueue("long")
        await asyncio.wait_for(started.wait(), 5)
        # When the other app cancels it
        await other.cancel(job.id)
        # Then the handler is cancelled promptly (well before the 30 s sleep ends)
        await eventually(lambda: seen, timeout=5, what="the handler to see CancelledError")
        nxt = await app.enqueue("next_one")
        assert await app.wait(nxt.id, timeout=5) == "next"
    assert await _status(app, job.id) is JobState.CANCELLED


async def test_cancel_active_sync_job_sets_ctx_cancelled(app: Conveyor) -> None:
    # Given a sync handler that works in steps and checks ctx.cancelled between them
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    outcome: list[bool] = []

    @app.task
    def stepper(ctx: Context) -> str:
        loop.call_soon_threadsafe(started.set)
        deadline = time.monotonic() + 10
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)
        outcome.append(ctx.cancelled)
        return "stopped"

    @app.task
    async def next_one() -> str:
        return "next"

    async with app.worker(concurrency=1):
        job = await stepper.enqueue()
        await asyncio.wait_for(started.wait(), 5)
        # When it is cancelled
        await app.cancel(job.id)
        # Then the handler sees ctx.cancelled and returns; its result is not recorded
        await eventually(lambda: outcome, what="the sync handler to return")
        assert outcome == [True]
        nxt = await app.enqueue("next_one")
        assert await app.wait(nxt.id, timeout=5) == "next"
    job = await app.get(job.id)
    assert job.status is JobState.CANCELLED
    assert job.result is None


async def test_cancel_is_idempotent_and_refused_for_finished_or_unknown_jobs(
    app: Conveyor,
) -> None:
    # Given a queued job and a completed one
    @app.task
    async def fine() -> None:
        return None

    pending = await fine.enqueue()
    done = await fine.enqueue()
    await app.cancel(pending.id)
    async with app.worker(concurrency=1):
        await app.wait(done.id, timeout=5)
    # When the cancelled job is cancelled again
    again = await app.cancel(pending.id)
    # Then nothing changes: one 'cancelled' event, one cancelled job
    assert again.status is JobState.CANCELLED
    types = [e.type.value for e in await events_of(app, pending.id)]
    assert types.count("cancelled") == 1
    assert (await app.stats())["default"].counts["cancelled"] == 1
    # And cancelling a completed job or an unknown id is refused
    with pytest.raises(JobStateError) as err:
        await app.cancel(done.id)
    assert err.value.state == "completed"
    assert await _status(app, done.id) is JobState.COMPLETED
    with pytest.raises(JobNotFound):
        await app.cancel("no-such-job")


async def test_cancel_a_failed_job_is_refused(app: Conveyor) -> None:
    # Given a failed job
    @app.task(retries=0)
    async def bad() -> None:
        raise RuntimeError("x")

    async with app.worker(concurrency=1):
        job = await bad.enqueue()
        await eventually(lambda: _is_final(app, job.id), what="the job to fail")
    # Then cancelling it is refused and it stays failed
    with pytest.raises(JobStateError):
        await app.cancel(job.id)
    assert await _status(app, job.id) is JobState.FAILED


async def _is_final(app: Conveyor, job_id: str) -> bool:
    return (await _status(app, job_id)).is_final
