"""SQLite-only: schema 8 (paused queues, API keys) comes by migration, and the file never holds
a key's secret."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conveyor import Conveyor
from conveyor.backends.base import ClaimParams
from conveyor.backends.sqlite.backend import SCHEMA_VERSION
from tests.backends.sqlite.stored import stored_schema


async def test_a_schema_7_store_gets_paused_queues_and_api_keys(tmp_path: Path) -> None:
    # Given a store as schema 7 wrote it (no paused_queues, no api_keys) holding a queued job
    path = tmp_path / "q.db"
    app = Conveyor(f"sqlite:///{path}")

    @app.task
    async def t(n: int) -> int:
        return n

    job = await app.enqueue("t", {"n": 1})
    await app.close()
    with sqlite3.connect(path) as old:
        old.executescript(
            "DROP TABLE paused_queues; DROP TABLE api_keys;"
            "UPDATE conveyor_meta SET value = '7' WHERE key = 'schema';"
        )
    old.close()
    # When this version opens it
    app = Conveyor(f"sqlite:///{path}")
    try:
        await app.open()
        version, tables, _ = stored_schema(path)
        # Then it is the current schema with the new tables and index
        assert version == (SCHEMA_VERSION,) == ("14",)
        assert {"paused_queues", "api_keys", "api_keys_tenant"} <= tables
        # And pausing and keys work on it, the old job included
        assert await app.pause_queue("default") is True
        assert (await app.backend.claim_jobs(ClaimParams(["default"], 5, "w"))).jobs == []
        await app.resume_queue("default")
        claimed = await app.backend.claim_jobs(ClaimParams(["default"], 5, "w"))
        assert [j.id for j in claimed.jobs] == [job.id]
        record, full = await app.api_keys.create(tenant="acme")
        assert await app.api_keys.verify(full) == record
    finally:
        await app.close()


async def test_the_file_never_holds_a_keys_secret(tmp_path: Path) -> None:
    # Given keys created and one revoked, with the WAL checkpointed into the file
    path = tmp_path / "k.db"
    app = Conveyor(f"sqlite:///{path}")
    made = [await app.api_keys.create(tenant="acme"), await app.api_keys.create(tenant=None,
            admin=True)]  # fmt: skip
    await app.api_keys.revoke(made[0][0].id)
    await app.close()
    # Then neither the database nor its WAL holds any secret; the hashes are there
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("k.db"))
    for record, full in made:
        secret = full[len(f"cvk_{record.id}_") :]
        assert secret.encode() not in raw and full.encode() not in raw
        assert record.secret_hash.encode() in raw
