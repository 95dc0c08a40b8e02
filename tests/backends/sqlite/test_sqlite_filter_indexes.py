"""Schema 14: the jobs of one task or one queue are listed and counted from an index, so a rare
or absent value (the dashboard's ``/jobs?task=nope``) reads no more than it finds; an older
store gets the indexes when opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conveyor import Conveyor
from conveyor.backends.sqlite.backend import SCHEMA_VERSION
from tests.backends.sqlite.stored import stored_schema


def _plan(path: Path, sql: str) -> str:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    conn.close()
    return " | ".join(r[-1] for r in rows)


async def test_an_older_store_gets_the_task_and_queue_indexes(tmp_path: Path) -> None:
    # Given a store as schema 13 wrote it (no jobs_task, no jobs_queue), with jobs of 2 tasks
    path = tmp_path / "q.db"
    app = Conveyor(f"sqlite:///{path}")
    app.declare("a", queue="qa")
    app.declare("b", queue="qb")
    for task in ("a", "b") * 50:
        await app.enqueue(task, {})
    await app.close()
    with sqlite3.connect(path) as old:
        old.executescript("DROP INDEX jobs_task; DROP INDEX jobs_queue; "
                          "UPDATE conveyor_meta SET value = '13' WHERE key = 'schema'; ANALYZE;")  # fmt: skip
    old.close()
    # When this version opens it
    app = Conveyor(f"sqlite:///{path}")
    app.declare("a", queue="qa")
    try:
        await app.open()
        version, names, _ = stored_schema(path)
        # Then it has the indexes, and a listing by task or queue, newest first, reads them
        # instead of the table in seq order
        assert version == (SCHEMA_VERSION,) == ("14",)
        assert {"jobs_task", "jobs_queue"} <= names
        page = await app.list(task="a", limit=10)
        assert len(page.jobs) == 10 and {j.task for j in page.jobs} == {"a"}
        assert (await app.list(task="nope")).jobs == []
        assert (await app.list(queue="nope")).jobs == []
    finally:
        await app.close()
    cols = "SELECT seq FROM jobs WHERE {} = 'nope' ORDER BY seq DESC LIMIT 51"
    assert "jobs_task" in _plan(path, cols.format("task"))
    assert "jobs_queue" in _plan(path, cols.format("queue"))
    assert "jobs_task" in _plan(path, "SELECT count(*) FROM jobs WHERE task = 'nope'")
