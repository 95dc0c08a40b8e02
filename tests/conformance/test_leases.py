"""Leases: a dead worker's job is recovered and runs again; outcomes of an attempt that is no
longer held are ignored; a stopping worker returns unfinished jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from conveyor import Context, Conveyor, JobState
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind
from tests.conftest import events_of, eventually, finished

GHOST = "ghost-worker"


async def _ghost(make_app: Callable[..., Conveyor]) -> Conveyor:
    """Another process on the same store, which claims a job and then 'dies'."""
    ghost = make_app()
    await ghost.open()
    return ghost


async def test_expired_lease_is_recovered_and_the_job_completes(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given a job with a 1 s lease claimed by a worker that then dies
    ran: list[int] = []

    @app.task(lease=1.0)
    async def fragile(n: int) -> int:
        ran.append(n)
        return n

    job = await fragile.enqueue(n=7)
    ghost = await _ghost(make_app)
    claimed = await ghost.backend.claim_jobs(ClaimParams(["default"], 1, GHOST))
    assert [j.id for j in claimed.jobs] == [job.id]
    held = claimed.jobs[0]
    assert (held.status, held.attempt, held.worker) == (JobState.ACTIVE, 1, GHOST)
    assert held.lease_expires_at is not None and held.started_at is not None
    assert abs(held.lease_expires_at - held.started_at - 1.0) < 1e-3
    # When a live worker runs its maintenance
    async with app.worker(concurrency=1, maintenance_interval=0.05):
        # Then once the lease expired the job is requeued, run and completed
        assert await app.wait(job.id, timeout=5) == 7
    done = await app.get(job.id)
    assert ran == [7]
    # And the stall is counted, not charged as an attempt
    assert done.stalls == 1
    assert done.attempt == 1
    assert done.worker != GHOST
    types = [e.type.value for e in await events_of(app, job.id)]
    assert types == ["enqueued", "started", "stalled", "started", "completed"]
    # And the dead worker's late outcome is ignored
    late = Outcome(job.id, 1, OutcomeKind.COMPLETED, result=-1)
    assert await ghost.backend.finish_jobs(GHOST, [late]) == [job.id]
    assert (await app.get(job.id)).result == 7


async def test_a_job_whose_stalls_are_used_up_fails(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given a job allowed no stalls, claimed by a worker that dies
    @app.task(lease=0.5, max_stalls=0)
    async def once() -> None:
        return None

    job = await once.enqueue()
    ghost = await _ghost(make_app)
    await ghost.backend.claim_jobs(ClaimParams(["default"], 1, GHOST))
    # When its lease expires under a live worker's maintenance
    async with app.worker(concurrency=1, maintenance_interval=0.05):
        done = await eventually(lambda: finished(app, job.id), what="the job to fail")
    # Then it failed as stalled, and never ran again
    assert done.status is JobState.FAILED
    assert done.error is not None and done.error["type"] == "Stalled"
    types = [e.type.value for e in await events_of(app, job.id)]
    assert types == ["enqueued", "started", "stalled", "failed"]
    assert (await app.stats())["default"].counts["failed"] == 1


@pytest.mark.parametrize("worker_b", ["worker-b", "worker-a"], ids=["other", "same-name"])
async def test_outcomes_for_a_reclaimed_job_are_ignored(app: Conveyor, worker_b: str) -> None:
    # Given a job claimed by worker A whose lease expired, recovered and claimed by worker B
    # (also under the same worker name, as two processes given one --name: the attempt
    # number is then the same again, the claim token is not)
    @app.task(lease=0.5)
    async def t() -> None:
        return None

    job = await t.enqueue()
    await app.open()
    backend = app.backend
    first = await backend.claim_jobs(ClaimParams(["default"], 1, "worker-a"))
    attempt_a = first.jobs[0].token
    recovered = await eventually(backend.recover_expired, what="the lease to expire")
    assert [(r.job_id, r.state) for r in recovered] == [(job.id, JobState.QUEUED)]
    second = await backend.claim_jobs(ClaimParams(["default"], 1, worker_b))
    assert [j.id for j in second.jobs] == [job.id]
    attempt_b = second.jobs[0].token
    assert first.jobs[0].attempt == second.jobs[0].attempt and attempt_a != attempt_b
    # When A reports, renews or reports progress late
    lost = await backend.finish_jobs(
        "worker-a", [Outcome(job.id, attempt_a, OutcomeKind.COMPLETED, result="from A")]
    )
    renewed = await backend.extend_leases("worker-a", [(job.id, attempt_a)])
    progressed = await backend.set_progress(
        job.id, attempt_a, "worker-a", {"percent": 10, "message": None, "stage": None, "meta": None}
    )
    # Then all of it is ignored: the job is B's
    assert lost == [job.id]
    assert renewed == [job.id]
    assert progressed is False
    current = await app.get(job.id)
    assert (current.status, current.worker) == (JobState.ACTIVE, worker_b)
    # And B's outcome applies
    ok = Outcome(job.id, attempt_b, OutcomeKind.COMPLETED, result="from B")
    assert await backend.finish_jobs(worker_b, [ok]) == []
    assert (await app.get(job.id)).result == "from B"


async def test_outcomes_for_a_cancelled_job_are_ignored(app: Conveyor) -> None:
    # Given a job claimed by a worker, then cancelled
    @app.task
    async def t() -> None:
        return None

    job = await t.enqueue()
    await app.open()
    claimed = await app.backend.claim_jobs(ClaimParams(["default"], 1, GHOST))
    await app.cancel(job.id)
    # When the worker reports completion, a retry, or renews the lease
    done = Outcome(job.id, claimed.jobs[0].token, OutcomeKind.COMPLETED, result=1)
    retry = Outcome(job.id, claimed.jobs[0].token, OutcomeKind.RETRY, retry_in=0,
                    error={"type": "E", "message": "m"})  # fmt: skip
    # Then each is refused and the job stays cancelled
    assert await app.backend.finish_jobs(GHOST, [done]) == [job.id]
    assert await app.backend.finish_jobs(GHOST, [retry]) == [job.id]
    assert await app.backend.extend_leases(GHOST, [(job.id, claimed.jobs[0].token)]) == [job.id]
    current = await app.get(job.id)
    assert current.status is JobState.CANCELLED
    assert current.result is None
    counts = (await app.stats())["default"].counts
    assert (counts["active"], counts["cancelled"], counts["completed"]) == (0, 1, 0)


async def test_stopping_worker_returns_unfinished_jobs_without_charging_an_attempt(
    app: Conveyor,
) -> None:
    # Given a job running on a worker with a short shutdown grace
    started = asyncio.Event()
    runs: list[int] = []

    @app.task
    async def long_job(ctx: Context) -> str:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            started.set()
            await asyncio.sleep(30)
        return "second run"

    worker = app.worker(concurrency=1, shutdown_grace=0.1)
    await worker.start()
    job = await long_job.enqueue()
    await asyncio.wait_for(started.wait(), 5)
    # When the worker stops before the job finishes
    await worker.stop()
    # Then the job is back in the queue, its attempt not charged
    back = await app.get(job.id)
    assert back.status is JobState.QUEUED
    assert back.attempt == 0
    assert (await app.stats())["default"].counts["active"] == 0
    # And another worker runs it from the start
    async with app.worker(concurrency=1):
        assert await app.wait(job.id, timeout=5) == "second run"
    assert runs == [1, 1]
