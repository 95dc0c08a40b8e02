"""SQLite-only: schema 13 (the batch records of batches with callbacks) comes by migration from
schema 12 (fan-in) and from schema 11 (human in the loop, through 12), and a batch with
callbacks works on the migrated store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from conveyor.backends.sqlite.backend import SCHEMA_VERSION
from tests.backends.sqlite.stored import stored_schema


@pytest.mark.parametrize(
    ("schema", "drops"),
    [
        ("12", "DROP TABLE batches;"),
        ("11", "DROP TABLE batches; DROP TABLE edges; ALTER TABLE jobs DROP COLUMN fanin;"),
    ],
)
async def test_an_older_store_gets_the_batch_records_and_fires_callbacks(
    tmp_path: Path, schema: str, drops: str
) -> None:
    # Given a store as schema 12 (or 11: no fan-in column nor edges either) wrote it (chains and
    # await columns, but no batches table), with a job
    path = tmp_path / "q.db"
    app = Conveyor(f"sqlite:///{path}")
    app.declare("old")
    old_job = await app.enqueue("old", {})
    await app.close()
    with sqlite3.connect(path) as old:
        old.executescript(
            f"{drops} UPDATE conveyor_meta SET value = '{schema}' WHERE key = 'schema';"
        )
    old.close()
    # When this version opens it
    app = Conveyor(f"sqlite:///{path}")
    app.declare("part")

    @app.task(queue="callbacks")
    async def done(batch: str, counts: dict[str, int], total: int) -> None:
        return None

    try:
        await app.open()
        version, names, cols = stored_schema(path)
        # Then it is the current schema with the batch records, the chain, await and fan-in
        # columns kept or added
        assert version == (SCHEMA_VERSION,) == ("14",)
        assert {"batches", "batches_expiry", "jobs_workflow", "jobs_awaiting", "edges"} <= names
        assert {"step", "steps", "next_jobs", "prompt", "await_deadline", "resumes",
                "fanin"} <= cols  # fmt: skip
        assert (await app.get(old_job.id)).status is JobState.QUEUED
        # And a batch with a callback fires once its only member ended (here: cancelled)
        batch = await app.enqueue_many([("part", {})], on_complete="done")
        await app.cancel(batch.ids[0])
        st = await batch.status()
        assert st.record is not None and st.record.fired
        callback = await app.get(f"{batch.id}-on_complete")
        assert callback.task == "done" and callback.status is JobState.QUEUED
    finally:
        await app.close()
