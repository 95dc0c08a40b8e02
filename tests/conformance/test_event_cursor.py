"""The event cursor: every event exactly once across queues, new queues, trimming, filters."""

from __future__ import annotations

from collections import Counter

import pytest

from conveyor import Conveyor, Event, EventRetention, EventsTrimmed, ValidationError
from conveyor.backends.base import EventFilter
from tests.conformance.readers import read_all, read_in_pages


def _register_abc(app: Conveyor) -> None:
    for queue in ("a", "b", "c"):

        @app.task(name=f"t{queue}", queue=queue)
        async def t(i: int) -> None: ...


async def test_interleaved_queues_are_read_exactly_once_from_every_cursor(app: Conveyor) -> None:
    # Given events of three queues written interleaved, many within one millisecond
    _register_abc(app)
    for _ in range(20):
        await app.enqueue_many([(f"t{q}", {"i": i}) for i in range(3) for q in "abc"])
    log = await read_all(app)
    # Then the log holds every event once, each queue's in the order they were written
    assert len(log) == 180
    assert Counter((e.job_id, e.type.value) for e in log) == Counter(
        {(e.job_id, "enqueued"): 1 for e in log}
    )
    for q in "abc":
        order = [e.job_id for e in log if e.queue == q]
        assert order == sorted(order)  # job ids sort by creation
    # When a reader resumes from each event's cursor
    for i, e in enumerate(log):
        # Then it gets exactly the events after it, nothing twice, nothing skipped
        assert await read_all(app, e.cursor) == log[i + 1 :], f"resuming after event {i}"
    # And reading in small pages gives the same log
    assert await read_in_pages(app, 7) == log


async def test_a_queue_created_after_the_cursor_is_read_from_its_start(app: Conveyor) -> None:
    # Given a reader's cursor taken while only queue "old" had events
    @app.task(queue="old")
    async def old(i: int) -> None: ...

    await old.enqueue(i=0)
    await app.open()
    head = await app.backend.last_event_cursor()
    seen = await read_all(app)

    # When a new queue appears and gets events
    @app.task(queue="late")
    async def late(i: int) -> None: ...

    jobs = [await late.enqueue(i=i) for i in range(3)]
    # Then a reader resuming from either cursor gets the new queue's events from its start
    for cursor in (head, seen[-1].cursor):
        got = await read_all(app, cursor)
        assert [(e.queue, e.job_id) for e in got] == [("late", j.id) for j in jobs]


async def test_a_reader_whose_position_was_trimmed_is_told_and_can_resume(app: Conveyor) -> None:
    # Given six events of one queue, and readers at the 2nd and at the 3rd
    @app.task
    async def t(i: int) -> None: ...

    for i in range(6):
        await t.enqueue(i=i)
    log = await read_all(app)
    # When retention keeps only the newest 3
    assert await app.backend.trim_events(EventRetention(max_count=3, max_age=None)) == 3
    # Then the reader at the 2nd, who never read the 3rd, is told so instead of skipping it
    with pytest.raises(EventsTrimmed) as trimmed:
        await read_all(app, log[1].cursor)
    assert trimmed.value.cursor == log[1].cursor
    # And can continue past the gap from the oldest kept event
    assert await read_all(app, trimmed.value.resume) == log[3:]
    # And the reader at the 3rd lost nothing and reads on
    assert await read_all(app, log[2].cursor) == log[3:]
    # And "oldest" reads from the oldest kept event, while "0" (from the first event ever)
    # is told about the gap
    assert await read_all(app, "oldest") == log[3:]
    with pytest.raises(EventsTrimmed):
        await read_all(app, "0")


async def test_a_new_queue_trimmed_before_it_was_read_is_reported(app: Conveyor) -> None:
    # Given a reader's cursor taken before queue "late" existed
    @app.task(queue="late")
    async def late(i: int) -> None: ...

    await app.open()
    cursor = await app.backend.last_event_cursor()
    # When "late" gets three events and retention keeps one before the reader comes back
    for i in range(3):
        await late.enqueue(i=i)
    await app.backend.trim_events(EventRetention(max_count=1, max_age=None))
    # Then the reader is told it missed events
    with pytest.raises(EventsTrimmed):
        await read_all(app, cursor)


