"""The event log on PostgreSQL: sequence order is not commit order (two overlapping
transactions, the one with the later event id committing first, are still read exactly once);
a bulk's packed row (one row, one event per job: cursors inside it, pages of it, plans of its
reads, an application role without sequence privileges)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from conveyor import Conveyor, Event, ValidationError
from conveyor.backends.postgres import events
from conveyor.backends.postgres.sql import Schema
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


async def _rows(pg_url: str, query: str) -> list[tuple[object, ...]]:
    schema = pg_url.rsplit("schema=", 1)[1]
    async with await psycopg.AsyncConnection.connect(plain(pg_url)) as c:
        cur = await c.execute(query.replace("{s}", schema))
        return await cur.fetchall()


async def test_a_bulk_enqueue_writes_one_packed_event_row(pg_url: str) -> None:
    # Given a bulk of 100 jobs of one queue, task and tenant, and one of two queues
    app = Conveyor(pg_url)

    @app.task(queue="ev")
    async def t(n: int) -> None: ...

    @app.task(queue="other")
    async def u(n: int) -> None: ...

    bulk = await app.enqueue_many([("t", {"n": i}) for i in range(100)])
    mixed = await app.enqueue_many([("t", {"n": 1}), ("u", {"n": 2})])
    # Then the bulk's events are one row listing its jobs in order, whose key each job names
    rows = await _rows(pg_url, "SELECT pack, job_id, job_ids FROM {s}.events ORDER BY id")
    assert len(rows) == 3
    pack, job_id, job_ids = rows[0]
    assert (job_id, job_ids) == (None, bulk.ids) and pack is not None
    named = await _rows(pg_url, "SELECT DISTINCT enq_pack FROM {s}.jobs WHERE queue = 'ev' "
                        "AND enq_pack IS NOT NULL")  # fmt: skip
    assert named == [(pack,)]
    # And the mixed bulk has a row per job, as a single enqueue has
    assert [(r[1], r[2]) for r in rows[1:]] == [(mixed.ids[0], None), (mixed.ids[1], None)]
    # And readers get one event per job; a cursor inside the packed row names its position
    log = [e async for e in app.events(since="0", follow=False)]
    assert [e.job_id for e in log] == [*bulk.ids, *mixed.ids]
    assert log[0].cursor.count(".") == 2 and log[99].cursor.count(".") == 1
    await app.close()


async def test_cursors_inside_packed_rows_are_checked(pg_url: str) -> None:
    # Given a bulk of 5 jobs (one packed row) and the cursor of its 3rd job
    app = Conveyor(pg_url)

    @app.task(queue="ev")
    async def t(n: int) -> None: ...

    bulk = await app.enqueue_many([("t", {"n": i}) for i in range(5)])
    third = (await app.backend.read_events("0", 3)).cursor
    x, i, k = third[1:].split(".")
    assert k == "3"
    # Then reading from it, or from any place inside the row, gives the jobs after it
    for place in range(1, 5):
        page = await app.backend.read_events(f"p{x}.{i}.{place}", 10)
        assert [e.job_id for e in page.events] == bulk.ids[place:]
    # And cursors this backend never issues are refused as malformed
    huge = "p1.2." + "0" * 10 + "1" + "0" * 5000  # int() of it raises ValueError
    for bad in ("p1.2.0", "p1.2.2147483647", "p1.2.x", "p1.2.3.4", "p1..3", huge,
                "p1.2.000000000011999999999999", "p1.2.12345678901"):  # fmt: skip
        with pytest.raises(ValidationError):
            await app.backend.read_events(bad, 10)
    await app.close()


async def test_reads_of_a_big_log_go_by_index(pg_url: str) -> None:
    # Given a log of 300 bulks of 100 jobs and 3,000 single events, analyzed
    app = Conveyor(pg_url)

    @app.task(queue="ev")
    async def t(n: int) -> None: ...

    await app.open()
    schema = pg_url.rsplit("schema=", 1)[1]
    async with await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as c:
        await c.execute(
            f"INSERT INTO {schema}.events (type, queue, task, time, job_ids) SELECT 'enqueued', "
            "'ev', 't', 0, ARRAY(SELECT 'j' || b || '-' || k FROM generate_series(1, 100) k) "
            "FROM generate_series(1, 300) b"
        )
        await c.execute(
            f"INSERT INTO {schema}.events (type, job_id, queue, task, time) SELECT 'started', "
            "'j' || b || '-1', 'ev', 't', 0 FROM generate_series(1, 3000) b"
        )
        bulk = await app.enqueue_many([("t", {"n": i}) for i in range(5)])
        await c.execute(f"ANALYZE {schema}.events")
        # When a reader reads a page from the middle, and the events of a job of a bulk
        plans = _explain_reads(c, "")
        s = Schema(schema)
        cur = await c.execute(f"SELECT xid::text, id FROM {schema}.events WHERE job_ids IS NOT "
                              "NULL ORDER BY xid, id OFFSET 150 LIMIT 1")  # fmt: skip
        mx, mi = await cur.fetchone()
        await events.read(c, s, f"p{mx}.{mi}.50", 50, None)  # type: ignore[arg-type]
        page = await events.read(c, s, "0", 50, events.EventFilter(job_id=bulk.ids[2]))  # type: ignore[arg-type]
    assert [e.job_id for e in page.events] == [bulk.ids[2]]
    shown = ["\n".join(r[0] for r in rows) for rows in plans]
    # Then neither reads the whole table: the job's packed row is found by its id
    assert len(shown) == 2
    for plan in shown:
        assert "Seq Scan" not in plan, plan
    assert "Bitmap Index Scan on events_packed" in shown[1], shown[1]
    assert "= ANY" not in shown[1], shown[1]
    await app.close()


async def test_pages_of_a_big_bulk_expand_only_what_they_hand_out(pg_url: str) -> None:
    # Given a bulk of 5,000 jobs (its packed row is stored compressed, out of line)
    app = Conveyor(pg_url)

    @app.task(queue="ev")
    async def t(n: int) -> None: ...

    bulk = await app.enqueue_many([("t", {"n": i}) for i in range(5000)])
    schema = pg_url.rsplit("schema=", 1)[1]
    # When it is read in pages of 700, each page's statement explained as it runs
    async with await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as c:
        plans = _explain_reads(c, "(ANALYZE, FORMAT JSON)")
        got, since = [], "0"
        while True:
            page = await events.read(c, Schema(schema), since, 700, None)  # type: ignore[arg-type]
            got += [e.job_id for e in page.events]
            since = page.cursor
            if not page.more:
                break
    # Then every job comes once, in order, and no page unpacked more than its 700 jobs (the
    # whole row each time made reading a bulk quadratic: 6 s a page for 20,000 jobs)
    assert got == bulk.ids
    expanded = [_rows_of(rows[0][0][0]["Plan"], "Function Scan") for rows in plans]
    assert max(expanded) <= 700, expanded
    await app.close()


def _explain_reads(c: psycopg.AsyncConnection[Any], options: str) -> list[list[Any]]:
    """Make ``c`` explain every event read's statement (``EXPLAIN <options>``) before it runs
    it; returns the list each explained statement's rows are appended to."""
    plans: list[list[Any]] = []
    real = c.execute

    async def execute(query: Any, params: Any = None) -> Any:
        if ".events e LEFT JOIN" in str(query):
            cur = await real(f"EXPLAIN {options} {query}", params)
            plans.append(await cur.fetchall())
        return await real(query, params)

    c.execute = execute  # type: ignore[method-assign]
    return plans


