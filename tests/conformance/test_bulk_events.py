"""The events of bulk enqueues: one ``enqueued`` event per job, whatever a backend stores.

(PostgreSQL keeps one packed row for a bulk of one queue, task and tenant: these tests read it
through every cursor, page size, filter and trim the per-job rows are read through.)
"""

from __future__ import annotations

from conveyor import Conveyor, Event, EventRetention, EventsTrimmed
from conveyor.backends.base import EventFilter
from tests.conformance.readers import read_all, read_in_pages


def _key(e: Event) -> tuple[str | None, str]:
    return (e.job_id, e.type.value)


def _register(app: Conveyor) -> None:
    @app.task(name="ta", queue="a")
    async def ta(i: int) -> int:
        return i

    @app.task(name="tb", queue="b")
    async def tb(i: int) -> int:
        return i


async def test_a_bulk_enqueue_logs_each_job_once_from_every_cursor_and_page(
    app: Conveyor,
) -> None:
    # Given a bulk of 7 jobs, a single job, a bulk of another tenant and a bulk of two queues
    _register(app)
    first = await app.enqueue_many([("ta", {"i": i}) for i in range(7)])
    single = await app.enqueue("ta", {"i": 7})
    other = await app.enqueue_many([("tb", {"i": i}) for i in range(4)], tenant="x")
    mixed = await app.enqueue_many([(t, {"i": i}) for i in range(2) for t in ("ta", "tb")])
    in_a = [*first.ids, single.id, mixed.ids[0], mixed.ids[2]]
    in_b = [*other.ids, mixed.ids[1], mixed.ids[3]]
    # When the whole log is read
    log = await read_all(app)
    # Then it holds one enqueued event per job, each queue's in enqueue order (the order
    # between queues is the backend's: Redis Cluster merges its queues' streams by time), with
    # the job's queue, task and tenant
    assert sorted((e.type.value, e.job_id) for e in log) == sorted(
        ("enqueued", j) for j in [*in_a, *in_b]
    )
    assert [e.job_id for e in log if e.queue == "a"] == in_a
    assert [e.job_id for e in log if e.queue == "b"] == in_b
    tenant = {j: "x" for j in other.ids}
    assert all((e.task, e.tenant) == (f"t{e.queue}", tenant.get(e.job_id)) for e in log)
    assert len({e.cursor for e in log}) == len(log)
    # And a reader resuming from any event's cursor gets exactly the events after it
    for i, e in enumerate(log):
        assert await read_all(app, e.cursor) == log[i + 1 :], f"resuming after event {i}"
    # And pages of every size add up to the same log
    for limit in (1, 2, 3, 5, 8):
        assert await read_in_pages(app, limit) == log, f"pages of {limit}"
    # And filters pick the bulk's jobs out one by one
    assert [e.job_id for e in await read_all(app, tenant="x")] == other.ids
    assert [e.job_id for e in await read_all(app, queue="a")] == in_a
    middle = first.ids[3]
    assert [e.job_id for e in await read_all(app, job_id=middle)] == [middle]
    assert [e.job_id for e in await read_in_pages(app, 1, EventFilter(queue="b"))] == [
        *other.ids, mixed.ids[1], mixed.ids[3],
    ]  # fmt: skip


async def test_a_job_of_a_bulk_has_its_whole_history_by_job_filter(app: Conveyor) -> None:
    # Given a bulk of 5 jobs that all ran
    _register(app)
    bulk = await app.enqueue_many([("ta", {"i": i}) for i in range(5)])
    async with app.worker(concurrency=1, queues=["a"]):
        await bulk.wait(timeout=10)
    # Then each job's events, by job filter, are its own: enqueued, started, completed
    for job_id in bulk.ids:
        got = await read_all(app, job_id=job_id)
        assert [(e.type.value, e.job_id) for e in got] == [
            ("enqueued", job_id), ("started", job_id), ("completed", job_id),
        ]  # fmt: skip
        # And a filtered reader resumes after its enqueued event with the rest
        assert [e.type.value for e in await read_all(app, got[0].cursor, job_id=job_id)] == [
            "started", "completed",
        ]  # fmt: skip


async def test_a_bulk_job_deleted_by_cleanup_keeps_its_events(app: Conveyor) -> None:
    # Given a bulk of 3 jobs that ran and were then deleted as finished jobs
    _register(app)
    bulk = await app.enqueue_many([("ta", {"i": i}) for i in range(3)])
    async with app.worker(concurrency=1, queues=["a"]):
        await bulk.wait(timeout=10)
    assert await app.cleanup(older_than=0, states=["completed"]) == 3
    # Then a job filter still finds each one's events (the log is kept by its own retention)
    for job_id in bulk.ids:
        got = await read_all(app, job_id=job_id)
        assert [e.type.value for e in got] == ["enqueued", "started", "completed"]


async def test_trimming_through_bulks_counts_events_and_never_skips_one(app: Conveyor) -> None:
    # Given bulks and single jobs, and the log as a reader saw it
    _register(app)
    await app.enqueue_many([("ta", {"i": i}) for i in range(6)])
    await app.enqueue("tb", {"i": 0})
    await app.enqueue_many([("tb", {"i": i}) for i in range(3)])
    await app.enqueue("ta", {"i": 9})
    log = await read_all(app)
    assert len(log) == 11
    for keep in (9, 5, 2):
        # When retention keeps (at least) the newest `keep` events
        before = await read_all(app, "oldest")
        removed = await app.backend.trim_events(EventRetention(max_count=keep, max_age=None))
        after = await read_all(app, "oldest")
        # Then it reports each event it deleted and keeps the newest, in order
        assert len(after) >= keep
        assert removed == len(before) - len(after)
        kept = [_key(e) for e in after]  # (a cursor depends on where a read started)
        assert {_key(e) for e in log[-keep:]} <= set(kept)
        assert [_key(e) for e in log if _key(e) in kept] == kept
        # And a reader at any event is given exactly the rest, or told it missed some: never
        # a gap; a reader at the last event is not disturbed
        for i, e in enumerate(log):
            try:
                rest = await read_all(app, e.cursor)
            except EventsTrimmed:
                assert i + 1 < len(log), "a caught-up reader was told of a trim"
                assert any(_key(x) not in kept for x in log[i + 1 :]), f"after {i}: told wrongly"
                continue
            assert rest == log[i + 1 :], f"after event {i}, keep {keep}"
