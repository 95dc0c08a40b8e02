"""Idempotency keys: a second enqueue with the same key returns the first job, stores nothing."""

from __future__ import annotations

from conveyor import Conveyor
from tests.conftest import events_of


async def _stored(app: Conveyor) -> int:
    return len((await app.list(limit=1000)).jobs)


async def test_same_key_returns_the_same_job_and_stores_nothing_new(app: Conveyor) -> None:
    # Given a job enqueued with an idempotency key
    @app.task
    async def charge(amount: int) -> None:
        return None

    first = await app.enqueue("charge", {"amount": 10}, idempotency_key="order-1")
    # When the same key is enqueued again (even with another payload)
    second = await app.enqueue("charge", {"amount": 99}, idempotency_key="order-1")
    # Then the first job comes back and only one job (and one 'enqueued' event) exists
    assert second.id == first.id
    assert second.payload == {"amount": 10}
    assert await _stored(app) == 1
    assert (await app.stats())["default"].counts["queued"] == 1
    assert [e.type.value for e in await events_of(app, first.id)] == ["enqueued"]
    # And another key is another job
    third = await app.enqueue("charge", {"amount": 5}, idempotency_key="order-2")
    assert third.id != first.id
    assert await _stored(app) == 2


async def test_same_key_within_one_enqueue_many(app: Conveyor) -> None:
    # Given a batch in which two items share a key, and one item reuses an existing key
    @app.task
    async def charge(amount: int) -> None:
        return None

    existing = await app.enqueue("charge", {"amount": 1}, idempotency_key="k0")
    # When it is enqueued
    batch = await app.enqueue_many(
        [
            {"task": "charge", "payload": {"amount": 2}, "idempotency_key": "k1"},
            {"task": "charge", "payload": {"amount": 3}, "idempotency_key": "k1"},
            {"task": "charge", "payload": {"amount": 4}, "idempotency_key": "k0"},
            {"task": "charge", "payload": {"amount": 5}},
        ]
    )
    # Then duplicates map to the first job with that key and are not stored again
    assert batch.ids[1] == batch.ids[0]
    assert batch.ids[2] == existing.id
    assert batch.created == [True, False, False, True]
    assert await _stored(app) == 3
    assert (await app.stats())["default"].counts["queued"] == 3
    assert (await app.get(batch.ids[0])).payload == {"amount": 2}


async def test_keys_are_scoped_per_queue(app: Conveyor) -> None:
    # Given two tasks on different queues
    @app.task(queue="emails")
    async def email() -> None:
        return None

    @app.task(queue="sms")
    async def sms() -> None:
        return None

    # When both use the same key
    a = await app.enqueue("email", idempotency_key="user-7")
    b = await app.enqueue("sms", idempotency_key="user-7")
    # Then each queue has its own job
    assert a.id != b.id
    assert await _stored(app) == 2
