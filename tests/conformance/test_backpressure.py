"""Backpressure: ``app.queue(name, max_queued=N)``. A queue holding N waiting jobs (queued or
scheduled) refuses new ones with `QueueFull` and stores nothing; checked atomically by the
backend, so racing producers never store more than N."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from conveyor import (
    Concurrency,
    ConfigurationError,
    Conveyor,
    JobState,
    Permanent,
    QueueFull,
    Retry,
)
from tests.conftest import eventually


def _limited(app: Conveyor, limit: int, queue: str = "q") -> None:
    app.queue(queue, max_queued=limit)

    @app.task(queue=queue, name=f"work_{queue}")
    async def work(n: int) -> int:
        return n


async def _waiting(app: Conveyor, queue: str = "q") -> int:
    return (await app.stats([queue]))[queue].waiting


async def test_enqueue_at_the_limit_is_refused_and_stores_nothing(app: Conveyor) -> None:
    # Given a queue limited to 3 waiting jobs that holds 3
    _limited(app, 3)
    _limited(app, 1, "other")
    for i in range(3):
        await app.enqueue("work_q", {"n": i})
    # When a fourth is enqueued
    with pytest.raises(QueueFull) as err:
        await app.enqueue("work_q", {"n": 3})
    # Then it is refused naming the queue, its limit and its count, and nothing was stored
    assert (err.value.queue, err.value.limit, err.value.count, err.value.needed) == ("q", 3, 3, 1)
    assert "'q' is full" in str(err.value) and "max_queued=3" in str(err.value)
    assert await _waiting(app) == 3
    assert len((await app.list(queue="q")).jobs) == 3
    assert sorted(e.job_id for e in await _enqueued_events(app)) == sorted(
        j.id for j in (await app.list(queue="q")).jobs
    )
    # And another queue is not affected
    await app.enqueue("work_other", {"n": 0})


async def _enqueued_events(app: Conveyor) -> list:  # type: ignore[type-arg]
    return [
        e
        async for e in app.events(since="0", follow=False, queue="q")
        if e.type.value in ("enqueued", "scheduled")
    ]


async def test_delayed_jobs_count_toward_the_limit(app: Conveyor) -> None:
    # Given a queue limited to 2 holding one delayed and one ready job
    _limited(app, 2)
    await app.enqueue("work_q", {"n": 0}, delay=3600)
    await app.enqueue("work_q", {"n": 1})
    # When a third job, ready or delayed, is enqueued, then it is refused
    with pytest.raises(QueueFull):
        await app.enqueue("work_q", {"n": 2})
    with pytest.raises(QueueFull):
        await app.enqueue("work_q", {"n": 3}, delay=10)
    counts = (await app.stats(["q"]))["q"].counts
    assert (counts["queued"], counts["scheduled"]) == (1, 1)


async def test_flow_controlled_jobs_count_like_any_other(app: Conveyor) -> None:
    # Given a queue with a concurrency cap per tenant (its ready jobs wait in flows) and a limit
    app.queue("q", max_queued=3, concurrency=Concurrency(1, key="tenant"))

    @app.task(queue="q")
    async def work_q(n: int) -> int:
        return n

    await app.enqueue("work_q", {"n": 0}, tenant="a")
    await app.enqueue("work_q", {"n": 1}, tenant="b")
    await app.enqueue("work_q", {"n": 2}, tenant="a", delay=60)
    # When one more is enqueued, then it is refused: flow jobs and delayed ones count
    with pytest.raises(QueueFull) as err:
        await app.enqueue("work_q", {"n": 3}, tenant="c")
    assert err.value.count == 3
    assert await _waiting(app) == 3


async def test_enqueue_many_is_all_or_none(app: Conveyor) -> None:
    # Given a queue limited to 5 that holds 3
    _limited(app, 5)
    for i in range(3):
        await app.enqueue("work_q", {"n": i})
    # When a batch of 3 is enqueued (only 2 would fit), then none of it is stored
    with pytest.raises(QueueFull) as err:
        await app.enqueue_many([("work_q", {"n": i}) for i in range(3)])
    assert (err.value.count, err.value.needed, err.value.limit) == (3, 3, 5)
    assert await _waiting(app) == 3
    # When a batch of 2 is enqueued, then all of it is
    batch = await app.enqueue_many([("work_q", {"n": i}) for i in range(2)])
    assert len(batch) == 2
    assert await _waiting(app) == 5


async def test_enqueue_many_across_two_queues_is_all_or_none(app: Conveyor) -> None:
    # Given queue 'a' limited to 2 (empty), 'b' limited to 2 holding 1, and unlimited 'free'
    _limited(app, 2, "a")
    _limited(app, 2, "b")

    @app.task(queue="free")
    async def free(n: int) -> int:
        return n

    await app.enqueue("work_b", {"n": 0})
    # When a batch needs 2 in 'a' (fits), 2 in 'b' (does not) and 1 in 'free'
    with pytest.raises(QueueFull) as err:
        await app.enqueue_many(
            [("work_a", {"n": 1}), ("work_b", {"n": 1}), ("free", {"n": 1}),
             ("work_a", {"n": 2}), ("work_b", {"n": 2})]
        )  # fmt: skip
    # Then nothing was stored in any queue
    assert err.value.queue == "b"
    stats = await app.stats(["a", "b", "free"])
    assert [stats[q].waiting for q in ("a", "b", "free")] == [0, 1, 0]
    # And the refused call left no room taken behind: 'a' still takes 2 jobs, 'b' 1
    batch = await app.enqueue_many(
        [("work_a", {"n": 3}), ("free", {"n": 3}), ("work_a", {"n": 4}), ("work_b", {"n": 3})]
    )
    assert len(batch) == 4
    stats = await app.stats(["a", "b", "free"])
    assert [stats[q].waiting for q in ("a", "b", "free")] == [2, 2, 1]
    for q in ("a", "b"):
        with pytest.raises(QueueFull):
            await app.enqueue(f"work_{q}", {"n": 5})


async def test_room_frees_as_jobs_are_claimed_and_completed(app: Conveyor) -> None:
    # Given a queue limited to 2 that is full, and a worker whose jobs hold until released
    app.queue("q", max_queued=2)
    release = asyncio.Event()

    @app.task(queue="q")
    async def hold(n: int) -> int:
        await release.wait()
        return n

    first = [await app.enqueue("hold", {"n": i}) for i in range(2)]
    with pytest.raises(QueueFull):
        await app.enqueue("hold", {"n": 2})
    async with app.worker(concurrency=2, queues=["q"]):
        # When the worker claims them (active jobs do not count)
        for j in first:
            await eventually(lambda j=j: _is(app, j.id, JobState.ACTIVE), what="jobs active")
        # Then two more fit, and a third does not
        more = [await app.enqueue("hold", {"n": i}) for i in (3, 4)]
        with pytest.raises(QueueFull):
            await app.enqueue("hold", {"n": 5})
        # When every job completes, the queue takes new jobs again
        release.set()
        for j in [*first, *more]:
            assert await app.wait(j.id, timeout=10) == j.payload["n"]
        assert await _waiting(app) == 0
        last = await app.enqueue("hold", {"n": 6})
        assert await app.wait(last.id, timeout=10) == 6


async def _is(app: Conveyor, job_id: str, state: JobState) -> bool:
    return (await app.get(job_id)).status is state


async def test_idempotent_duplicate_returns_the_existing_job_when_full(app: Conveyor) -> None:
    # Given a full queue whose one job has an idempotency key
    _limited(app, 1)
    job = await app.enqueue("work_q", {"n": 1}, idempotency_key="k")
    # When the same key is enqueued again, alone or in a batch, then the existing job comes back
    again = await app.enqueue("work_q", {"n": 1}, idempotency_key="k")
    assert again.id == job.id
    batch = await app.enqueue_many(
        [{"task": "work_q", "payload": {"n": 1}, "idempotency_key": "k"}]
    )
    assert (batch.ids, batch.created) == ([job.id], [False])
    # Also when the limit was lowered below what the queue holds
    app.queue("q", max_queued=0)
    assert (await app.enqueue("work_q", {"n": 1}, idempotency_key="k")).id == job.id
    # But a new key is refused, alone or beside the duplicate
    with pytest.raises(QueueFull):
        await app.enqueue("work_q", {"n": 2}, idempotency_key="k2")
    with pytest.raises(QueueFull):
        await app.enqueue_many(
            [{"task": "work_q", "payload": {"n": 1}, "idempotency_key": "k"},
             {"task": "work_q", "payload": {"n": 2}, "idempotency_key": "k2"}]
        )  # fmt: skip
    assert await _waiting(app) == 1


async def test_a_workers_retry_with_backoff_is_never_refused(app: Conveyor) -> None:
    # Given a queue limited to 1 and a job that asks to be retried in an hour
    app.queue("q", max_queued=1)
    started = asyncio.Event()
    go_on = asyncio.Event()

    @app.task(queue="q", retries=3)
    async def flaky(n: int) -> None:
        started.set()
        await go_on.wait()
        raise Retry(after=3600)

    @app.task(queue="q")
    async def hold() -> None:
        await asyncio.Event().wait()

    job = await app.enqueue("flaky", {"n": 1})
    async with app.worker(concurrency=1, queues=["q"], shutdown_grace=0.1):
        # When it runs while another job fills the queue again
        await asyncio.wait_for(started.wait(), 10)
        filler = await app.enqueue("hold", {})
        assert await _waiting(app) == 1
        go_on.set()
        # Then its retry (active -> scheduled) is stored anyway: it was already accepted
        await eventually(lambda: _is(app, job.id, JobState.SCHEDULED), what="retry scheduled")
        got = await app.get(job.id)
        assert got.attempt == 1 and got.error is not None
        await eventually(lambda: _is(app, filler.id, JobState.ACTIVE), what="filler active")
        # And the scheduled retry counts: the queue is full again
        with pytest.raises(QueueFull):
            await app.enqueue("hold", {})


async def test_manual_retry_of_a_failed_job_is_refused_when_full(app: Conveyor) -> None:
    # Given a failed job in a queue limited to 1 that another job fills
    app.queue("q", max_queued=1)

    @app.task(queue="q", retries=0)
    async def doomed() -> None:
        raise Permanent("no")

    job = await app.enqueue("doomed", {})
    async with app.worker(concurrency=1, queues=["q"]):
        with pytest.raises(Exception, match="no"):
            await app.wait(job.id, timeout=10)
    other = await app.enqueue("doomed", {})
    # When it is retried by hand, then it is refused and stays failed
    with pytest.raises(QueueFull) as err:
        await app.retry(job.id)
    assert (err.value.queue, err.value.count, err.value.limit) == ("q", 1, 1)
    assert (await app.get(job.id)).status is JobState.FAILED
    # When room frees, the retry is accepted
    await app.cancel(other.id)
    assert (await app.retry(job.id)).status is JobState.QUEUED


@pytest.mark.parametrize("producers", [1, 2])
async def test_racing_producers_never_store_more_than_the_limit(
    make_app: Callable[..., Conveyor], producers: int
) -> None:
    # Given one or two producer apps (separate connections) on a queue limited to 5
    apps = [make_app() for _ in range(producers)]
    for a in apps:
        _limited(a, 5)
        await a.open()
    # When 20 enqueues race
    results = await asyncio.gather(
        *(apps[i % producers].enqueue("work_q", {"n": i}) for i in range(20)),
        return_exceptions=True,
    )
    # Then exactly 5 were stored and 15 refused with QueueFull
    stored = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QueueFull)]
    assert (len(stored), len(refused)) == (5, 15), results
    assert await _waiting(apps[0]) == 5
    assert len((await apps[0].list(queue="q")).jobs) == 5


async def test_racing_batches_across_two_queues_stay_all_or_none(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given two producers and queues 'a' (limit 3) and 'b' (limit 5)
    apps = [make_app() for _ in range(2)]
    for a in apps:
        _limited(a, 3, "a")
        _limited(a, 5, "b")
        await a.open()
    # When 10 batches of one job in each queue race
    results = await asyncio.gather(
        *(
            apps[i % 2].enqueue_many([("work_a", {"n": i}), ("work_b", {"n": i})])
            for i in range(10)
        ),
        return_exceptions=True,
    )
    # Then exactly 3 were stored, each whole; the others stored nothing
    assert sum(not isinstance(r, BaseException) for r in results) == 3, results
    assert all(isinstance(r, QueueFull) for r in results if isinstance(r, BaseException))
    stats = await apps[0].stats(["a", "b"])
    assert (stats["a"].waiting, stats["b"].waiting) == (3, 3)
    # And no room stays reserved: 'b' still takes 2 more
    await apps[0].enqueue_many([("work_b", {"n": 1}), ("work_b", {"n": 2})])


async def test_stats_show_the_limit_and_whether_full(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given a queue limited to 2
    _limited(app, 2)
    await app.enqueue("work_q", {"n": 0})
    st = (await app.stats())["q"]
    assert (st.max_queued, st.full, st.waiting) == (2, False, 1)
    # When it fills up, stats say so (also as a dict, for the CLI and the HTTP API)
    await app.enqueue("work_q", {"n": 1}, delay=60)
    st = (await app.stats())["q"]
    assert (st.max_queued, st.full) == (2, True)
    assert {"max_queued": 2, "full": True}.items() <= st.to_dict().items()
    # And a reader without the app's configuration sees the limit the producer enforced
    reader = make_app()
    st = (await reader.stats(["q"]))["q"]
    assert (st.max_queued, st.full) == (2, True)

    # And an unlimited queue shows none
    @app.task(queue="free")
    async def free() -> None:
        return None

    await app.enqueue("free", {})
    st = (await app.stats())["free"]
    assert (st.max_queued, st.full) == (None, False)


async def test_the_sync_facade_raises_the_same_error(app: Conveyor) -> None:
    # Given a full queue
    _limited(app, 1)
    await app.enqueue("work_q", {"n": 0})

    def sync_code() -> QueueFull:
        # When sync code enqueues through app.sync
        with pytest.raises(QueueFull) as err:
            app.sync.enqueue("work_q", {"n": 1})
        with pytest.raises(QueueFull):
            app.sync.enqueue_many([("work_q", {"n": 2})])
        return err.value

    err = await asyncio.to_thread(sync_code)
    # Then it gets the same QueueFull, and nothing was stored
    assert (err.queue, err.limit, err.count) == ("q", 1, 1)
    assert await _waiting(app) == 1


async def test_max_queued_must_be_a_count(app: Conveyor) -> None:
    # When max_queued is not an integer >= 0, then the configuration is refused
    for bad in (-1, "5", True, 2.5):
        with pytest.raises(ConfigurationError, match="max_queued"):
            app.queue("q", max_queued=bad)  # type: ignore[arg-type]
    # And 0 refuses every new job; None removes the limit
    _limited(app, 0)
    with pytest.raises(QueueFull):
        await app.enqueue("work_q", {"n": 0})
    app.queue("q", max_queued=None)
    await app.enqueue("work_q", {"n": 0})


async def test_a_job_sent_again_after_it_was_stored_is_not_refused_by_a_full_queue(
    app: Conveyor,
) -> None:
    # Given a queue limited to 2 whose last free place was taken by job X (a resend after a lost
    # reply, or a spool forwarder, sends X again)
    _limited(app, 2)
    await app.enqueue("work_q", {"n": 0})
    x = app._builder.new_job(app.catalog.lookup("work_q"), {"n": 1}, None, 0.0, None, None,
                             None, None)  # fmt: skip
    first = await app.backend.enqueue_jobs([x], max_queued={"q": 2})
    assert first.created == [True]
    # When X is sent again, the queue now full
    again = await app.backend.enqueue_jobs([x], max_queued={"q": 2})
    # Then the store says X exists (created False), not QueueFull: X was stored, and a
    # producer told otherwise would enqueue it a second time under a new id
    assert (again.ids, again.created) == ([x.id], [False])
    assert await _waiting(app) == 2
