"""SQLite-only: schema 9 (the schedules' state of cron and periodic jobs) comes by migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conveyor import Conveyor
from conveyor.backends.base import TickClaim, TickResult
from conveyor.backends.sqlite.backend import SCHEMA_VERSION
from tests.backends.sqlite.stored import stored_schema


async def test_a_schema_8_store_gets_the_schedules_table_and_fires_ticks(tmp_path: Path) -> None:
    # Given a store as schema 8 wrote it (no schedules table)
    path = tmp_path / "q.db"
    app = Conveyor(f"sqlite:///{path}")
    await app.open()
    await app.close()
    with sqlite3.connect(path) as old:
        old.executescript(
            "DROP TABLE schedules; UPDATE conveyor_meta SET value = '8' WHERE key = 'schema';"
        )
    old.close()
    # When this version opens it
    app = Conveyor(f"sqlite:///{path}")
    try:
        await app.open()
        version, tables, _ = stored_schema(path)
        # Then it is the current schema with the schedules table, and ticks can be claimed
        assert version == (SCHEMA_VERSION,) == ("14",)
        assert "schedules" in tables
        out = await app.backend.claim_tick(TickClaim("nightly", "default", 1_000))
        assert out.result is TickResult.CLAIMED
        assert (await app.backend.claim_tick(TickClaim("nightly", "default", 1_000))).last == 1_000
    finally:
        await app.close()
