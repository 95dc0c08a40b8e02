"""Failed attempts: automatic retries with backoff, Retry/Permanent signals, timeouts, and
manual retry."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from conveyor import Context, Conveyor, JobNotFound, JobState, JobStateError, Permanent, Retry
from tests.conftest import LATE, SLOW_POLL, events_of, eventually, finished


async def test_flaky_job_completes_on_its_third_attempt(app: Conveyor) -> None:
    # Given a handler that fails twice, then succeeds, with retries=2
    calls: Counter[str] = Counter()

    @app.task(retries=2, backoff_initial=0.01, backoff_jitter=0)
    async def flaky(key: str) -> str:
        calls[key] += 1
        if calls[key] < 3:
            raise RuntimeError(f"failure {calls[key]}")
        return "ok"

    # When it runs
    async with app.worker(concurrency=2):
        job = await flaky.enqueue(key="a")
        assert await app.wait(job.id, timeout=5) == "ok"
    # Then it completed on attempt 3 after two 'retrying' events
    job = await app.get(job.id)
    assert job.status is JobState.COMPLETED
    assert job.attempt == 3
    types = [e.type.value for e in await events_of(app, job.id)]
    assert types.count("retrying") == 2
    assert types[-1] == "completed"


async def test_backoff_grows_and_exhausted_retries_fail_with_the_error_stored(
    app: Conveyor,
) -> None:
    # Given a handler that always fails, retries=3, backoff 0.05 s doubling, no jitter
    @app.task(retries=3, backoff_initial=0.05, backoff_factor=2, backoff_jitter=0)
    async def doomed() -> None:
        raise ValueError("the API said no")

    # When it runs until its attempts are used up, on a worker that rarely polls by itself
    async with app.worker(concurrency=1, poll_interval=SLOW_POLL):
        job = await doomed.enqueue()
        await eventually(lambda: finished(app, job.id), what="the job to end")
    # Then each retry waited longer: 0.05, 0.1, 0.2 s, never less than announced, and not much
    # more either (the worker woke for it instead of waiting for its next poll)
    events = await events_of(app, job.id)
    retrying = [e for e in events if e.type == "retrying"]
    assert [e.data["retry_in"] for e in retrying] == pytest.approx([0.05, 0.1, 0.2])
    assert [e.data["attempt"] for e in retrying] == [1, 2, 3]
    starts = [e for e in events if e.type == "started"]
    assert len(starts) == 4
    for retry_event, next_start in zip(retrying, starts[1:], strict=True):
        late = next_start.time - retry_event.time - retry_event.data["retry_in"]
        assert -1e-6 <= late < LATE, f"retry started {late:.3f}s after it was due"
    # And the job failed on attempt 4 with the error's type, message and traceback stored
    job = await app.get(job.id)
    assert job.status is JobState.FAILED
    assert job.attempt == 4
    assert job.error is not None
    assert job.error["type"] == "ValueError"
    assert job.error["message"] == "the API said no"
    assert "the API said no" in job.error["traceback"]
    assert events[-1].type == "failed"
    assert job.finished_at is not None


async def test_permanent_fails_at_once_without_retries(app: Conveyor) -> None:
    # Given a handler that raises Permanent though retries remain
    @app.task(retries=5)
    async def hopeless() -> None:
        raise Permanent("bad input, retrying will not help")

    # When it runs
    async with app.worker(concurrency=1):
        job = await hopeless.enqueue()
        await eventually(lambda: finished(app, job.id), what="the job to end")
    # Then it failed on attempt 1 with no retry
    job = await app.get(job.id)
    assert job.status is JobState.FAILED
    assert job.attempt == 1
    assert job.error is not None
    assert job.error["type"] == "Permanent"
    assert job.error["message"] == "bad input, retrying will not help"
    assert "retrying" not in [e.type for e in await events_of(app, job.id)]


async def test_retry_after_sets_the_next_delay(app: Conveyor) -> None:
    # Given a handler that asks to be retried after 0.3 s (say, an API's Retry-After)
    @app.task(retries=1, backoff_initial=60)
    async def polite(ctx: Context) -> int:
        if ctx.attempt == 1:
            raise Retry(after=0.3, reason="rate limited upstream")
        return ctx.attempt

    # When it runs, on a worker that rarely polls by itself
    async with app.worker(concurrency=1, poll_interval=SLOW_POLL):
        job = await polite.enqueue()
        assert await app.wait(job.id, timeout=SLOW_POLL * 2) == 2
    # Then the second attempt started 0.3 s after the first one ended: never earlier, and not
    # much later either (the worker woke for it instead of waiting for its next poll)
    events = await events_of(app, job.id)
    (retrying,) = [e for e in events if e.type == "retrying"]
    assert retrying.data["retry_in"] == pytest.approx(0.3)
    second_start = [e for e in events if e.type == "started"][1]
    assert 0.3 - 1e-6 <= second_start.time - retrying.time < 0.3 + LATE
    job = await app.get(job.id)
    assert job.started_at is not None and job.started_at - retrying.time >= 0.3 - 1e-6


async def test_retry_signal_on_the_last_attempt_fails_the_job(app: Conveyor) -> None:
    # Given a handler that always asks for a retry, with no retries left
    @app.task(retries=0)
    async def again() -> None:
        raise Retry(after=0.01)

    # When it runs
    async with app.worker(concurrency=1):
        job = await again.enqueue()
        await eventually(lambda: finished(app, job.id), what="the job to end")
    # Then it failed, saying the attempts are used up
    job = await app.get(job.id)
    assert job.status is JobState.FAILED
    assert job.error is not None and "used up" in job.error["message"]


async def test_async_timeout_fails_the_attempt_with_job_timeout(app: Conveyor) -> None:
    # Given an async handler sleeping 5 s under a 0.2 s timeout, with one retry
    @app.task(timeout=0.2, retries=1, backoff_initial=0)
    async def sleepy() -> None:
        await asyncio.sleep(5)

    # When it runs
    t0 = time.monotonic()
    async with app.worker(concurrency=1):
        job = await sleepy.enqueue()
        await eventually(lambda: finished(app, job.id), what="the job to end")
    # Then each attempt was cut at the timeout: a retry, then a final failure, both JobTimeout
    assert time.monotonic() - t0 < 4
    events = await events_of(app, job.id)
    (retrying,) = [e for e in events if e.type == "retrying"]
    assert retrying.data["error"]["type"] == "JobTimeout"
    job = await app.get(job.id)
    assert job.status is JobState.FAILED
    assert job.attempt == 2
    assert job.error is not None and job.error["type"] == "JobTimeout"


async def test_timeout_without_retries_fails_the_job(app: Conveyor) -> None:
    # Given an async handler sleeping 5 s under a 0.2 s timeout and retries=0
    @app.task(timeout=0.2, retries=0)
    async def sleepy() -> None:
        await asyncio.sleep(5)

    # When it runs
    async with app.worker(concurrency=1):
        job = await sleepy.enqueue()
        done = await eventually(lambda: finished(app, job.id), what="the job to end")
    # Then it failed after about the timeout, with JobTimeout
    assert done.status is JobState.FAILED
    assert done.error is not None and done.error["type"] == "JobTimeout"
    assert done.finished_at is not None and done.started_at is not None
    assert 0.2 - 1e-3 <= done.finished_at - done.started_at < 3


async def test_sync_timeout_tells_the_handler_through_ctx_cancelled(app: Conveyor) -> None:
    # Given a sync handler that works in steps until told to stop, under a 0.2 s timeout
    saw_cancel: list[bool] = []

    @app.task(timeout=0.2, retries=0)
    def stepper(ctx: Context) -> None:
        deadline = time.monotonic() + 5
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)
        saw_cancel.append(ctx.cancelled)

    # When it runs past the timeout
    async with app.worker(concurrency=1):
        job = await stepper.enqueue()
        done = await eventually(lambda: finished(app, job.id), what="the job to end")
        await eventually(lambda: saw_cancel, what="the handler to return")
    # Then the attempt failed with JobTimeout and the handler saw ctx.cancelled
    assert done.status is JobState.FAILED
    assert done.error is not None and done.error["type"] == "JobTimeout"
    assert saw_cancel == [True]


async def test_manual_retry_runs_a_failed_job_again(app: Conveyor) -> None:
    # Given a job that failed (retries=0) because of a condition since fixed
    broken = True

    @app.task(retries=0)
    async def fixable() -> str:
        if broken:
            raise RuntimeError("not yet")
        return "fixed"

    async with app.worker(concurrency=1):
        job = await fixable.enqueue()
        failed = await eventually(lambda: finished(app, job.id), what="the job to fail")
        assert failed.status is JobState.FAILED
        # When it is retried by hand
        broken = False
        requeued = await app.retry(job.id)
        assert requeued.status is JobState.QUEUED
        assert requeued.attempt == 0
        assert requeued.error is None
        # Then it runs again, with fresh attempts, and completes
        assert await app.wait(job.id, timeout=5) == "fixed"
    job = await app.get(job.id)
    assert job.attempt == 1
    counts = (await app.stats())["default"].counts
    assert (counts["failed"], counts["completed"]) == (0, 1)


async def test_manual_retry_runs_a_cancelled_job(app: Conveyor) -> None:
    # Given a cancelled job
    @app.task
    async def later() -> str:
        return "ran"

    job = await later.enqueue()
    await app.cancel(job.id)
    # When it is retried by hand and a worker runs
    await app.retry(job.id)
    async with app.worker(concurrency=1):
        # Then it runs to completion
        assert await app.wait(job.id, timeout=5) == "ran"


async def test_manual_retry_is_refused_unless_failed_or_cancelled(app: Conveyor) -> None:
    # Given a queued job and a completed one
    @app.task
    async def fine() -> None:
        return None

    queued = await fine.enqueue()
    # Then retrying a queued job, or an unknown id, is refused
    with pytest.raises(JobStateError):
        await app.retry(queued.id)
    with pytest.raises(JobNotFound):
        await app.retry("no-such-job")
    async with app.worker(concurrency=1):
        await app.wait(queued.id, timeout=5)
    # And so is retrying a completed job
    with pytest.raises(JobStateError):
        await app.retry(queued.id)
