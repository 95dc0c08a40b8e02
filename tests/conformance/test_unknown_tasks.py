"""A job whose task the worker has no handler for: failed for good with the reason, not retried
as if it were a transient error; unless another live worker on its queue runs that task."""

from __future__ import annotations

import time
from collections.abc import Callable

from conveyor import Conveyor, Job, JobState
from conveyor.backends.base import TaskInfo, WorkerInfo
from tests.conftest import eventually


def _producer(app: Conveyor) -> None:
    # A producer that only declares the task (as `conveyor enqueue` without --app does)
    app.declare("ghost", retries=3)


def _runner(app: Conveyor) -> None:
    @app.task
    async def real() -> None:
        return None


async def _attempted(app: Conveyor, job_id: str) -> Job | None:
    job = await app.get(job_id)
    return job if job.attempt >= 1 and job.status is not JobState.ACTIVE else None


async def test_a_job_no_live_worker_can_run_fails_for_good_naming_why(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given a job of task 'ghost' (3 retries) on queue 'default', and a worker on that queue
    # that has no handler for it
    producer, runner = make_app(), make_app()
    _producer(producer)
    _runner(runner)
    job = await producer.enqueue("ghost", {"x": 1})
    # When the worker claims it
    async with runner.worker(concurrency=1):
        done = await eventually(lambda: _attempted(producer, job.id), what="the first attempt")
    # Then it failed at once, for good, saying which task has no handler
    assert (done.status, done.attempt) == (JobState.FAILED, 1)
    assert done.error is not None and done.error["type"] == "Permanent"
    assert "'ghost'" in done.error["message"] and "no handler" in done.error["message"]


async def test_a_task_the_worker_only_declared_fails_for_good_too(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given a worker whose app declares 'ghost' (defined elsewhere) without defining it
    app = make_app()
    _producer(app)
    _runner(app)
    job = await app.enqueue("ghost", {})
    # When it claims the job
    async with app.worker(concurrency=1):
        done = await eventually(lambda: _attempted(app, job.id), what="the first attempt")
    # Then it is failed for good as well
    assert (done.status, done.attempt) == (JobState.FAILED, 1)
    assert done.error is not None and "'ghost'" in done.error["message"]


async def test_a_job_another_live_worker_runs_is_retried_not_failed(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given another live worker on queue 'default' that runs 'ghost' (a rolling deploy: the
    # new version is up, an old one still claims from the same queue)
    producer, runner = make_app(), make_app()
    _producer(producer)
    _runner(runner)
    await producer.open()
    other = WorkerInfo("new-version", ["default"], 4, 0, 1, "h", time.time(), ttl=60.0,
                       tasks=[TaskInfo("ghost", "default", {"type": "object"})])  # fmt: skip
    await producer.backend.worker_heartbeat(other)
    job = await producer.enqueue("ghost", {})
    # When the old worker claims the job
    async with runner.worker(concurrency=1):
        done = await eventually(lambda: _attempted(producer, job.id), what="the first attempt")
    # Then it goes back for a worker that has the handler, naming one
    assert (done.status, done.attempt) == (JobState.SCHEDULED, 1)
    assert done.error is not None and "new-version" in done.error["message"]
