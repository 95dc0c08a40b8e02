"""``app.list``: filters, newest-first order, and cursor pagination."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, Job, JobState, ValidationError


async def _all_pages(app: Conveyor, limit: int, **filters: object) -> list[Job]:
    out: list[Job] = []
    cursor = None
    for _ in range(1000):
        page = await app.list(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        assert len(page.jobs) <= limit
        out += page.jobs
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("pagination did not end")


def _register(app: Conveyor) -> None:
    @app.task(queue="mail")
    async def send(n: int) -> None:
        return None

    @app.task(queue="media")
    async def resize(n: int) -> None:
        return None


async def test_pagination_covers_every_job_exactly_once_newest_first(app: Conveyor) -> None:
    # Given 23 jobs
    _register(app)
    ids = [(await app.enqueue("send", {"n": i})).id for i in range(23)]
    # When they are listed 5 at a time following the cursor
    listed = await _all_pages(app, 5)
    # Then every job comes exactly once, newest first
    assert [j.id for j in listed] == ids[::-1]
    # And a limit of exactly the total gives one page without a cursor
    page = await app.list(limit=23)
    assert len(page.jobs) == 23 and page.next_cursor is None


async def test_filters_select_by_status_queue_task_batch_and_tenant(app: Conveyor) -> None:
    # Given jobs spread over queues, tasks, tenants, a batch and states
    _register(app)
    mail = [(await app.enqueue("send", {"n": i}, tenant="acme")).id for i in range(4)]
    media = [(await app.enqueue("resize", {"n": i}, tenant="globex")).id for i in range(3)]
    batch = await app.enqueue_many([("resize", {"n": 10 + i}) for i in range(6)])
    cancelled = mail[:2]
    for job_id in cancelled:
        await app.cancel(job_id)
    # When listed with each filter (paging 2 at a time), then each returns exactly its jobs
    cases: list[tuple[dict[str, object], set[str]]] = [
        ({"queue": "mail"}, set(mail)),
        ({"queue": "media"}, set(media) | set(batch.ids)),
        ({"task": "resize"}, set(media) | set(batch.ids)),
        ({"tenant": "acme"}, set(mail)),
        ({"tenant": "globex"}, set(media)),
        ({"batch": batch.id}, set(batch.ids)),
        ({"status": "cancelled"}, set(cancelled)),
        ({"status": JobState.QUEUED, "queue": "mail"}, set(mail[2:])),
        ({"status": "queued", "task": "resize", "batch": batch.id}, set(batch.ids)),
        ({"tenant": "nobody"}, set()),
        ({"status": "failed"}, set()),
    ]
    for filters, expected in cases:
        got = [j.id for j in await _all_pages(app, 2, **filters)]
        assert len(got) == len(set(got)), filters
        assert set(got) == expected, filters


async def test_invalid_list_arguments_are_rejected(app: Conveyor) -> None:
    # Then an unknown status, a limit out of range and a foreign cursor are validation errors
    with pytest.raises(ValidationError) as err:
        await app.list(status="sleeping")
    assert err.value.field == "status"
    for limit in (0, 1001):
        with pytest.raises(ValidationError) as err:
            await app.list(limit=limit)
        assert err.value.field == "limit"
    for cursor in ("not-a-cursor", "9" * 30, " 5", "1_0"):
        with pytest.raises(ValidationError) as err:
            await app.list(cursor=cursor)
        assert err.value.field == "cursor"