async def test_a_caught_up_reader_is_not_disturbed_by_trimming(app: Conveyor) -> None:
    # Given a reader that has read every event of two queues
    @app.task(queue="a")
    async def ta(i: int) -> None: ...

    @app.task(queue="b")
    async def tb(i: int) -> None: ...

    await ta.enqueue(i=0)
    await tb.enqueue(i=0)
    cursor = (await read_all(app))[-1].cursor
    # When retention deletes every event (older than now), then new events come
    await app.backend.trim_events(EventRetention(max_count=None, max_age=0))
    new = [await ta.enqueue(i=1), await tb.enqueue(i=1)]
    # Then the reader gets exactly the new ones, with no trim reported
    got = await read_all(app, cursor)
    assert sorted(e.job_id or "" for e in got) == sorted(j.id for j in new)


async def test_events_filtered_by_queue_tenant_and_job(app: Conveyor) -> None:
    # Given jobs of two queues and two tenants, one of which runs
    _register_abc(app)
    jobs = {
        (q, tenant): [await app.enqueue(f"t{q}", {"i": i}, tenant=tenant) for i in range(3)]
        for q in "ab"
        for tenant in ("x", "y")
    }
    async with app.worker(concurrency=1, queues=["b"]):
        await app.wait(jobs[("b", "x")][0].id, timeout=5)
    log = await read_all(app)

    def expect(pred: object) -> list[Event]:
        return [e for e in log if pred(e)]  # type: ignore[operator]

    # Then a queue filter gives that queue's events, a tenant filter that tenant's, a job
    # filter that job's, and filters combine
    target = jobs[("b", "x")][0].id
    cases = {
        EventFilter(queue="a"): expect(lambda e: e.queue == "a"),
        EventFilter(tenant="y"): expect(lambda e: e.tenant == "y"),
        EventFilter(job_id=target): expect(lambda e: e.job_id == target),
        EventFilter(queue="b", tenant="x"): expect(lambda e: (e.queue, e.tenant) == ("b", "x")),
    }
    assert [e.type.value for e in cases[EventFilter(job_id=target)]] == [
        "enqueued", "started", "completed",
    ]  # fmt: skip
    for where, expected in cases.items():
        got = await read_all(app, **_kw(where))
        assert [(e.queue, e.job_id, e.type) for e in got] == [
            (e.queue, e.job_id, e.type) for e in expected
        ], where
        # And a filtered read resumes from any of its events' cursors
        rest = await read_all(app, got[0].cursor, **_kw(where))
        assert [(e.job_id, e.type) for e in rest] == [(e.job_id, e.type) for e in expected[1:]]
        # And pages of a filtered read add up to the same events
        paged = await read_in_pages(app, 2, where)
        assert [(e.job_id, e.type) for e in paged] == [(e.job_id, e.type) for e in expected]
    # And a job that does not exist has no events
    assert await read_all(app, job_id="0" * 26) == []


async def test_an_empty_filter_reads_like_no_filter(app: Conveyor) -> None:
    # Given events of two tenants
    _register_abc(app)
    for tenant in ("x", None):
        await app.enqueue("ta", {"i": 1}, tenant=tenant)
    # When the log is read with an EventFilter whose fields are all None (a caller that builds
    # its filter from optional parts: an admin's tenant scope is None)
    everything = await read_in_pages(app, 1000)
    empty = await read_in_pages(app, 1000, EventFilter())
    # Then it reads every event, as without a filter
    assert len(everything) == 2
    assert [(e.job_id, e.type) for e in empty] == [(e.job_id, e.type) for e in everything]


def _kw(where: EventFilter) -> dict[str, str]:
    return {k: v for k, v in (("queue", where.queue), ("tenant", where.tenant),
                              ("job_id", where.job_id)) if v is not None}  # fmt: skip


@pytest.mark.parametrize("cursor", ["abc", "-1", "r~bad name~1~", "r~a~1", "1.5", ""])
async def test_a_malformed_cursor_is_refused(app: Conveyor, cursor: str) -> None:
    # Given a cursor this backend never issued
    await app.open()
    # Then reading from it is a validation error, not a guess
    with pytest.raises(ValidationError):
        await read_all(app, cursor)
