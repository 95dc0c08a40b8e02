"""Human in the loop: a handler returns `AwaitInput`, the job waits (no slot, no lease) until
``app.resume`` gives the decision, exactly once, or its deadline applies ``on_timeout``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import (
    AwaitInput,
    Context,
    Conveyor,
    JobNotFound,
    JobState,
    JobStateError,
    Retention,
)
from tests.conftest import events_of, eventually, finished

FAST = 0.05  # the worker's maintenance interval: how often it sweeps deadlines


async def _status(app: Conveyor, job_id: str, state: JobState) -> bool:
    return (await app.get(job_id)).status is state


def _review_task(app: Conveyor, runs: list[dict[str, Any]], **await_options: Any) -> None:
    """``review``: awaits a decision on its first run, returns what it saw on the next."""

    @app.task(queue="review", concurrency=1)
    async def review(ctx: Context, doc: str) -> dict[str, Any]:
        runs.append({"resumed": ctx.resumed, "input": ctx.input, "attempt": ctx.attempt})
        if not ctx.resumed:
            return AwaitInput({"question": f"publish {doc}?"}, **await_options)  # type: ignore[return-value]
        return {"doc": doc, "decision": ctx.input, "prompt": ctx.prompt}


async def test_an_awaiting_job_holds_no_lease_nor_slot(app: Conveyor) -> None:
    # Given a queue capped at one active job, whose first job awaits a decision
    runs: list[dict[str, Any]] = []
    _review_task(app, runs, timeout=3600)
    job = await app.enqueue("review", {"doc": "a"})
    async with app.worker(concurrency=4):
        await eventually(lambda: _status(app, job.id, JobState.AWAITING), what="awaiting")
        # When another job of the capped queue is enqueued
        other = await app.enqueue("review", {"doc": "b"})
        # Then it runs (and awaits in turn) while the first waits: the cap's slot was freed
        await eventually(lambda: _status(app, other.id, JobState.AWAITING), what="2nd awaiting")
    # And the awaiting job holds no lease and no worker, shows its prompt and deadline
    parked = await app.get(job.id)
    assert parked.lease_expires_at is None and parked.worker is None
    assert parked.prompt == {"question": "publish a?"}
    assert parked.on_timeout == "fail"
    assert parked.await_deadline is not None
    assert 3500 < parked.await_deadline - app.backend.now() <= 3600
    assert parked.attempt == 1 and parked.error is None
    # And an `awaiting` event says when and what happens then; the attempt is not a failure
    events = await events_of(app, job.id)
    assert [e.type.value for e in events] == ["enqueued", "started", "awaiting"]
    assert events[-1].data == {
        "attempt": 1, "deadline": pytest.approx(parked.await_deadline), "on_timeout": "fail"
    }  # fmt: skip
    stats = (await app.stats(["review"]))["review"]
    assert stats.counts["awaiting"] == 2 and stats.counts["active"] == 0
    assert stats.counts["failed"] == 0


async def test_resume_continues_the_job_once_with_the_decision(app: Conveyor) -> None:
    # Given a job awaiting a decision
    runs: list[dict[str, Any]] = []
    _review_task(app, runs)
    job = await app.enqueue("review", {"doc": "a"})
    async with app.worker(concurrency=2):
        await eventually(lambda: _status(app, job.id, JobState.AWAITING), what="awaiting")
        assert (await app.get(job.id)).await_deadline is None  # no timeout: no deadline
        # When it is resumed with a decision
        resumed = await app.resume(job.id, {"approved": True, "by": "ana"})
        assert resumed.status is JobState.QUEUED and resumed.resumes == 1
        assert resumed.input == {"approved": True, "by": "ana"}
        result = await app.wait(job.id, timeout=10)
    # Then the handler ran again, saw the decision, and the attempt was not charged twice
    assert result == {"doc": "a", "decision": {"approved": True, "by": "ana"},
                      "prompt": {"question": "publish a?"}}  # fmt: skip
    assert runs == [
        {"resumed": False, "input": None, "attempt": 1},
        {"resumed": True, "input": {"approved": True, "by": "ana"}, "attempt": 1},
    ]
    done = await app.get(job.id)
    assert (done.attempt, done.resumes) == (1, 1)
    types = [e.type.value for e in await events_of(app, job.id)]
    assert types == ["enqueued", "started", "awaiting", "resumed", "started", "completed"]
    # And a second resume is a conflict naming the state
    with pytest.raises(JobStateError, match="completed") as err:
        await app.resume(job.id, {"approved": False})
    assert err.value.state == "completed"


async def test_two_concurrent_resumes_one_wins(make_app: Callable[..., Conveyor]) -> None:
    # Given a job awaiting a decision, and two producers (as two processes would be)
    first, second = make_app(), make_app()
    runs: list[dict[str, Any]] = []
    _review_task(first, runs)
    job = await first.enqueue("review", {"doc": "a"})
    async with first.worker(concurrency=1):
        await eventually(lambda: _status(first, job.id, JobState.AWAITING), what="awaiting")
    # When both resume it at once with different decisions
    got = await asyncio.gather(
        first.resume(job.id, "yes"), second.resume(job.id, "no"), return_exceptions=True
    )
    # Then exactly one wins; the other is a conflict; the job holds the winner's decision
    wins = [g for g in got if not isinstance(g, BaseException)]
    losses = [g for g in got if isinstance(g, BaseException)]
    assert len(wins) == 1 and len(losses) == 1, got
    assert isinstance(losses[0], JobStateError) and losses[0].state == "queued"
    stored = await first.get(job.id)
    assert stored.input == wins[0].input and stored.resumes == 1
    types = [e.type.value for e in await events_of(first, job.id)]
    assert types.count("resumed") == 1


@pytest.mark.parametrize(
    ("policy", "state", "event"),
    [("fail", JobState.FAILED, "failed"), ("cancel", JobState.CANCELLED, "cancelled"),
     ("resume", JobState.COMPLETED, "resumed")],
)  # fmt: skip
async def test_a_timeout_applies_its_policy_once_even_after_a_worker_restart(
    make_app: Callable[..., Conveyor], policy: str, state: JobState, event: str
) -> None:
    # Given a job that awaits with a short timeout under one worker, which then stops
    app = make_app()
    runs: list[dict[str, Any]] = []
    data = {"approved": "by default"} if policy == "resume" else None
    _review_task(app, runs, timeout=0.3, on_timeout=policy, data=data)
    job = await app.enqueue("review", {"doc": "a"})
    async with app.worker(concurrency=1, maintenance_interval=3600):
        await eventually(lambda: _status(app, job.id, JobState.AWAITING), what="awaiting")
    # When another process's worker runs (its queue gets no new work) past the deadline
    later = make_app()
    _review_task(later, runs, timeout=0.3, on_timeout=policy, data=data)
    async with later.worker(concurrency=1, maintenance_interval=FAST):
        done = await eventually(lambda: finished(later, job.id), what=f"{policy} on timeout")
    # Then the policy applied, recorded as a timeout in the event log, exactly once
    assert done.status is state
    events = await events_of(later, job.id)
    timed_out = [e for e in events if e.data.get("reason") == "timeout"]
    assert [e.type.value for e in timed_out] == [event]
    if policy == "fail":
        assert done.error is not None and done.error["type"] == "AwaitTimeout"
        assert timed_out[0].data["error"]["type"] == "AwaitTimeout"
    elif policy == "cancel":
        assert timed_out[0].data["from"] == "awaiting"
    else:
        assert done.result["decision"] == {"approved": "by default"}
        assert done.resumes == 1 and runs[-1]["resumed"] is True
    # And a resume after it is a conflict
    with pytest.raises(JobStateError):
        await later.resume(job.id, "too late")


async def test_a_resume_racing_the_timeout_sweep_one_wins(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given a job whose wait has passed its deadline (no worker swept it yet)
    app, other = make_app(), make_app()
    runs: list[dict[str, Any]] = []
    _review_task(app, runs, timeout=0.2, on_timeout="fail")
    job = await app.enqueue("review", {"doc": "a"})
    async with app.worker(concurrency=1, maintenance_interval=3600):
        await eventually(lambda: _status(app, job.id, JobState.AWAITING), what="awaiting")
    deadline = (await app.get(job.id)).await_deadline
    assert deadline is not None
    await eventually(lambda: app.backend.now() > deadline + 0.01, what="the deadline")
    # When a resume and two sweeps run at once
    got = await asyncio.gather(
        app.resume(job.id, "late"), other.backend.expire_awaiting(),
        app.backend.expire_awaiting(), return_exceptions=True,
    )  # fmt: skip
    # Then exactly one of them changed the job
    resumed = not isinstance(got[0], BaseException)
    swept = [r for res in got[1:] if isinstance(res, list) for r in res]
    assert resumed + len(swept) == 1, got
    if not resumed:
        assert isinstance(got[0], JobStateError)
    types = [e.type.value for e in await events_of(app, job.id)]
    assert types.count("resumed") + types.count("failed") == 1


async def test_cancel_an_awaiting_job(app: Conveyor) -> None:
    # Given a job awaiting a decision with a short deadline
    runs: list[dict[str, Any]] = []
    _review_task(app, runs, timeout=0.2, on_timeout="resume", data="auto")
    job = await app.enqueue("review", {"doc": "a"})
    async with app.worker(concurrency=1, maintenance_interval=3600):
        await eventually(lambda: _status(app, job.id, JobState.AWAITING), what="awaiting")
    # When it is cancelled
    cancelled = await app.cancel(job.id)
    # Then it is cancelled from awaiting; neither a resume nor its deadline changes it
    assert cancelled.status is JobState.CANCELLED
    with pytest.raises(JobStateError, match="cancelled"):
        await app.resume(job.id, "yes")
    deadline = (await app.get(job.id)).await_deadline or app.backend.now()
    await eventually(lambda: app.backend.now() > deadline + 0.01, what="the deadline")
    assert await app.backend.expire_awaiting() == []
    assert (await app.get(job.id)).status is JobState.CANCELLED
    events = await events_of(app, job.id)
    assert events[-1].type.value == "cancelled" and events[-1].data == {"from": "awaiting"}
    counts = (await app.stats(["review"]))["review"].counts
    assert (counts["awaiting"], counts["cancelled"]) == (0, 1)


async def test_awaiting_jobs_are_listed_counted_and_kept_by_retention(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given retention that keeps no finished job, and two jobs: one awaiting, one completed
    app = make_app(retention=Retention(completed_max_count=0, completed_max_age=0))
    runs: list[dict[str, Any]] = []
    _review_task(app, runs)

    @app.task(queue="review")
    async def plain() -> None: ...

    async def gone(job_id: str) -> bool:
        return await app.backend.get_job(job_id) is None

    job = await app.enqueue("review", {"doc": "a"})
    done = await plain.enqueue()
    # When a worker runs them, and its retention pass deletes the completed job
    async with app.worker(concurrency=2, maintenance_interval=FAST):
        await eventually(lambda: _status(app, job.id, JobState.AWAITING), what="awaiting")
        await eventually(lambda: gone(done.id), what="retention of the completed job")
    await app.backend.apply_retention("review", app.catalog.retention_for("review"))
    # Then the awaiting job is kept, listed by its state, and counted
    page = await app.list(status="awaiting")
    assert [j.id for j in page.jobs] == [job.id]
    assert page.jobs[0].prompt == {"question": "publish a?"}
    assert (await app.list(status="awaiting", queue="review")).jobs[0].id == job.id
    assert job.id in [j.id for j in (await app.list()).jobs]
    counts = (await app.stats(["review"]))["review"].counts
    assert counts["awaiting"] == 1 and counts["completed"] == 0


async def test_a_multi_round_review(app: Conveyor) -> None:
    # Given a handler that asks twice before it finishes (one attempt allowed)
    @app.task(retries=0)
    def edit(ctx: Context, text: str) -> Any:  # a sync handler, in the thread pool
        if ctx.job.resumes == 0:
            return AwaitInput({"draft": text}, timeout=60)
        if ctx.job.resumes == 1:
            return AwaitInput({"draft": text + " " + ctx.input, "round": 2}, timeout=60)
        return {"final": ctx.input, "last_prompt": ctx.prompt, "attempt": ctx.attempt}

    job = await app.enqueue("edit", {"text": "hello"})
    async with app.worker(concurrency=1):
        await eventually(lambda: _status(app, job.id, JobState.AWAITING), what="1st round")
        # When it is resumed once (from sync code), then again
        app.sync  # noqa: B018  (started here, used from a thread below)
        await asyncio.to_thread(app.sync.resume, job.id, "world")
        await eventually(lambda: _status(app, job.id, JobState.AWAITING), what="2nd round")
        assert (await app.get(job.id)).prompt == {"draft": "hello world", "round": 2}
        await app.resume(job.id, "approved")
        result = await app.wait(job.id, timeout=10)
    # Then it completed after two rounds, on its first (and only) attempt
    assert result == {"final": "approved", "attempt": 1,
                      "last_prompt": {"draft": "hello world", "round": 2}}  # fmt: skip
    types = [e.type.value for e in await events_of(app, job.id)]
    assert types.count("awaiting") == 2 and types.count("resumed") == 2
    assert (await app.get(job.id)).resumes == 2


async def test_resume_is_tenant_scoped_and_checks_its_input(app: Conveyor) -> None:
    # Given acme's job awaiting a decision
    runs: list[dict[str, Any]] = []
    _review_task(app, runs)
    job = await app.enqueue("review", {"doc": "a"}, tenant="acme")
    async with app.worker(concurrency=1):
        await eventually(lambda: _status(app, job.id, JobState.AWAITING), what="awaiting")
    # When another tenant resumes it, or an unknown job is resumed: not found
    with pytest.raises(JobNotFound):
        await app.resume(job.id, "yes", tenant="globex")
    with pytest.raises(JobNotFound):
        await app.resume("0" * 26, "yes")
    # And a decision JSON cannot hold, or too large, is refused before anything changes
    with pytest.raises(ValueError, match="data"):
        await app.resume(job.id, {"x": {1, 2}}, tenant="acme")
    with pytest.raises(ValueError, match="more than 65,536"):
        await app.resume(job.id, "x" * 70_000, tenant="acme")
    assert (await app.get(job.id)).status is JobState.AWAITING
    # Then its own tenant resumes it
    resumed = await app.resume(job.id, "yes", tenant="acme")
    assert resumed.status is JobState.QUEUED and resumed.input == "yes"
