"""The event cursor on PostgreSQL, where sequence order is not commit order: two overlapping
transactions, the one with the later event id committing first, are still read exactly once."""

from __future__ import annotations

import psycopg

from conveyor import Conveyor, Event
from tests.backends.postgres.conftest import plain


async def _read(app: Conveyor, since: str) -> tuple[list[Event], str]:
    page = await app.backend.read_events(since, 1000)
    return page.events, page.cursor


async def test_a_late_commit_of_an_earlier_event_id_is_not_skipped(pg_url: str) -> None:
    app = Conveyor(pg_url)

    @app.task(queue="ev")
    async def t(n: int) -> None: ...

    await app.open()
    start = await app.backend.last_event_cursor()
    async with (
        await psycopg.AsyncConnection.connect(plain(pg_url)) as first,
        await psycopg.AsyncConnection.connect(plain(pg_url)) as second,
    ):
        # Given transaction A that wrote an event (the lower id) and is still open
        await first.execute("BEGIN")
        a = await app.enqueue("t", {"n": 1}, connection=first)
        # And transaction B that wrote a later event and committed first
        async with second.transaction():
            b = await app.enqueue("t", {"n": 2}, connection=second)
        # When a reader reads while A is open
        seen, cursor = await _read(app, start)
        # Then it is not handed B's event past A's (it would then skip A's for good)
        assert [e.job_id for e in seen] == []
        # And once A commits, a reader resuming from that cursor gets both, once each
        await first.execute("COMMIT")
        later, cursor = await _read(app, cursor)
        assert sorted(e.job_id for e in later) == sorted([a.id, b.id])
        assert [e.job_id for e in later] == [a.id, b.id]  # A's transaction began first
        again, _ = await _read(app, cursor)
        assert again == []
    # And reading the whole log gives each event exactly once
    every = [e.job_id async for e in app.events(since=start, follow=False)]
    assert sorted(every) == sorted([a.id, b.id])
    await app.close()


async def test_a_rolled_back_transaction_holds_readers_only_while_it_is_open(pg_url: str) -> None:
    app = Conveyor(pg_url)

    @app.task(queue="ev")
    async def t(n: int) -> None: ...

    await app.open()
    start = await app.backend.last_event_cursor()
    async with await psycopg.AsyncConnection.connect(plain(pg_url)) as open_tx:
        # Given an open transaction that enqueued, and a job committed after it
        await open_tx.execute("BEGIN")
        await app.enqueue("t", {"n": 1}, connection=open_tx)
        done = await app.enqueue("t", {"n": 2})
        assert (await _read(app, start))[0] == []
        # When the open transaction rolls back
        await open_tx.execute("ROLLBACK")
    # Then the committed job's event is read, and the rolled back one never appears
    seen, _ = await _read(app, start)
    assert [e.job_id for e in seen] == [done.id]
    await app.close()
