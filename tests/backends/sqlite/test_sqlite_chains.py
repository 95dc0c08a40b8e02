"""SQLite-only: schema 10 (chains: step columns and the workflow index) comes by migration (a
schema 9 store goes on through 11, human in the loop, and 12, fan-in, to 13, the batch
records), and reading a workflow is an index search, not a scan of every job."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conveyor import Conveyor
from conveyor.backends.sqlite.backend import SCHEMA_VERSION
from conveyor.backends.sqlite.migrations import AWAIT_COLUMNS
from conveyor.backends.sqlite.workflows import _WORKFLOW
from tests.backends.sqlite.stored import stored_schema


async def test_a_schema_9_store_gets_the_chain_columns_and_reads_workflows(
    tmp_path: Path,
) -> None:
    # Given a store as schema 9 wrote it (no step columns, no workflow index, no await columns,
    # no fan-in column nor edges, no batch records), with a job
    path = tmp_path / "q.db"
    app = Conveyor(f"sqlite:///{path}")
    app.declare("old")
    job = await app.enqueue("old", {})
    await app.close()
    drops = "".join(f"ALTER TABLE jobs DROP COLUMN {c};" for c, _ in reversed(AWAIT_COLUMNS))
    with sqlite3.connect(path) as old:
        old.executescript(
            "DROP TABLE batches; DROP TABLE edges; ALTER TABLE jobs DROP COLUMN fanin;"
            "DROP INDEX jobs_awaiting; DROP INDEX jobs_await_due;" + drops
            + "DROP INDEX jobs_workflow; ALTER TABLE jobs DROP COLUMN step; "
            "ALTER TABLE jobs DROP COLUMN steps; ALTER TABLE jobs DROP COLUMN next_jobs; "
            "UPDATE conveyor_meta SET value = '9' WHERE key = 'schema';"
        )  # fmt: skip
    old.close()
    # When this version opens it
    app = Conveyor(f"sqlite:///{path}")
    try:
        await app.open()
        version, names, cols = stored_schema(path)
        # Then it is the current schema (through 10, 11, 12 to 13), and the old job reads as a
        # one-step workflow
        assert version == (SCHEMA_VERSION,) == ("14",)
        assert "jobs_workflow" in names and {"step", "steps", "next_jobs"} <= cols
        assert {"jobs_awaiting", "jobs_await_due"} <= names
        assert {c for c, _ in AWAIT_COLUMNS} <= cols
        assert {"edges", "edges_parent", "batches", "batches_expiry"} <= names and "fanin" in cols
        info = await app.workflow(job.id)
        assert [s.job_id for s in info.steps] == [job.id] and info.current == "old"
    finally:
        await app.close()


async def test_reading_a_workflow_searches_indexes_only(tmp_path: Path) -> None:
    # Given a store
    path = tmp_path / "q.db"
    app = Conveyor(f"sqlite:///{path}")
    await app.open()
    await app.close()
    # When the workflow read is planned
    with sqlite3.connect(path) as conn:
        plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {_WORKFLOW}", {"w": "x"})]
    conn.close()
    # Then both parts search an index (the id's and jobs_workflow), never scan jobs
    assert not [p for p in plan if p.startswith("SCAN jobs")], plan
    assert any("jobs_workflow" in p for p in plan), plan
