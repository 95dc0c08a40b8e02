"""SQLite-only behaviour of the file: WAL, options, locks, corrupt or foreign files."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from pathlib import Path

import pytest

from conveyor import BackendCorrupt, BackendLocked, BackendUnavailable, Conveyor
from conveyor.backends.base import ClaimParams, WorkerInfo
from conveyor.backends.sqlite.backend import SCHEMA_VERSION


def _url(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


def _register(app: Conveyor) -> None:
    @app.task
    async def t(n: int) -> int:
        return n


async def _pragma(app: Conveyor, name: str) -> object:
    # Per-connection settings are only visible on the backend's own connection.
    return await app.backend._read(lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0])  # type: ignore[attr-defined]


async def test_file_is_in_wal_mode_with_normal_sync_by_default(tmp_path: Path) -> None:
    # Given a store created through the app
    path = tmp_path / "q.db"
    app = Conveyor(_url(path))
    await app.open()
    try:
        # Then the file is in WAL mode (a persistent setting other connections see)
        with sqlite3.connect(path) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # And the backend's connection syncs NORMAL (1)
        assert await _pragma(app, "synchronous") == 1
    finally:
        await app.close()


async def test_synchronous_full_option_is_applied(tmp_path: Path) -> None:
    # Given a URL asking for synchronous=full
    app = Conveyor(_url(tmp_path / "q.db", "synchronous=full"))
    _register(app)
    try:
        # Then the connection syncs FULL (2) and jobs run as usual
        await app.open()
        assert await _pragma(app, "synchronous") == 2
        async with app.worker(concurrency=1):
            job = await app.enqueue("t", {"n": 3})
            assert await app.wait(job.id, timeout=5) == 3
    finally:
        await app.close()


async def test_a_locked_file_gives_backend_locked_not_a_hang(tmp_path: Path) -> None:
    # Given a store with a short busy timeout, and another process holding the write lock
    path = tmp_path / "q.db"
    app = Conveyor(_url(path, "busy_timeout=0.2"))
    _register(app)
    await app.open()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        # When a producer enqueues
        t0 = time.monotonic()
        with pytest.raises(BackendLocked) as err:
            await app.enqueue("t", {"n": 1})
        # Then it fails soon after the busy timeout, with a clear message naming the file
        assert time.monotonic() - t0 < 1.5
        assert str(path) in str(err.value)
        assert "locked" in str(err.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    try:
        # And nothing was stored; once the lock is gone the store works again
        assert (await app.list()).jobs == []
        job = await app.enqueue("t", {"n": 2})
        assert [j.id for j in (await app.list()).jobs] == [job.id]
        assert (await app.stats())["default"].counts["queued"] == 1
    finally:
        await app.close()


async def test_backend_locked_chains_the_driver_error(tmp_path: Path) -> None:
    # Given a store whose write lock another process holds past the busy timeout
    path = tmp_path / "q.db"
    app = Conveyor(_url(path, "busy_timeout=0.05"))
    _register(app)
    await app.open()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        # When an enqueue fails on the lock
        with pytest.raises(BackendLocked) as err:
            await app.enqueue("t", {"n": 1})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await app.close()
    # Then the sqlite3 error is chained as __cause__ (errors are translated *from* the driver's)
    assert isinstance(err.value.__cause__, sqlite3.OperationalError)


async def test_readers_are_not_blocked_by_a_writer_lock(tmp_path: Path) -> None:
    # Given a stored job and another connection holding an exclusive write transaction
    path = tmp_path / "q.db"
    app = Conveyor(_url(path, "busy_timeout=0.2"))
    _register(app)
    job = await app.enqueue("t", {"n": 1})
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        # Then reads still answer (WAL: readers never wait for writers)
        assert (await app.get(job.id)).id == job.id
        assert (await app.stats())["default"].counts["queued"] == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await app.close()


async def test_random_bytes_are_backend_corrupt_naming_the_file(tmp_path: Path) -> None:
    # Given a file of random bytes where the store should be
    path = tmp_path / "junk.db"
    path.write_bytes(random.Random(0).randbytes(64 * 1024))
    before = path.read_bytes()
    app = Conveyor(_url(path))
    # When the app opens it, then it refuses with the path in the message
    with pytest.raises(BackendCorrupt) as err:
        await app.open()
    assert str(path) in str(err.value)
    await app.close()
    # And the file is left as it was
    assert path.read_bytes() == before


async def test_a_sqlite_file_of_another_app_is_backend_corrupt(tmp_path: Path) -> None:
    # Given another application's SQLite file
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        other.execute("INSERT INTO customers (name) VALUES ('ada')")
    other.close()
    app = Conveyor(_url(path))
    # When the app opens it, then it refuses, naming the file and the foreign table
    with pytest.raises(BackendCorrupt) as err:
        await app.open()
    await app.close()
    assert str(path) in str(err.value)
    assert "customers" in str(err.value)
    # And no conveyor table was added to it
    with sqlite3.connect(path) as other:
        tables = {r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    other.close()
    assert tables == {"customers"}


async def test_a_sqlite_file_of_another_app_is_left_untouched(tmp_path: Path) -> None:
    # Given another application's SQLite file in the default rollback-journal mode
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    other.close()
    # When conveyor is pointed at it by mistake
    app = Conveyor(_url(path))
    with pytest.raises(BackendCorrupt):
        await app.open()
    await app.close()
    # Then its journal mode was not switched to WAL, and no -wal/-shm files were left beside it
    with sqlite3.connect(path) as other:
        mode = other.execute("PRAGMA journal_mode").fetchone()[0]
    other.close()
    assert mode == "delete"
    assert sorted(os.listdir(tmp_path)) == ["crm.db"]


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    # Given a store written by a future conveyor (schema version 999)
    path = tmp_path / "q.db"
    app = Conveyor(_url(path))
    await app.open()
    await app.close()
    with sqlite3.connect(path) as other:
        other.execute("UPDATE conveyor_meta SET value = '999' WHERE key = 'schema'")
    other.close()
    # Then opening it is refused with both versions named
    app = Conveyor(_url(path))
    with pytest.raises(BackendCorrupt, match="999"):
        await app.open()
    await app.close()


async def test_a_missing_directory_is_backend_unavailable(tmp_path: Path) -> None:
    # Given a URL whose directory does not exist
    app = Conveyor(_url(tmp_path / "nope" / "q.db"))
    _register(app)
    # Then the first call says so, naming the directory
    with pytest.raises(BackendUnavailable, match="nope"):
        await app.enqueue("t", {"n": 1})
    await app.close()
    assert not (tmp_path / "nope").exists()


async def test_a_directory_in_place_of_the_file_is_backend_unavailable(tmp_path: Path) -> None:
    # Given a directory where the database file should be
    (tmp_path / "q.db").mkdir()
    app = Conveyor(_url(tmp_path / "q.db"))
    # Then opening is a clear BackendUnavailable
    with pytest.raises(BackendUnavailable):
        await app.open()
    await app.close()


async def test_reopening_a_store_keeps_its_jobs(tmp_path: Path) -> None:
    # Given jobs stored by one app that then closed
    path = tmp_path / "q.db"
    first = Conveyor(_url(path))
    _register(first)
    job = await first.enqueue("t", {"n": 5})
    await first.close()
    # When another app opens the same file and runs a worker
    second = Conveyor(_url(path))
    _register(second)
    try:
        async with second.worker(concurrency=1):
            # Then the job is there and runs
            assert await second.wait(job.id, timeout=5) == 5
    finally:
        await second.close()


async def test_many_apps_opening_one_new_file_at_once(tmp_path: Path) -> None:
    # Given five apps (as five processes starting together) on one file that does not exist yet
    path = tmp_path / "q.db"
    apps = [Conveyor(_url(path)) for _ in range(5)]
    for a in apps:
        _register(a)
    try:
        # When they all open and enqueue at once
        jobs = await asyncio.gather(*(a.enqueue("t", {"n": i}) for i, a in enumerate(apps)))
        # Then the schema was created once and every job is stored
        assert len({j.id for j in jobs}) == 5
        assert len((await apps[0].list()).jobs) == 5
    finally:
        for a in apps:
            await a.close()


async def test_a_schema_1_store_is_migrated_with_its_jobs(tmp_path: Path) -> None:
    # Given a store as conveyor 0.1 wrote it (schema 1: no flow control) holding a queued job
    path = tmp_path / "q.db"
    app = Conveyor(_url(path))
    _register(app)
    job = await app.enqueue("t", {"n": 1})
    await app.close()
    with sqlite3.connect(path) as old:
        old.executescript(
            "DROP TABLE flows; DROP TABLE gates; DROP INDEX jobs_flow; DROP INDEX jobs_ready;"
            "ALTER TABLE jobs DROP COLUMN flow; ALTER TABLE jobs DROP COLUMN token;"
            "CREATE INDEX jobs_ready ON jobs (queue, priority DESC, seq) WHERE status = 'queued';"
            + _SCHEMA_4_TO_3
            + "UPDATE conveyor_meta SET value = '1' WHERE key = 'schema';"
        )
    old.close()
    # When this version opens it
    app = Conveyor(_url(path))
    _register(app)
    await app.open()
    # Then it is the current schema and the old job is still there and claimable, with a token
    with sqlite3.connect(path) as check:
        version = check.execute("SELECT value FROM conveyor_meta WHERE key = 'schema'").fetchone()
        cols = {r[1] for r in check.execute("PRAGMA table_info(jobs)")}
    check.close()
    assert version == (SCHEMA_VERSION,) and {"flow", "token"} <= cols
    res = await app.backend.claim_jobs(ClaimParams(["default"], 5, "w"))
    assert [(j.id, j.token) for j in res.jobs] == [(job.id, 1)]
    await app.close()


# What schema 4 added, taken away again: a store as schema 3 left it.
_SCHEMA_4_TO_3 = (
    "ALTER TABLE workers DROP COLUMN running; ALTER TABLE workers DROP COLUMN processed;"
    "ALTER TABLE workers DROP COLUMN failed; ALTER TABLE workers DROP COLUMN tasks;"
    "DROP INDEX jobs_tenant; DROP INDEX jobs_idempotency;"
    "CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key)"
    " WHERE idempotency_key IS NOT NULL;"
)


async def test_a_schema_3_store_is_migrated_with_its_jobs_and_workers(tmp_path: Path) -> None:
    # Given a schema 3 store holding a queued job of tenant A with a key, and a worker
    # registered the old way
    path = tmp_path / "q.db"
    app = Conveyor(_url(path))
    _register(app)
    job = await app.enqueue("t", {"n": 1}, idempotency_key="k", tenant="A")
    await app.close()
    with sqlite3.connect(path) as old:
        old.executescript(
            _SCHEMA_4_TO_3 + "UPDATE conveyor_meta SET value = '3' WHERE key = 'schema';"
        )
        old.execute(
            "INSERT INTO workers (id, queues, concurrency, active, pid, host, started_at, seen_at,"
            " ttl) VALUES ('old', '[\"default\"]', 1, 0, 1, 'h', 1.0, 1.0, 15.0)"
        )
    old.close()
    # When this version opens it (two apps at once, as two processes starting together)
    apps = [Conveyor(_url(path)) for _ in range(2)]
    try:
        await asyncio.gather(*(a.open() for a in apps))
        # Then it is the current schema, the job is kept, and workers report their stats
        with sqlite3.connect(path) as check:
            version = check.execute(
                "SELECT value FROM conveyor_meta WHERE key = 'schema'"
            ).fetchone()
        check.close()
        assert version == (SCHEMA_VERSION,)
        assert (await apps[0].get(job.id)).status.value == "queued"
        # And the key is now per tenant: A still gets its job, B gets one of its own
        for a in apps:
            _register(a)
        assert (await apps[0].enqueue("t", {"n": 2}, idempotency_key="k", tenant="A")).id == job.id
        other = await apps[1].enqueue("t", {"n": 3}, idempotency_key="k", tenant="B")
        assert other.id != job.id and other.payload == {"n": 3}
        with sqlite3.connect(path) as check:
            indexes = {r[0] for r in check.execute("SELECT name FROM sqlite_master")}
        check.close()
        assert {"jobs_tenant", "jobs_idempotency"} <= indexes
        info = WorkerInfo("new", ["default"], 2, 1, 7, "h", 1.0, running=[job.id], processed=3)
        await apps[1].backend.worker_heartbeat(info)
        [seen] = await apps[0].workers()
        assert (seen.id, list(seen.running), seen.processed) == ("new", [job.id], 3)
    finally:
        for a in apps:
            await a.close()


async def test_a_schema_4_store_gets_the_event_indexes(tmp_path: Path) -> None:
    # Given a store as schema 4 wrote it (no event indexes) holding events of two queues
    path = tmp_path / "q.db"
    app = Conveyor(_url(path))
    _register(app)

    @app.task(queue="other")
    async def o(n: int) -> int:
        return n

    await app.enqueue("t", {"n": 1})
    job = await o.enqueue(n=2)
    await app.close()
    with sqlite3.connect(path) as old:
        old.executescript(
            "DROP INDEX events_queue; DROP INDEX events_tenant; DROP INDEX events_job;"
            "UPDATE conveyor_meta SET value = '4' WHERE key = 'schema';"
        )
    old.close()
    # When this version opens it
    app = Conveyor(_url(path))
    await app.open()
    # Then it is the current schema with the indexes, and filtered reads find the old events
    with sqlite3.connect(path) as check:
        version = check.execute("SELECT value FROM conveyor_meta WHERE key = 'schema'").fetchone()
        indexes = {
            r[0] for r in check.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    check.close()
    assert version == (SCHEMA_VERSION,)
    assert {"events_queue", "events_tenant", "events_job"} <= indexes
    events = [e async for e in app.events(since="0", follow=False, queue="other")]
    assert [(e.type.value, e.job_id) for e in events] == [("enqueued", job.id)]
    await app.close()


async def test_a_schema_6_store_gets_meta_and_cost(tmp_path: Path) -> None:
    # Given a store as schema 6 wrote it (no meta, no cost) holding a queued job
    path = tmp_path / "q.db"
    app = Conveyor(_url(path))
    _register(app)
    job = await app.enqueue("t", {"n": 1})
    await app.close()
    with sqlite3.connect(path) as old:
        old.executescript(
            "DROP TABLE costs; ALTER TABLE jobs DROP COLUMN meta; ALTER TABLE jobs DROP COLUMN cost;"
            "UPDATE conveyor_meta SET value = '6' WHERE key = 'schema';"
        )
    old.close()
    # When this version opens it
    app = Conveyor(_url(path))
    _register(app)
    try:
        await app.open()
        with sqlite3.connect(path) as check:
            version = check.execute(
                "SELECT value FROM conveyor_meta WHERE key = 'schema'"
            ).fetchone()
            cols = {r[1] for r in check.execute("PRAGMA table_info(jobs)")}
        check.close()
        # Then it is the current schema; the old job reads back without meta or cost
        assert version == (SCHEMA_VERSION,) and {"meta", "cost"} <= cols
        old_job = await app.get(job.id)
        assert (old_job.meta, old_job.cost) == ({}, None)
        # And a new job stores its meta
        new = await app.enqueue("t", {"n": 2}, meta={"k": "v"})
        assert (await app.get(new.id)).meta == {"k": "v"}
        assert (await app.stats())["default"].cost == {}
    finally:
        await app.close()