def _rows_of(node: dict[str, object], kind: str) -> int:
    """Rows the plan's nodes of ``kind`` produced, over all their loops."""
    own = int(node["Actual Rows"]) * int(node["Actual Loops"]) if node["Node Type"] == kind else 0
    return own + sum(_rows_of(n, kind) for n in node.get("Plans", []))  # type: ignore[union-attr, arg-type]


async def test_a_role_with_table_privileges_only_can_bulk_enqueue(pg_url: str) -> None:
    # Given a schema migrated by its owner, and an application role granted only the use of the
    # schema and its tables (no sequence privileges), as docs/postgres.md's deploys have
    schema = pg_url.rsplit("schema=", 1)[1]
    owner = Conveyor(pg_url)
    await owner.open()
    role = f"r_{schema}"
    async with await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as c:
        await c.execute(f"CREATE ROLE {role} LOGIN")
        await c.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        await c.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} "
                        f"TO {role}")  # fmt: skip
    scheme, rest = plain(pg_url).split("://", 1)
    app = Conveyor(f"{scheme}://{role}@{rest.split('@', 1)[-1]}?schema={schema}&migrate=false")

    @app.task(queue="ev")
    async def t(n: int) -> None: ...

    try:
        # When it enqueues a single job and bulks
        one = await app.enqueue("t", {"n": 0})
        bulk = await app.enqueue_many([("t", {"n": i}) for i in range(3)])
        # Then all are stored, each with its event
        log = [e.job_id async for e in app.events(since="0", follow=False)]
        assert log == [one.id, *bulk.ids]
    finally:
        await app.close()
        await owner.close()
        async with await psycopg.AsyncConnection.connect(plain(pg_url), autocommit=True) as c:
            await c.execute(f"DROP OWNED BY {role}")
            await c.execute(f"DROP ROLE {role}")


async def test_pages_of_any_limit_read_a_packed_row(pg_url: str) -> None:
    # Given a bulk of 5 jobs, and a cursor inside its packed row
    app = Conveyor(pg_url)

    @app.task(queue="ev")
    async def t(n: int) -> None: ...

    bulk = await app.enqueue_many([("t", {"n": i}) for i in range(5)])
    inside = (await app.backend.read_events("0", 2)).cursor
    # When pages are asked for with limits up to and past the largest int4
    for limit in (2**31 - 1, 2**31, 2**40):
        # Then they read the rest of the row, no integer overflow
        for since, want in (("0", bulk.ids), (inside, bulk.ids[2:])):
            page = await app.backend.read_events(since, limit)
            assert [e.job_id for e in page.events] == want
    await app.close()
