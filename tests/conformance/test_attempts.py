"""Attempts on the quiet paths: an outcome never strands jobs, every claim has its own token,
a slot is held while its handler runs, and every way an attempt fails is accounted alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from conveyor import CircuitBreaker, Context, Conveyor, JobState
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind
from tests.conftest import events_of, eventually, finished

NO_PROGRESS = {"percent": 40, "message": "half", "stage": None, "meta": None}


class BytesError(Exception):
    """A handler error carrying fields JSON cannot hold."""

    def error_fields(self) -> dict[str, Any]:
        return {"raw": b"\x00\xff", "seen": {1, 2}}


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


# -- item 1: an outcome can never strand jobs ---------------------------------------------------


async def test_outcomes_json_cannot_hold_fail_only_their_own_attempts(app: Conveyor) -> None:
    # Given handlers whose errors JSON cannot hold (bytes fields, a __str__ that raises), and
    # ordinary jobs claimed in the same rounds
    @app.task(retries=0)
    async def bad(kind: str) -> None:
        raise BytesError("binary") if kind == "bytes" else UnprintableError()

    @app.task
    async def good(n: int) -> int:
        return n

    bads = [await bad.enqueue(kind=k) for k in ("bytes", "str", "bytes")]
    goods = [await good.enqueue(n=i) for i in range(20)]
    # When one worker runs them all
    async with app.worker(concurrency=8):
        ended = [await eventually(lambda j=j: finished(app, j.id), what="every job to end")
                 for j in bads + goods]  # fmt: skip
    # Then each bad one failed alone with a readable error, and every good one completed
    for job in ended[:3]:
        assert job.status is JobState.FAILED
        assert job.error is not None and job.error["type"] in ("BytesError", "UnprintableError")
    assert ended[0].error is not None and "\\x00" in str(ended[0].error["raw"])
    assert ended[1].error is not None and ended[1].error["message"]
    assert [j.result for j in ended[3:]] == list(range(20))
    counts = (await app.stats())["default"].counts
    assert (counts["active"], counts["failed"], counts["completed"]) == (0, 3, 20)


async def test_a_batch_of_outcomes_applies_around_one_that_cannot_be_encoded(
    app: Conveyor,
) -> None:
    # Given three claimed jobs
    @app.task
    async def t() -> None:
        return None

    jobs = [await t.enqueue() for _ in range(3)]
    await app.open()
    claimed = (await app.backend.claim_jobs(ClaimParams(["default"], 3, "w"))).jobs
    a, b, c = sorted(claimed, key=lambda j: [x.id for x in jobs].index(j.id))
    # When one acknowledgement carries an error and another a result JSON cannot hold
    lost = await app.backend.finish_jobs("w", [
        Outcome(a.id, a.token, OutcomeKind.COMPLETED, result=1),
        Outcome(b.id, b.token, OutcomeKind.FAILED, error={"type": "E", "message": b"\xff"}),
        Outcome(c.id, c.token, OutcomeKind.COMPLETED, result={"x": object()}),
    ])  # fmt: skip
    # Then all three land: the first completed, the other two failed saying why
    assert lost == []
    got = {j.id: await app.get(j.id) for j in (a, b, c)}
    assert (got[a.id].status, got[a.id].result) == (JobState.COMPLETED, 1)
    assert got[b.id].status is JobState.FAILED and got[b.id].error == {
        "type": "E", "message": "b'\\xff'"}  # fmt: skip
    assert got[c.id].status is JobState.FAILED
    assert got[c.id].error is not None and got[c.id].error["type"] == "ResultNotSerializable"
    counts = (await app.stats())["default"].counts
    assert (counts["active"], counts["failed"], counts["completed"]) == (0, 2, 1)


# -- item 2: attempt identity is unique ---------------------------------------------------------


async def test_tokens_never_repeat_across_release_recovery_and_retry(app: Conveyor) -> None:
    # Given a job claimed, released, claimed, failed, retried and claimed again
    @app.task(lease=30)
    async def t() -> None:
        return None

    job = await t.enqueue()
    await app.open()
    backend = app.backend
    tokens = []
    j = (await backend.claim_jobs(ClaimParams(["default"], 1, "w"))).jobs[0]
    tokens.append(j.token)
    assert await backend.release_jobs("w", [(j.id, j.token)]) == 1
    j = (await backend.claim_jobs(ClaimParams(["default"], 1, "w"))).jobs[0]
    tokens.append(j.token)
    await backend.finish_jobs("w", [Outcome(j.id, j.token, OutcomeKind.FAILED, error={})])
    await app.retry(job.id)
    j = (await backend.claim_jobs(ClaimParams(["default"], 1, "w"))).jobs[0]
    tokens.append(j.token)
    # Then every claim had a new token, though the attempt number went back to 1 each time
    assert j.attempt == 1
    assert len(set(tokens)) == 3 and tokens == sorted(tokens)


async def test_a_cancelled_sync_job_retried_while_its_old_attempt_runs(app: Conveyor) -> None:
    # Given a sync handler whose runs block until released, ignoring ctx.cancelled
    release = [threading.Event(), threading.Event()]
    runs: list[int] = []
    returned: list[int] = []

    @app.task(lease=30)
    def step(ctx: Context) -> int:
        n = len(runs)
        runs.append(n)
        release[n].wait(10)
        returned.append(n)
        return n

    async with app.worker(concurrency=2) as worker:
        job = await step.enqueue()
        await eventually(lambda: runs, what="the first run to start")
        # When the job is cancelled, retried and claimed again by the same worker while the
        # first run still holds its thread, and the first run returns before the second
        await app.cancel(job.id)
        await app.retry(job.id)
        await eventually(lambda: len(runs) == 2, what="the second run to start")
        release[0].set()
        await eventually(lambda: returned == [0], what="the first run to return")
        # Then the worker still holds the second attempt (and renews its lease)
        assert [k[0] for k in worker.running] == [job.id]
        release[1].set()
        done = await eventually(lambda: finished(app, job.id), what="the second run to end")
    # And the second run's outcome is the job's; the job ran exactly twice
    assert (done.status, done.result) == (JobState.COMPLETED, 1)
    assert runs == [0, 1]


# -- item 3: a slot is held for as long as the handler runs ------------------------------------


async def test_a_timed_out_sync_handler_keeps_its_slot_until_it_returns(app: Conveyor) -> None:
    # Given one slot, a sync job that overruns its 0.2 s timeout by ignoring ctx.cancelled,
    # and a quick sync job behind it with a 1 s timeout
    returned: list[float] = []
    started: list[float] = []

    @app.task(timeout=0.2, retries=0)
    def stubborn() -> None:
        time.sleep(1.5)
        returned.append(time.monotonic())

    @app.task(timeout=1.0, retries=0)
    def quick() -> str:
        started.append(time.monotonic())
        return "ok"

    first = await stubborn.enqueue()
    second = await quick.enqueue()
    async with app.worker(concurrency=1):
        a = await eventually(lambda: finished(app, first.id), timeout=10, what="the overrun")
        b = await eventually(lambda: finished(app, second.id), timeout=10, what="the quick job")
    # Then the first timed out, and the second ran only after the first had returned: its
    # timeout counted from its own start, so it completed
    assert a.error is not None and a.error["type"] == "JobTimeout"
    assert (b.status, b.result) == (JobState.COMPLETED, "ok")
    assert started[0] >= returned[0]


async def _conc_active(app: Conveyor) -> int:
    gates = (await app.stats())["default"].limits
    return int(next(g for g in gates if g["kind"] == "conc")["active"])


async def test_a_cancelled_sync_job_keeps_its_gate_slot_until_its_handler_returns(
    app: Conveyor,
) -> None:
    # Given a task capped at 1 running job, whose first run blocks, ignoring ctx.cancelled
    release = threading.Event()
    runs: list[int] = []
    returned: list[float] = []
    started: list[float] = []

    @app.task(concurrency=1)
    def capped(n: int) -> int:
        runs.append(n)
        started.append(time.monotonic())
        if n == 0:
            release.wait(10)
            returned.append(time.monotonic())
        return n

    async with app.worker(concurrency=2) as worker:
        first = await capped.enqueue(n=0)
        await eventually(lambda: runs == [0], what="the first run to start")
        second = await capped.enqueue(n=1)
        # When the running job is cancelled while its handler goes on
        await app.cancel(first.id)
        await eventually(lambda: any(r.lost for r in worker.running.values()), what="the stop")
        # Then its gate slot is still taken: nobody can claim the next job of the task
        assert await _conc_active(app) == 1
        other = await app.backend.claim_jobs(ClaimParams(["default"], 5, "another-worker"))
        assert other.jobs == []
        # And once the handler returns, the slot is given back and the next job runs
        release.set()
        done = await eventually(lambda: finished(app, second.id), what="the next job to run")
    assert (done.status, done.result) == (JobState.COMPLETED, 1)
    assert started[1] >= returned[0]
    assert (await app.get(first.id)).status is JobState.CANCELLED
    assert await _conc_active(app) == 0


async def test_a_cancelled_job_of_a_dead_worker_frees_its_gate_slot_at_lease_expiry(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given a capped job claimed by a worker that dies, then cancelled
    @app.task(concurrency=1, lease=0.5)
    async def capped() -> None:
        return None

    job = await capped.enqueue()
    ghost = make_app()
    await ghost.open()
    assert len((await ghost.backend.claim_jobs(ClaimParams(["default"], 1, "ghost"))).jobs) == 1
    await app.cancel(job.id)
    assert await _conc_active(app) == 1

    # When its lease expires under recovery
    async def freed() -> bool:
        await app.backend.recover_expired()
        return await _conc_active(app) == 0

    await eventually(freed, what="the held slot to be freed")
    # Then the job stays cancelled
    assert (await app.get(job.id)).status is JobState.CANCELLED


# -- item 10: one place decides how an attempt fails --------------------------------------------


async def test_a_stall_failure_counts_like_a_handler_failure(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given a task whose breaker opens at the first failure, and a job of it whose worker
    # dies with no stalls allowed
    @app.task(lease=0.5, max_stalls=0, breaker=CircuitBreaker(failures=1, cooldown=60))
    async def fragile() -> None:
        return None

    job = await fragile.enqueue()
    ghost = make_app()
    await ghost.open()
    claimed = await ghost.backend.claim_jobs(ClaimParams(["default"], 1, "ghost"))
    assert [j.id for j in claimed.jobs] == [job.id]
    # When its lease expires and recovery fails it
    await eventually(app.backend.recover_expired, what="the lease to expire")
    # Then the failure looks like a handler's: the same event shape, and the breaker counted it
    failed = [e for e in await events_of(app, job.id) if e.type.value == "failed"]
    assert len(failed) == 1 and failed[0].data["attempt"] == 1
    assert failed[0].data["error"]["type"] == "Stalled"
    gates = (await app.stats())["default"].limits
    breaker = next(g for g in gates if g["kind"] == "breaker")
    assert breaker["state"] == "open"


# -- item 13: a job returned to the queue does not keep its old progress ------------------------


async def test_progress_is_cleared_when_a_job_goes_back_to_the_queue(app: Conveyor) -> None:
    # Given a claimed job that reported progress
    @app.task(lease=0.5)
    async def t() -> None:
        return None

    job = await t.enqueue()
    await app.open()
    backend = app.backend
    j = (await backend.claim_jobs(ClaimParams(["default"], 1, "w"))).jobs[0]
    assert await backend.set_progress(j.id, j.token, "w", NO_PROGRESS)
    # When it is released, then (after another claim and progress) its lease expires
    assert await backend.release_jobs("w", [(j.id, j.token)]) == 1
    released = await app.get(job.id)
    j = (await backend.claim_jobs(ClaimParams(["default"], 1, "w"))).jobs[0]
    assert await backend.set_progress(j.id, j.token, "w", NO_PROGRESS)
    await eventually(backend.recover_expired, what="the lease to expire")
    recovered = await app.get(job.id)
    # Then each time it is queued with no progress
    assert released.status is JobState.QUEUED and released.progress.percent is None
    assert recovered.status is JobState.QUEUED and recovered.progress.percent is None
