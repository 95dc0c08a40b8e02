"""Tenancy in the store: idempotency keys per tenant, another tenant's job is not found, and
listing by tenant."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, Job, JobNotFound, JobState


def _register(app: Conveyor) -> None:
    @app.task(queue="mail", retries=0)
    async def send(n: int) -> None:
        return None

    @app.task(queue="media")
    async def resize(n: int) -> None:
        return None


async def test_idempotency_keys_are_scoped_by_tenant(app: Conveyor) -> None:
    # Given tenant A's job with key 'order-1'
    _register(app)
    a = await app.enqueue("send", {"n": 1}, idempotency_key="order-1", tenant="A")
    # When tenant B, then no tenant, enqueue with the same key
    b = await app.enqueue("send", {"n": 2}, idempotency_key="order-1", tenant="B")
    none = await app.enqueue("send", {"n": 3}, idempotency_key="order-1")
    # Then each gets a job of its own, with its own payload (never A's job or payload)
    assert len({a.id, b.id, none.id}) == 3
    assert (b.tenant, b.payload) == ("B", {"n": 2})
    assert (none.tenant, none.payload) == (None, {"n": 3})
    # And within a tenant the key still returns that tenant's job, nothing new stored
    again = await app.enqueue("send", {"n": 9}, idempotency_key="order-1", tenant="B")
    assert (again.id, again.payload) == (b.id, {"n": 2})
    assert (await app.enqueue("send", {"n": 9}, idempotency_key="order-1")).id == none.id
    # And so in one enqueue_many: per tenant, the first of a key wins
    batch = await app.enqueue_many(
        [
            {"task": "send", "payload": {"n": 4}, "idempotency_key": "k", "tenant": "A"},
            {"task": "send", "payload": {"n": 5}, "idempotency_key": "k", "tenant": "B"},
            {"task": "send", "payload": {"n": 6}, "idempotency_key": "k", "tenant": "A"},
            {"task": "send", "payload": {"n": 7}, "idempotency_key": "order-1", "tenant": "A"},
        ]
    )
    assert batch.created == [True, True, False, False]
    assert batch.ids[2] == batch.ids[0] and batch.ids[3] == a.id
    assert len((await app.list(limit=100)).jobs) == 5


async def test_another_tenants_job_is_not_found(app: Conveyor) -> None:
    # Given a queued job and a cancelled job of tenant A, and a job without a tenant
    _register(app)
    queued = await app.enqueue("send", {"n": 1}, tenant="A")
    cancelled = await app.enqueue("send", {"n": 2}, tenant="A")
    await app.cancel(cancelled.id)
    plain = await app.enqueue("send", {"n": 3})
    # When tenant B reads, cancels or retries them
    for call in (app.get, app.cancel, app.retry):
        for job in (queued, cancelled, plain):
            # Then each answers JobNotFound, exactly as for an id that does not exist
            with pytest.raises(JobNotFound):
                await call(job.id, tenant="B")
    # And nothing changed
    assert (await app.get(queued.id)).status is JobState.QUEUED
    assert (await app.get(cancelled.id)).status is JobState.CANCELLED
    # When tenant A does the same with its own jobs, it works
    assert (await app.get(queued.id, tenant="A")).id == queued.id
    assert (await app.cancel(queued.id, tenant="A")).status is JobState.CANCELLED
    assert (await app.retry(cancelled.id, tenant="A")).status is JobState.QUEUED
    # And without a tenant (an admin) every job is reachable
    assert (await app.get(queued.id)).tenant == "A"
    assert (await app.get(plain.id)).tenant is None


async def _pages(app: Conveyor, limit: int, **filters: object) -> list[Job]:
    out: list[Job] = []
    cursor = None
    while True:
        page = await app.list(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        assert len(page.jobs) <= limit
        out += page.jobs
        cursor = page.next_cursor
        if cursor is None:
            return out


async def test_listing_by_tenant_across_queues_pages_newest_first(app: Conveyor) -> None:
    # Given jobs of tenants A and B (and none) interleaved over two queues, in several states
    _register(app)
    a_ids: list[str] = []
    for i in range(7):
        a_ids.append((await app.enqueue("send" if i % 2 else "resize", {"n": i}, tenant="A")).id)
        await app.enqueue("send", {"n": i}, tenant="B")
        await app.enqueue("resize", {"n": i})
    await app.cancel(a_ids[2])
    # When tenant A's jobs are listed, 3 a page
    listed = await _pages(app, 3, tenant="A")
    # Then exactly A's come, newest first, each once
    assert [j.id for j in listed] == a_ids[::-1]
    # And the filters combine with the tenant
    media = await _pages(app, 2, tenant="A", queue="media")
    assert [j.id for j in media] == [i for i in a_ids[::-1] if i in a_ids[0::2]]
    cancelled = await app.list(tenant="A", status="cancelled")
    assert [j.id for j in cancelled.jobs] == [a_ids[2]]
    assert (await app.list(tenant="A", task="send", limit=100)).jobs == [
        j for j in listed if j.task == "send"
    ]
    assert (await app.list(tenant="nobody")).jobs == []


async def test_a_batch_seen_by_a_tenant_counts_its_jobs_only(app: Conveyor) -> None:
    # Given a batch whose items name tenants A and B, over two queues, and one job without one
    _register(app)
    batch = await app.enqueue_many([
        {"task": "send", "payload": {"n": 1}, "tenant": "A"},
        {"task": "resize", "payload": {"n": 2}, "tenant": "A"},
        {"task": "send", "payload": {"n": 3}, "tenant": "B"},
        {"task": "resize", "payload": {"n": 4}},
    ])  # fmt: skip
    await app.cancel(batch.ids[1])
    # When each tenant reads the batch's status
    a = await (await app.batch(batch.id, tenant="A")).status()
    b = await (await app.batch(batch.id, tenant="B")).status()
    c = await (await app.batch(batch.id, tenant="C")).status()
    # Then each counts its own jobs only, and a tenant with none sees an unknown batch
    assert (a.total, a.counts, a.done) == (2, {"queued": 1, "cancelled": 1}, 1)
    assert (b.total, b.counts, b.done) == (1, {"queued": 1}, 0)
    assert (c.total, c.counts) == (0, {})
    # And without a tenant (an admin) every job of the batch counts
    everyone = await (await app.batch(batch.id)).status()
    assert (everyone.total, everyone.counts) == (4, {"queued": 3, "cancelled": 1})
