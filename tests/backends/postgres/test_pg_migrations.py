"""Migrations: a fresh schema is created at the current version, a second run changes nothing,
concurrent first uses of one schema are safe, and ``migrate=false`` refuses a schema that was
not migrated."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import psycopg
import pytest

from conveyor import Conveyor
from conveyor.backends.postgres import PostgresBackend
from conveyor.backends.postgres.migrations import SCHEMA_VERSION
from conveyor.errors import BackendCorrupt, ConfigurationError
from tests.backends.postgres.conftest import plain
from tests.conftest import eventually
from tests.workers import subprocess_env


def _schema(url: str) -> str:
    return url.split("schema=", 1)[1]


def _versions(url: str) -> list[int]:
    with psycopg.connect(plain(url)) as conn:
        rows = conn.execute(f"SELECT version FROM {_schema(url)}.schema_version ORDER BY 1")
        return [r[0] for r in rows]


async def test_first_use_creates_the_schema_and_a_second_run_changes_nothing(pg_url: str) -> None:
    # Given a database without the schema
    app = Conveyor(pg_url)
    # When the app is first used
    await app.open()
    # Then the schema exists at the current version, each step recorded once
    assert _versions(pg_url) == list(range(1, SCHEMA_VERSION + 1))
    # And migrating again applies nothing
    backend = PostgresBackend(pg_url)
    try:
        assert await backend.migrate() == []
    finally:
        await backend.close()
        await app.close()
    assert _versions(pg_url) == list(range(1, SCHEMA_VERSION + 1))


async def test_concurrent_first_uses_of_one_schema_all_succeed(pg_url: str) -> None:
    # Given eight backends (eight connections) opening the same new schema at once
    backends = [PostgresBackend(pg_url) for _ in range(8)]
    try:
        # When they all open together
        await asyncio.gather(*(b.open() for b in backends))
        # Then none failed, and the steps were applied once
        assert _versions(pg_url) == list(range(1, SCHEMA_VERSION + 1))
    finally:
        for b in backends:
            await b.close()


def test_concurrent_first_use_by_processes(pg_url: str) -> None:
    # Given four processes that open the same new schema at the same moment
    code = (
        "import asyncio, sys\n"
        "from conveyor.backends.postgres import PostgresBackend\n"
        "async def main():\n"
        "    b = PostgresBackend(sys.argv[1])\n"
        "    await b.open()\n"
        "    await b.close()\n"
        "asyncio.run(main())\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, pg_url], env=subprocess_env(), stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    # Then every one of them succeeds and the schema is at the current version
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    assert _versions(pg_url) == list(range(1, SCHEMA_VERSION + 1))


async def test_migrate_false_refuses_a_schema_that_was_not_migrated(pg_url: str) -> None:
    # Given migrate=false on a new schema
    app = Conveyor(pg_url + "&migrate=false")
    # Then opening it says what to do, and creates nothing
    with pytest.raises(BackendCorrupt, match="conveyor migrate"):
        await app.open()
    await app.close()
    with psycopg.connect(plain(pg_url)) as conn:
        row = conn.execute("SELECT to_regnamespace(%s)", (_schema(pg_url),)).fetchone()
    assert row == (None,)


def test_the_migrate_command_creates_the_schema(pg_url: str) -> None:
    # When `conveyor migrate` runs against a new schema
    out = subprocess.run(
        [sys.executable, "-m", "conveyor", "--url", pg_url, "migrate"],
        env=subprocess_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Then it applied the steps and says so; a second run has nothing to do
    assert out.returncode == 0, out.stderr
    assert _versions(pg_url) == list(range(1, SCHEMA_VERSION + 1))
    again = subprocess.run(
        [sys.executable, "-m", "conveyor", "--url", pg_url, "migrate"],
        env=subprocess_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("schema=Bad-Name", "schema="),
        ("migrate=maybe", "migrate="),
        ("pool_max=0", "pool_max"),
        ("pool_timeout=0", "pool_timeout="),
        ("pool_timeout=-5", "pool_timeout="),
        ("pool_timeout=nan", "pool_timeout="),
        ("pool_timeout=inf", "pool_timeout="),
    ],
)
def test_bad_url_options_are_configuration_errors(query: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Conveyor(f"postgresql://127.0.0.1/db?{query}")


@pytest.mark.parametrize(
    ("query", "message"),
    [("schema=jobs%0A", "schema="), ("schema=pg_jobs", "pg_")],
)
def test_schema_names_postgres_would_refuse_or_mangle_are_configuration_errors(
    query: str, message: str
) -> None:
    # A trailing newline slipped past the pattern's "$"; pg_ names are reserved by PostgreSQL
    with pytest.raises(ConfigurationError, match=message):
        Conveyor(f"postgresql://127.0.0.1/db?{query}")


async def test_the_longest_schema_name_accepted_enqueues_and_wakes_a_worker(
    postgres_server: object,
) -> None:
    # Given a schema name of 63 characters (PostgreSQL's identifier limit), which the URL takes
    url = f"{postgres_server.url}?schema=t{uuid.uuid4().hex}{'x' * 30}"  # type: ignore[attr-defined]
    assert len(url.split("schema=", 1)[1]) == 63
    app = Conveyor(url)
    ran: list[str] = []

    @app.task(queue="long")
    async def work(ctx) -> None:  # type: ignore[no-untyped-def]
        ran.append(ctx.job.id)

    await app.open()
    try:
        # When a worker that would poll only once a minute waits, and a job is enqueued
        async with app.worker(concurrency=1, poll_interval=60.0):
            job = await app.enqueue("work", {})
            # Then the enqueue's wake-up (NOTIFY on the schema's channel) reaches the worker
            await eventually(lambda: ran == [job.id], timeout=10, what="the job to run")
    finally:
        await app.close()


async def test_a_schema_at_step_1_with_events_is_upgraded_in_place(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.backends.postgres import migrations

    # Given a schema created by a conveyor that knew only step 1, holding events of three jobs
    # (one row each, as step 1 stored them)
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", 1)
    backend = PostgresBackend(pg_url)
    await backend.open()
    await backend.close()
    assert _versions(pg_url) == [1]
    monkeypatch.undo()
    olds = ["old-1", "old-2", "old-3"]
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        for job in olds:
            conn.execute(f"INSERT INTO {_schema(pg_url)}.events (type, job_id, queue, task, time) "
                         "VALUES ('enqueued', %s, 'up', 't', 0)", (job,))  # fmt: skip
    # When the current conveyor opens it
    app = Conveyor(pg_url)

    @app.task(queue="up")
    async def t2(n: int) -> None: ...

    await app.open()
    # Then it is migrated to the current version, the rows step 1 wrote read as one event each
    # with the two-number cursors step 1 gave them, every such cursor reads on, and new bulks
    # are packed and read after them
    assert _versions(pg_url) == list(range(1, SCHEMA_VERSION + 1))
    log = [e async for e in app.events(since="0", follow=False)]
    assert [e.job_id for e in log] == olds
    schema = _schema(pg_url)
    with psycopg.connect(plain(pg_url)) as conn:
        rows = conn.execute(
            f"SELECT xid::text, id FROM {schema}.events ORDER BY xid, id"
        ).fetchall()
    assert [e.cursor for e in log] == [f"p{x}.{i}" for x, i in rows]  # step 1's cursor form
    assert [e.job_id async for e in app.events(since="0", follow=False, job_id="old-2")] == [
        "old-2"
    ]
    after = await app.enqueue_many([("t2", {"n": i}) for i in range(3)])
    for i, e in enumerate(log):
        got = [x.job_id async for x in app.events(since=e.cursor, follow=False)]
        assert got == [*olds[i + 1 :], *after.ids]
    with psycopg.connect(plain(pg_url)) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {_schema(pg_url)}.events").fetchone()
    assert rows == (4,)  # the three old rows, one packed row of the new bulk
    await app.close()
