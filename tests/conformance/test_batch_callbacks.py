"""Batches with callbacks: ``on_complete``/``on_success`` enqueued exactly once when the last
member ends (also with members added late), the batch record's counts, tenancy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import (
    BatchClosed,
    BatchNotFound,
    Conveyor,
    Job,
    JobState,
    Next,
    Permanent,
    Retention,
    Retry,
    ValidationError,
)
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind
from tests.conftest import eventually, finished


def _callbacks(app: Conveyor, seen: list[dict[str, Any]]) -> None:
    """Register the callback tasks ``done`` and ``ok``: each records the payload it got."""

    @app.task(queue="callbacks")
    async def done(batch: str, counts: dict[str, int], total: int) -> None:
        seen.append({"task": "done", "batch": batch, "counts": counts, "total": total})

    @app.task(queue="callbacks")
    async def ok(batch: str, counts: dict[str, int], total: int) -> None:
        seen.append({"task": "ok", "batch": batch, "counts": counts, "total": total})


async def _jobs_of(app: Conveyor, task: str) -> list[Job]:
    return (await app.list(task=task, limit=100)).jobs


async def _callback_done(app: Conveyor, task: str) -> Job | None:
    jobs = await _jobs_of(app, task)
    return jobs[0] if jobs and jobs[0].status is JobState.COMPLETED else None


async def test_on_complete_fires_once_after_every_member_ended(app: Conveyor) -> None:
    # Given a batch of three jobs, one of which fails for good, with both callbacks
    seen: list[dict[str, Any]] = []
    _callbacks(app, seen)

    @app.task
    async def part(i: int) -> int:
        if i == 1:
            raise Permanent("no")
        return i

    batch = await app.enqueue_many(
        [("part", {"i": i}) for i in range(3)], on_complete="done", on_success="ok"
    )
    st = await batch.status()
    assert st.record is not None and not st.record.fired
    assert [c["state"] for c in st.record.callbacks] == ["waiting", "waiting"]
    # When a worker runs them all (and the callbacks' queue)
    async with app.worker(concurrency=2, queues=["default", "callbacks"]):
        await eventually(lambda: _callback_done(app, "done"), what="on_complete to run")
    # Then on_complete ran once with the counts; on_success was not enqueued
    assert seen == [{"task": "done", "batch": batch.id, "total": 3,
                     "counts": {"completed": 2, "failed": 1, "cancelled": 0}}]  # fmt: skip
    assert len(await _jobs_of(app, "done")) == 1 and await _jobs_of(app, "ok") == []
    # And the status says so
    st = await batch.status()
    assert st.finished and st.record is not None and st.record.fired
    states = {c["name"]: (c["state"], c["job_id"]) for c in st.record.callbacks}
    assert states["on_complete"][0] == "enqueued" and states["on_success"][0] == "skipped"
    assert (await app.get(states["on_complete"][1])).task == "done"
    assert st.counts == {"completed": 2, "failed": 1} and st.total == 3


async def test_on_success_fires_when_every_member_completed(app: Conveyor) -> None:
    # Given a batch whose members all complete, one after a failed attempt that is retried
    seen: list[dict[str, Any]] = []
    _callbacks(app, seen)
    tries: dict[int, int] = {}

    @app.task(retries=2)
    async def part(i: int) -> int:
        tries[i] = tries.get(i, 0) + 1
        if i == 0 and tries[i] == 1:
            raise Retry(after=0)  # not final: the batch stays open
        return i

    await app.enqueue_many(
        [("part", {"i": i}) for i in range(2)], on_complete="done", on_success="ok"
    )
    # When a worker runs them
    async with app.worker(concurrency=2, queues=["default", "callbacks"]):
        await eventually(lambda: _callback_done(app, "ok"), what="on_success to run")
        await eventually(lambda: _callback_done(app, "done"), what="on_complete to run")
    # Then both callbacks ran once, with every member completed
    assert sorted(s["task"] for s in seen) == ["done", "ok"]
    assert all(s["counts"]["completed"] == 2 and s["total"] == 2 for s in seen)
    assert tries[0] == 2


async def test_members_added_late_keep_the_batch_open(app: Conveyor) -> None:
    # Given a batch of one member that blocks until released
    seen: list[dict[str, Any]] = []
    _callbacks(app, seen)
    release = asyncio.Event()

    @app.task
    async def part(i: int) -> int:
        if i == 0:
            await release.wait()
        return i

    batch = await app.enqueue_many([("part", {"i": 0})], on_complete="done")
    async with app.worker(concurrency=3, queues=["default", "callbacks"]):
        await eventually(lambda: _active(app, batch.ids[0]), what="the first member to run")
        # When two members are added while it runs, and they complete first
        added = await batch.add([("part", {"i": 1}), ("part", {"i": 2})])
        assert added.id == batch.id and len(added) == 2
        for job_id in added.ids:
            await eventually(lambda j=job_id: finished(app, j), what="an added member")
        # Then the callback has not fired: the first member still runs
        assert await _jobs_of(app, "done") == []
        assert (await batch.status()).total == 3
        # When it ends
        release.set()
        await eventually(lambda: _callback_done(app, "done"), what="on_complete to run")
    # Then the callback fired once, counting the members added late
    assert [(s["total"], s["counts"]["completed"]) for s in seen] == [(3, 3)]
    # And a batch whose callbacks fired takes no more members (nothing stored)
    with pytest.raises(BatchClosed):
        await app.enqueue_many([("part", {"i": 3})], batch=batch.id)
    assert len((await app.list(batch=batch.id)).jobs) == 3


async def _active(app: Conveyor, job_id: str) -> bool:
    return (await app.get(job_id)).status is JobState.ACTIVE


async def test_two_finishers_of_the_last_members_fire_once(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given a batch of two jobs claimed by two workers of two apps on one store
    seen: list[dict[str, Any]] = []
    a, b = make_app(), make_app()
    for x in (a, b):
        _callbacks(x, seen)

        @x.task
        async def part(i: int) -> int:
            return i

    batch = await a.enqueue_many([("part", {"i": i}) for i in range(2)], on_complete="done")
    await b.open()
    one = (await a.backend.claim_jobs(ClaimParams(["default"], 1, "w1"))).jobs[0]
    two = (await b.backend.claim_jobs(ClaimParams(["default"], 1, "w2"))).jobs[0]
    # When both finish at once, and one outcome is sent again
    out1 = Outcome(one.id, one.token, OutcomeKind.COMPLETED, result=1)
    out2 = Outcome(two.id, two.token, OutcomeKind.COMPLETED, result=2)
    await asyncio.gather(a.backend.finish_jobs("w1", [out1]), b.backend.finish_jobs("w2", [out2]))
    assert await a.backend.finish_jobs("w1", [out1]) == [one.id]  # ignored: not held
    await a.backend.settle_batches(["default"])
    await b.backend.settle_batches(["default"])
    # Then exactly one on_complete job exists
    jobs = await _jobs_of(a, "done")
    assert len(jobs) == 1 and jobs[0].status is JobState.QUEUED
    assert jobs[0].payload == {"batch": batch.id, "total": 2,
                               "counts": {"completed": 2, "failed": 0, "cancelled": 0}}  # fmt: skip


async def test_cancelled_and_retention_deleted_members_settle(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given a batch of three members on an app that keeps no completed job
    app = make_app(retention=Retention(completed_max_count=0, completed_max_age=None))
    seen: list[dict[str, Any]] = []
    _callbacks(app, seen)

    @app.task
    async def part(i: int) -> int:
        return i

    batch = await app.enqueue_many([("part", {"i": i}) for i in range(3)], on_complete="done")
    # When one is cancelled, one completes and retention deletes it
    await app.cancel(batch.ids[2])
    first = (await app.backend.claim_jobs(ClaimParams(["default"], 1, "w"))).jobs[0]
    await app.backend.finish_jobs("w", [Outcome(first.id, first.token, OutcomeKind.COMPLETED)])
    assert await app.backend.apply_retention("default", app.catalog.retention_for("default")) == 1
    # Then the batch is still open, and counts the deleted member as completed
    st = await batch.status()
    assert (st.total, st.counts) == (3, {"completed": 1, "cancelled": 1, "queued": 1})
    assert await _jobs_of(app, "done") == []
    # When the last member completes and is deleted too
    last = (await app.backend.claim_jobs(ClaimParams(["default"], 1, "w"))).jobs[0]
    await app.backend.finish_jobs("w", [Outcome(last.id, last.token, OutcomeKind.COMPLETED)])
    await app.backend.settle_batches(["default"])
    await app.backend.apply_retention("default", app.catalog.retention_for("default"))
    # Then the callback is enqueued once, and the counts survive the members' retention
    jobs = await _jobs_of(app, "done")
    assert len(jobs) == 1
    assert jobs[0].payload["counts"] == {"completed": 2, "failed": 0, "cancelled": 1}
    st = await batch.status()
    assert (st.total, st.done, st.counts) == (3, 3, {"completed": 2, "cancelled": 1})
    assert (await app.list(batch=batch.id)).jobs == [] or all(
        j.status is JobState.CANCELLED for j in (await app.list(batch=batch.id)).jobs
    )


async def test_the_callback_is_retried_not_enqueued_again(app: Conveyor) -> None:
    # Given a batch whose on_complete fails its first attempt
    attempts: list[int] = []

    @app.task
    async def part(i: int) -> int:
        return i

    @app.task(queue="callbacks", retries=3)
    async def flaky(batch: str, counts: dict[str, int], total: int) -> str:
        attempts.append(total)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    await app.enqueue_many([("part", {"i": 0})], on_complete="flaky")
    # When a worker runs the member and the callback
    async with app.worker(concurrency=2, queues=["default", "callbacks"]):
        job = await eventually(lambda: _callback_done(app, "flaky"), what="the callback")
    # Then the one callback job completed on its second attempt
    assert job.attempt == 2 and job.result == "ok" and attempts == [1, 1]
    assert len(await _jobs_of(app, "flaky")) == 1


async def test_a_member_that_hands_over_ends_and_its_next_step_stays_out(
    app: Conveyor,
) -> None:
    # Given a batch of two members whose handlers continue in a chain (`Next`), the next steps
    # held until released
    seen: list[dict[str, Any]] = []
    _callbacks(app, seen)
    release = asyncio.Event()

    @app.task
    async def part(i: int) -> Next:
        return Next("after", {"i": i}, result=i)

    @app.task(queue="later")
    async def after(i: int) -> int:
        await release.wait()
        return i

    batch = await app.enqueue_many([("part", {"i": i}) for i in range(2)], on_complete="done")
    async with app.worker(concurrency=4, queues=["default", "later", "callbacks"]):
        # When the members complete, handing over
        job = await eventually(lambda: _callback_done(app, "done"), what="on_complete to run")
        # Then the callback ran once with both members completed, while the next steps run
        nexts = (await app.list(task="after", limit=10)).jobs
        assert len(nexts) == 2 and all(j.status is JobState.ACTIVE for j in nexts)
        assert seen == [{"task": "done", "batch": batch.id, "total": 2,
                         "counts": {"completed": 2, "failed": 0, "cancelled": 0}}]  # fmt: skip
        # And the next steps are not members: no batch, the workflow of their member
        assert all(j.batch is None for j in nexts)
        assert {j.workflow for j in nexts} == set(batch.ids)
        release.set()
        await eventually(lambda: _all_done(app, "after"), what="the next steps")
    # Then nothing fired again and the batch still counts its two members
    assert len(await _jobs_of(app, "done")) == 1 and job.attempt == 1 and len(seen) == 1
    st = await batch.status()
    assert (st.total, st.counts) == (2, {"completed": 2})


async def _all_done(app: Conveyor, task: str) -> bool:
    jobs = await _jobs_of(app, task)
    return bool(jobs) and all(j.status is JobState.COMPLETED for j in jobs)


async def test_a_batch_record_belongs_to_its_tenant(app: Conveyor) -> None:
    # Given a batch of tenant a
    seen: list[dict[str, Any]] = []
    _callbacks(app, seen)

    @app.task
    async def part(i: int) -> int:
        return i

    batch = await app.enqueue_many([("part", {"i": 0})], tenant="a", on_complete="done")
    # Then another tenant sees no such batch, and cannot add to it
    st = await (await app.batch(batch.id, tenant="b")).status()
    assert (st.total, st.record) == (0, None)
    with pytest.raises(BatchNotFound):
        await app.enqueue_many([("part", {"i": 1})], batch=batch.id, tenant="b")
    with pytest.raises(BatchNotFound):
        await app.enqueue_many([("part", {"i": 1})], batch="no-such-batch")
    # And its own tenant sees it, and adds to it
    own = await (await app.batch(batch.id, tenant="a")).status()
    assert own.total == 1 and own.record is not None
    await app.enqueue_many([("part", {"i": 1})], batch=batch.id, tenant="a")
    assert (await (await app.batch(batch.id, tenant="a")).status()).total == 2
    # When the batch ends, the callback job is the tenant's
    async with app.worker(concurrency=2, queues=["default", "callbacks"]):
        job = await eventually(lambda: _callback_done(app, "done"), what="on_complete")
    assert job.tenant == "a" and seen[0]["total"] == 2


async def test_bad_callbacks_are_refused_before_anything_is_stored(app: Conveyor) -> None:
    # Given a task that does not take the callback payload
    @app.task
    async def part(i: int) -> int:
        return i

    @app.task
    async def narrow(x: int) -> None:
        return None

    # Then callbacks it cannot run, an empty batch with callbacks, or mixed tenants are refused
    for kwargs in ({"on_complete": "narrow"}, {"on_success": "nope"},
                   {"on_complete": {"task": "part", "colour": 1}},
                   {"on_complete": "part", "batch_ttl": -1}):  # fmt: skip
        with pytest.raises(ValidationError):
            await app.enqueue_many([("part", {"i": 0})], **kwargs)
    with pytest.raises(ValidationError):
        await app.enqueue_many([], on_complete="part")
    with pytest.raises(ValidationError):
        await app.enqueue_many(
            [{"task": "part", "payload": {"i": 0}, "tenant": "x"}], tenant="y",
            on_complete="part",
        )  # fmt: skip
    assert (await app.list(limit=10)).jobs == []
