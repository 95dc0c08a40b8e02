"""``app.wait``: the result, or JobFailed / JobCancelled / TimeoutError."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, JobCancelled, JobFailed, JobNotFound


async def test_wait_returns_the_result(app: Conveyor) -> None:
    # Given a task returning JSON
    @app.task
    async def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    # When a job runs and is waited for
    async with app.worker(concurrency=1):
        job = await add.enqueue(a=2, b=3)
        result = await app.wait(job.id, timeout=5)
    # Then wait returns the stored result
    assert result == {"sum": 5}
    assert (await app.get(job.id)).result == {"sum": 5}


async def test_wait_raises_job_failed_with_the_error(app: Conveyor) -> None:
    # Given a task that fails
    @app.task(retries=0)
    async def boom() -> None:
        raise KeyError("missing thing")

    async with app.worker(concurrency=1):
        job = await boom.enqueue()
        # When it is waited for, then JobFailed carries the stored error
        with pytest.raises(JobFailed) as err:
            await app.wait(job.id, timeout=5)
    assert err.value.job_id == job.id
    assert err.value.error["type"] == "KeyError"


async def test_wait_raises_job_cancelled(app: Conveyor) -> None:
    # Given a cancelled job
    @app.task
    async def never() -> None:
        return None

    job = await never.enqueue()
    await app.cancel(job.id)
    # Then waiting for it raises JobCancelled
    with pytest.raises(JobCancelled):
        await app.wait(job.id, timeout=5)


async def test_wait_times_out(app: Conveyor) -> None:
    # Given a job no worker will run
    @app.task
    async def idle() -> None:
        return None

    job = await idle.enqueue()
    # Then waiting with a timeout raises the builtin TimeoutError
    with pytest.raises(TimeoutError):
        await app.wait(job.id, timeout=0.1)
    # And waiting for an unknown id raises JobNotFound
    with pytest.raises(JobNotFound):
        await app.wait("no-such-job", timeout=0.1)
