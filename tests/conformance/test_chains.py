"""Chains: a handler returns `Next` and the next step is created in the same atomic step as its
completion, under one workflow id whose state `app.workflow` shows at each step."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import (
    Context,
    Conveyor,
    Job,
    JobNotFound,
    JobState,
    Next,
    WorkflowInfo,
    WorkflowNotFound,
    WorkflowState,
)
from conveyor.backends.base import ClaimParams, NewJob, Outcome, OutcomeKind
from conveyor.job import new_id
from tests.conftest import events_of, eventually


def _chain(app: Conveyor, gates: dict[str, asyncio.Event]) -> None:
    """translate (queue 'text') -> verify (queue 'checks') -> review: three steps over two
    queues, each waiting for its gate so that a test can look at it while it runs."""

    @app.task(queue="text", step="translating", steps=3)
    async def translate(ctx: Context, text: str) -> Next:
        await ctx.progress(50, "half way")
        await gates["translate"].wait()
        return Next("verify", {"text": text.upper()}, result={"chars": len(text)})

    @app.task(queue="checks", step="verifying")
    async def verify(text: str) -> Next:
        await gates["verify"].wait()
        return Next("review", {"text": text}, step="reviewing")

    @app.task(queue="checks")
    async def review(text: str) -> str:
        await gates["review"].wait()
        return f"ok: {text}"


async def _at(
    app: Conveyor, wf: str, label: str, status: JobState, progress: float | None = None
) -> WorkflowInfo | None:
    info = await app.workflow(wf)
    step = info.steps[-1]
    if progress is not None and step.progress != progress:
        return None
    return info if info.current == label and step.status is status else None


async def test_a_chain_runs_in_order_and_its_step_is_visible_at_each_step(app: Conveyor) -> None:
    # Given a three-step chain over two queues, each step held until released
    gates = {name: asyncio.Event() for name in ("translate", "verify", "review")}
    _chain(app, gates)
    job = await app.enqueue("translate", {"text": "hola"})
    async with app.worker(concurrency=2):
        # When the first step runs, Then the workflow (its id: the first job's) shows it
        info = await eventually(lambda: _at(app, job.id, "translating", JobState.ACTIVE, 50),
                                what="translating at 50%")  # fmt: skip
        assert (info.status, info.labels, info.total_steps) == (WorkflowState.RUNNING,
                                                                ["translating"], 3)  # fmt: skip
        assert info.percent == pytest.approx(100 * 0.5 / 3, abs=0.01)  # its own 50% of 1/3
        # When it hands over, Then the second step is current, the first completed
        gates["translate"].set()
        info = await eventually(lambda: _at(app, job.id, "verifying", JobState.ACTIVE),
                                what="verifying")  # fmt: skip
        assert info.labels == ["translating", "verifying"]
        assert info.steps[0].status is JobState.COMPLETED and info.completed_steps == 1
        gates["verify"].set()
        info = await eventually(lambda: _at(app, job.id, "reviewing", JobState.ACTIVE),
                                what="reviewing")  # fmt: skip
        gates["review"].set()
        done = await eventually(lambda: _done(app, job.id), what="the workflow done")
    # Then every step ran once, in order, each the parent of the next, one workflow id
    assert done.labels == ["translating", "verifying", "reviewing"]
    assert (done.percent, done.completed_steps, done.total_steps) == (100.0, 3, 3)
    jobs = [await app.get(s.job_id) for s in done.steps]
    assert [j.task for j in jobs] == ["translate", "verify", "review"]
    assert [j.queue for j in jobs] == ["text", "checks", "checks"]
    assert [j.workflow for j in jobs] == [None, job.id, job.id]
    assert [j.parent for j in jobs] == [None, jobs[0].id, jobs[1].id]
    assert jobs[0].result == {"chars": 4} and jobs[2].result == "ok: HOLA"
    assert jobs[0].next_jobs == (jobs[1].id,) and jobs[2].next_jobs == ()
    # And the sync facade reads the same
    assert (await asyncio.to_thread(app.sync.workflow, job.id)).status is WorkflowState.DONE


async def _done(app: Conveyor, wf: str) -> WorkflowInfo | None:
    info = await app.workflow(wf)
    return info if info.status is WorkflowState.DONE else None


async def test_a_job_that_hands_over_nothing_is_a_one_step_workflow(app: Conveyor) -> None:
    # Given a plain job that completed
    @app.task
    async def plain() -> int:
        return 1

    job = await plain.enqueue()
    async with app.worker(concurrency=1):
        await app.wait(job.id, timeout=10)
    # When its workflow is read, Then it is done in one step; an unknown id is not found
    info = await app.workflow(job.id)
    assert (info.status, info.labels, info.percent) == (WorkflowState.DONE, ["plain"], 100.0)
    with pytest.raises(WorkflowNotFound):
        await app.workflow(new_id())


@pytest.mark.parametrize("bad", ["missing task", "bad payload", "bad queue"])
async def test_a_next_that_cannot_be_stored_fails_the_attempt_and_creates_nothing(
    app: Conveyor, bad: str
) -> None:
    # Given a handler whose Next names a task nobody defined, or a payload or queue its task
    # refuses
    nxt = {"missing task": Next("nowhere", {}), "bad payload": Next("target", {"n": "x"}),
           "bad queue": Next("target", {"n": 1}, queue="no spaces allowed")}[bad]  # fmt: skip

    @app.task(retries=3)
    async def first() -> Next:
        return nxt

    @app.task
    async def target(n: int) -> int:
        return n

    job = await first.enqueue()
    async with app.worker(concurrency=1):
        failed = await eventually(lambda: _final(app, job.id), what="the first step ended")
    # Then the attempt failed for good, saying why; no next step exists; the workflow failed
    assert failed.status is JobState.FAILED and failed.attempt == 1
    assert failed.error is not None and failed.error["type"] == "InvalidNext"
    assert "cannot be stored" in failed.error["message"]
    info = await app.workflow(job.id)
    assert (info.status, len(info.steps)) == (WorkflowState.FAILED, 1)
    assert info.steps[0].error is not None and info.steps[0].error["type"] == "InvalidNext"
    assert failed.next_jobs == ()


async def _final(app: Conveyor, job_id: str) -> Job | None:
    job = await app.get(job_id)
    return job if job.status in (JobState.FAILED, JobState.COMPLETED) else None


async def test_the_next_step_keeps_the_tenant_and_another_tenant_cannot_see_it(
    app: Conveyor,
) -> None:
    # Given a two-step chain enqueued for tenant acme
    @app.task
    async def one() -> Next:
        return Next("two", {})

    @app.task
    async def two() -> str:
        return "ok"

    job = await app.enqueue("one", {}, tenant="acme")
    async with app.worker(concurrency=1):
        await eventually(lambda: _done(app, job.id), what="the workflow done")
    # Then the next step is acme's too, and the workflow is acme's only
    info = await app.workflow(job.id, tenant="acme")
    assert info.tenant == "acme" and len(info.steps) == 2
    assert (await app.get(info.steps[1].job_id)).tenant == "acme"
    with pytest.raises(WorkflowNotFound):
        await app.workflow(job.id, tenant="globex")
    with pytest.raises(WorkflowNotFound):  # nor through the next step's id
        await app.workflow(info.steps[1].job_id, tenant="globex")


async def test_the_completion_event_names_the_next_job(app: Conveyor) -> None:
    # Given a two-step chain that ran
    @app.task
    async def first() -> Next:
        return Next("second", {"n": 2})

    @app.task
    async def second(n: int) -> int:
        return n

    job = await first.enqueue()
    async with app.worker(concurrency=1):
        info = await eventually(lambda: _done(app, job.id), what="the workflow done")
    # Then the first step's completed event carries the next job's id (what SSE shows)
    nxt = info.steps[1].job_id
    completed = [e for e in await events_of(app, job.id) if e.type == "completed"]
    assert [e.data for e in completed] == [{"next": [nxt]}]
    assert "enqueued" in [e.type for e in await events_of(app, nxt)]


async def test_a_resent_hand_over_never_creates_the_next_job_twice(app: Conveyor) -> None:
    # Given a claimed job, and an outcome carrying its next job (id fixed by the worker)
    @app.task(queue="first-q")
    async def first() -> None: ...

    @app.task(queue="second-q")
    async def second() -> None: ...

    job = await first.enqueue()
    backend = app.backend
    (claimed,) = (await backend.claim_jobs(ClaimParams(["first-q"], 1, "w1"))).jobs
    nxt = NewJob(new_id(), "second-q", "second", "{}", 5, 1, 3, None, 30.0,
                 workflow=job.id, parent=job.id)  # fmt: skip
    outcome = Outcome(job.id, claimed.token, OutcomeKind.COMPLETED, then=[nxt])
    # When the outcome is sent, sent again (a retry after a lost reply), and the hand-overs
    # are forwarded twice (two workers sweeping)
    assert await backend.finish_jobs("w1", [outcome]) == []
    assert await backend.finish_jobs("w1", [outcome]) == [job.id]  # ignored: not held
    await backend.forward_handovers(["first-q", "second-q"])
    await backend.forward_handovers(["first-q"])
    # Then the next job exists once, queued, in the other queue
    stored = await app.get(nxt.id)
    assert (stored.status, stored.queue, stored.parent) == (JobState.QUEUED, "second-q", job.id)
    info = await app.workflow(job.id)
    assert [s.job_id for s in info.steps] == [job.id, nxt.id]
    assert (await app.stats(["second-q"]))["second-q"].counts[JobState.QUEUED] == 1


async def test_an_outcome_not_applied_creates_no_next_job(app: Conveyor) -> None:
    # Given a job that was cancelled while a worker held it
    @app.task
    async def first() -> None: ...

    job = await first.enqueue()
    backend = app.backend
    (claimed,) = (await backend.claim_jobs(ClaimParams(["default"], 1, "w1"))).jobs
    await app.cancel(job.id)
    nxt = NewJob(new_id(), "default", "first", "{}", 5, 1, 3, None, 30.0, parent=job.id)
    # When its worker sends the completion with a next job
    lost = await backend.finish_jobs("w1", [Outcome(job.id, claimed.token,
                                                    OutcomeKind.COMPLETED, then=[nxt])])  # fmt: skip
    await backend.forward_handovers(["default"])
    # Then the outcome was ignored and no next job exists
    assert lost == [job.id]
    assert await backend.get_job(nxt.id) is None


async def test_the_next_job_can_be_read_as_soon_as_the_completion_that_names_it(
    app: Conveyor,
) -> None:
    # Given a claimed job of one tenant, completed with an outcome carrying its next job in
    # another queue, and no worker running to deliver hand-overs
    @app.task(queue="first-q")
    async def first() -> None: ...

    @app.task(queue="second-q")
    async def second() -> None: ...

    job = await app.enqueue("first", {}, tenant="acme")
    backend = app.backend
    (claimed,) = (await backend.claim_jobs(ClaimParams(["first-q"], 1, "w1"))).jobs
    nxt = NewJob(new_id(), "second-q", "second", "{}", 5, 1, 3, None, 30.0, tenant="acme",
                 workflow=job.id, parent=job.id)  # fmt: skip
    outcome = Outcome(job.id, claimed.token, OutcomeKind.COMPLETED, then=[nxt])
    assert await backend.finish_jobs("w1", [outcome]) == []
    # When a caller that saw the job complete reads the next job it names
    done = await app.get(job.id)
    assert done.status is JobState.COMPLETED and done.next_jobs == (nxt.id,)
    # Then another tenant cannot read, cancel or resume it
    with pytest.raises(JobNotFound):
        await app.get(nxt.id, tenant="other")
    with pytest.raises(JobNotFound):
        await app.cancel(nxt.id, tenant="other")
    with pytest.raises(JobNotFound):
        await app.resume(nxt.id, {}, tenant="other")
    # And its tenant finds it, queued (not JobNotFound while a hand-over is on its way), once
    stored = await app.get(nxt.id, tenant="acme")
    assert (stored.status, stored.queue, stored.parent) == (JobState.QUEUED, "second-q", job.id)
    await backend.forward_handovers(["first-q", "second-q"])
    assert (await app.stats(["second-q"]))["second-q"].counts[JobState.QUEUED] == 1
    # And an id no job has is still not found
    with pytest.raises(JobNotFound):
        await app.get(new_id())


async def test_the_next_job_can_be_cancelled_as_soon_as_the_completion_that_names_it(
    app: Conveyor,
) -> None:
    # Given a job completed with an outcome carrying its next job, no worker delivering
    @app.task
    async def first() -> None: ...

    job = await first.enqueue()
    backend = app.backend
    (claimed,) = (await backend.claim_jobs(ClaimParams(["default"], 1, "w1"))).jobs
    nxt = NewJob(new_id(), "default", "first", "{}", 5, 1, 3, None, 30.0, workflow=job.id,
                 parent=job.id)  # fmt: skip
    outcome = Outcome(job.id, claimed.token, OutcomeKind.COMPLETED, then=[nxt])
    assert await backend.finish_jobs("w1", [outcome]) == []
    # When someone cancels the next job it names
    cancelled = await app.cancel(nxt.id)
    # Then it is cancelled, and a later sweep does not bring it back
    assert cancelled.status is JobState.CANCELLED
    await backend.forward_handovers(["default"])
    assert (await app.get(nxt.id)).status is JobState.CANCELLED
    assert (await backend.claim_jobs(ClaimParams(["default"], 5, "w2"))).jobs == []
