"""A failing hook is logged once per failure, naming the hook and never the payload, and never
takes the worker down or loses a job: each method raising, with a real worker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from conveyor import Context, Conveyor, Enqueuing, Hooks, Job, JobState, Outcome, OutcomeKind
from conveyor.worker.runtime import Worker

SECRET = "s3cr3t-payload-value"


class Broken(Hooks):
    """Raises in the methods named in ``where``; counts the jobs it saw finish."""

    def __init__(self, *where: str) -> None:
        self.where = set(where)
        self.outcomes: list[OutcomeKind] = []

    def _boom(self, method: str) -> None:
        if method in self.where:
            raise RuntimeError(f"{method} bug")

    def before_enqueue(self, jobs: Sequence[Enqueuing]) -> None:
        for j in jobs:
            j.meta["seen"] = True
        self._boom("before_enqueue")

    async def around_execute(self, ctx: Context, call_next: Callable[[], Awaitable[Any]]) -> Any:
        self._boom("around_before")
        if "around_skip" in self.where:
            return "not the handler's result"
        res = await call_next()
        self._boom("around_after")
        return res

    def after_outcome(self, job: Job, outcome: Outcome) -> None:
        self.outcomes.append(outcome.kind)
        self._boom("after_outcome")

    def on_worker_start(self, worker: Worker) -> None:
        self._boom("on_worker_start")

    def on_worker_stop(self, worker: Worker) -> None:
        self._boom("on_worker_stop")

    def on_event(self, event: str, job: Job, data: Any) -> None:
        self._boom("on_event")


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Conveyor]:
    a = Conveyor(f"sqlite:///{tmp_path}/h.db")
    yield a
    await a.close()


async def _run_jobs(app: Conveyor, hook: Broken, n: int = 5) -> list[Job]:
    ran: list[str] = []

    @app.task(retries=0)
    async def echo(ctx: Context, secret: str, i: int) -> int:
        ran.append(ctx.job.id)
        return i

    app.add_hook(hook)
    async with app.worker(concurrency=2):
        batch = await app.enqueue_many([("echo", {"secret": SECRET, "i": i}) for i in range(n)])
        single = await echo.enqueue(secret=SECRET, i=n)
        await batch.wait(timeout=10)
        await app.wait(single.id, timeout=10)
    jobs = [await app.get(i) for i in [*batch.ids, single.id]]
    assert sorted(ran) == sorted(j.id for j in jobs)  # each ran exactly once
    return jobs


def _hook_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "conveyor.hooks" and r.levelno >= logging.ERROR]


def _no_payload_in(records: list[logging.LogRecord]) -> None:
    for r in records:
        text = r.getMessage() + (
            logging.Formatter().formatException(r.exc_info) if r.exc_info else ""
        )
        assert SECRET not in text


@pytest.mark.allow_errors(r"hook Broken\.before_enqueue failed")
async def test_before_enqueue_raising_still_enqueues(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a hook whose before_enqueue raises (after setting meta)
    jobs = await _run_jobs(app, Broken("before_enqueue"))
    # Then every job was stored and completed, with what the hook set before it raised
    assert [j.status for j in jobs] == [JobState.COMPLETED] * 6
    assert all(j.meta == {"seen": True} for j in jobs)
    # And one record per producer call names the hook and the method
    errs = _hook_errors(caplog)
    assert len(errs) == 2
    assert all("Broken.before_enqueue" in r.getMessage() for r in errs)
    _no_payload_in(errs)


@pytest.mark.parametrize("where", ["around_before", "around_after", "around_skip"])
@pytest.mark.allow_errors(r"hook Broken\.around_execute")
async def test_around_execute_raising_or_skipping_runs_the_job_once_with_its_result(
    app: Conveyor, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    # Given a hook that raises before or after call_next, or never calls it
    jobs = await _run_jobs(app, Broken(where))
    # Then every job ran once and completed with the handler's own result
    assert [j.status for j in jobs] == [JobState.COMPLETED] * 6
    assert [j.result for j in jobs] == list(range(6))
    # And each failure was logged once, naming the hook
    errs = _hook_errors(caplog)
    assert len(errs) == 6
    assert all("Broken.around_execute" in r.getMessage() for r in errs)
    _no_payload_in(errs)


@pytest.mark.allow_errors(r"hook Broken\.(after_outcome|on_event|on_worker_st\w+) failed")
async def test_after_outcome_events_and_worker_start_stop_raising_change_nothing(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a hook raising in every worker-side method but around_execute
    hook = Broken("after_outcome", "on_event", "on_worker_start", "on_worker_stop")
    jobs = await _run_jobs(app, hook)
    # Then the worker ran every job to completion and stopped cleanly
    assert [j.status for j in jobs] == [JobState.COMPLETED] * 6
    assert hook.outcomes == [OutcomeKind.COMPLETED] * 6
    # And each failure is one record: start + stop + 6 outcomes + 18 events (enqueued, started
    # and completed for all six, the batch's too)
    errs = _hook_errors(caplog)
    by = {m: sum(m in r.getMessage() for r in errs) for m in
          ("on_worker_start", "on_worker_stop", "after_outcome", "on_event")}  # fmt: skip
    assert by == {"on_worker_start": 1, "on_worker_stop": 1, "after_outcome": 6, "on_event": 18}
    _no_payload_in(errs)


@pytest.mark.allow_errors(r"Wrap\.around_execute swallowed")
async def test_a_hook_that_swallows_the_handlers_error_does_not_turn_a_failure_into_success(
    app: Conveyor,
) -> None:
    # Given a hook that catches what call_next raises and returns a value
    class Wrap(Hooks):
        async def around_execute(
            self, ctx: Context, call_next: Callable[[], Awaitable[Any]]
        ) -> Any:
            try:
                return await call_next()
            except Exception:
                return "swallowed"

    @app.task(retries=0)
    async def fails() -> None:
        raise ValueError("handler bug")

    app.add_hook(Wrap())
    async with app.worker(concurrency=1):
        job = await fails.enqueue()
        await _settled(app, job.id)
    # Then the attempt still failed with the handler's error
    got = await app.get(job.id)
    assert got.status is JobState.FAILED and got.error is not None
    assert got.error["type"] == "ValueError"


async def _settled(app: Conveyor, job_id: str) -> None:
    from tests.conftest import eventually, finished

    await eventually(lambda: finished(app, job_id), what="the job to end")
