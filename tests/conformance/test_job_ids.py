"""A job id is stored once: `enqueue_jobs` given a job whose id the store already holds (a spool
forwarder resending it after a crash, or two forwarders at once) stores nothing and reports
``created=False``, whatever state the stored job has reached."""

from __future__ import annotations

import dataclasses

from conveyor import Conveyor, JobState
from conveyor.backends.base import NewJob
from conveyor.job import new_id
from conveyor.serializers import dumps
from tests.conftest import eventually, finished


def _new(queue: str = "default", **kw: object) -> NewJob:
    fields: dict[str, object] = {
        "id": new_id(), "queue": queue, "task": "work", "payload": dumps({"n": 1}),
        "priority": 5, "max_attempts": 1, "max_stalls": 3, "timeout": None, "lease": 30.0,
    }  # fmt: skip
    fields.update(kw)
    return NewJob(**fields)  # type: ignore[arg-type]


async def test_a_job_sent_twice_is_stored_once(app: Conveyor) -> None:
    # Given a job the store took
    await app.open()
    nj = _new()
    first = await app.backend.enqueue_jobs([nj])
    # When the same job is sent again, alone and in a batch beside a new one
    again = await app.backend.enqueue_jobs([dataclasses.replace(nj)])
    other = _new()
    mixed = await app.backend.enqueue_jobs([dataclasses.replace(nj), other])
    # Then only the first call and the new job created anything
    assert first.created == [True]
    assert again.ids == [nj.id] and again.created == [False]
    assert mixed.ids == [nj.id, other.id] and mixed.created == [False, True]
    stats = await app.stats()
    assert stats["default"].counts["queued"] == 2
    events = [e async for e in app.events(since="0", follow=False, job_id=nj.id)]
    assert [e.type for e in events] == ["enqueued"]


async def test_a_resent_job_never_resets_a_finished_one(app: Conveyor) -> None:
    # Given a job that ran to completion
    @app.task
    async def work(n: int) -> int:
        return n

    await app.open()
    nj = _new(payload=dumps({"n": 7}))
    await app.backend.enqueue_jobs([nj])
    async with app.worker(concurrency=1):
        await eventually(lambda: finished(app, nj.id), what="the job finishing")
    # When a forwarder resends it (with its idempotency key or without)
    res = await app.backend.enqueue_jobs([dataclasses.replace(nj)])
    # Then it stays completed with its result, and was not queued again
    assert res.created == [False]
    job = await app.get(nj.id)
    assert job.status is JobState.COMPLETED and job.result == 7
    assert (await app.stats())["default"].counts.get("queued", 0) == 0


async def test_a_resent_job_with_an_idempotency_key_is_stored_once(app: Conveyor) -> None:
    # Given a job with a tenant and an idempotency key, stored
    await app.open()
    nj = _new(idempotency_key="k-1", tenant="acme", delay=60.0)
    await app.backend.enqueue_jobs([nj])
    # When it is sent again
    res = await app.backend.enqueue_jobs([dataclasses.replace(nj)])
    # Then its own id comes back, not created, and the key still finds it
    assert res.ids == [nj.id] and res.created == [False]
    again = await app.backend.enqueue_jobs([_new(idempotency_key="k-1", tenant="acme")])
    assert again.ids == [nj.id] and again.created == [False]
    assert (await app.stats())["default"].counts["scheduled"] == 1
