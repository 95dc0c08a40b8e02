"""SQLite-only checks of human in the loop: schema 11 comes by migration (and a schema 10 store
goes on to 12, fan-in, and 13, the batch records), and the sweep and the listing of awaiting
jobs read their indexes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conveyor import Conveyor, JobState
from conveyor.backends.base import ListParams
from conveyor.backends.sqlite import maintenance as m
from conveyor.backends.sqlite.awaiting import any_due, expire
from conveyor.backends.sqlite.backend import SCHEMA_VERSION
from conveyor.backends.sqlite.migrations import AWAIT_COLUMNS
from tests.backends.sqlite.stored import stored_schema


async def test_a_schema_10_store_gets_the_await_columns_and_indexes(tmp_path: Path) -> None:
    # Given a store as schema 10 wrote it (no await columns nor indexes, no fan-in column nor
    # edges, no batch records) holding a queued job
    path = tmp_path / "q.db"
    app = Conveyor(f"sqlite:///{path}")

    @app.task
    async def t(n: int) -> None: ...

    job = await app.enqueue("t", {"n": 1})
    await app.close()
    drops = "".join(f"ALTER TABLE jobs DROP COLUMN {c};" for c, _ in reversed(AWAIT_COLUMNS))
    with sqlite3.connect(path) as old:
        old.executescript(
            "DROP TABLE batches; DROP TABLE edges; ALTER TABLE jobs DROP COLUMN fanin;"
            "DROP INDEX jobs_awaiting; DROP INDEX jobs_await_due;" + drops
            + "UPDATE conveyor_meta SET value = '10' WHERE key = 'schema';"
        )  # fmt: skip
    old.close()
    # When this version opens it
    app = Conveyor(f"sqlite:///{path}")
    try:
        await app.open()
        version, indexes, cols = stored_schema(path)
        # Then it is the current schema (through 11, 12 to 13); the old job reads back with no
        # await state
        assert version == (SCHEMA_VERSION,) == ("14",)
        assert {c for c, _ in AWAIT_COLUMNS} | {"fanin"} <= cols
        assert {"jobs_awaiting", "jobs_await_due", "edges", "edges_parent", "batches",
                "batches_expiry"} <= indexes  # fmt: skip
        old_job = await app.get(job.id)
        assert (old_job.prompt, old_job.await_deadline, old_job.input, old_job.resumes) == (
            None, None, None, 0
        )  # fmt: skip
    finally:
        await app.close()


def _plan(conn: sqlite3.Connection, sql: str, args: object) -> str:
    return " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))


async def test_the_sweep_and_the_awaiting_listing_read_their_indexes(tmp_path: Path) -> None:
    # Given a store, and the statements the sweep and a listing by state run
    path = tmp_path / "q.db"
    app = Conveyor(f"sqlite:///{path}")
    await app.open()
    await app.close()
    conn = sqlite3.connect(path)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    conn.execute("BEGIN IMMEDIATE")
    any_due(conn, 1e9)
    expire(conn, 1e9)
    m.list_jobs(conn, ListParams(status=JobState.AWAITING, limit=10))
    conn.execute("ROLLBACK")
    conn.set_trace_callback(None)
    sweeps = [s for s in statements if "await_deadline <=" in s]
    listing = next(s for s in statements if s.startswith("SELECT seq,"))
    # When SQLite plans them / Then each searches its partial index, never the whole table
    assert len(sweeps) == 2
    for sweep in sweeps:
        want = "SEARCH jobs USING INDEX jobs_await_due (await_deadline>? AND await_deadline<?)"
        assert want in _plan(conn, sweep, ()), sweep
    assert "USING INDEX jobs_awaiting" in _plan(conn, listing, ())
    conn.close()
