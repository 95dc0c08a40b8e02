"""The PostgreSQL schema: created and migrated by versioned steps (``schema_<n>.sql``), never by
hand. ``<schema>.schema_version`` holds the versions applied.

`migrate` is safe when several processes start at once against a new database: it takes a
transaction-level advisory lock keyed by the schema name before reading the version, so one
process applies the steps and the others, once it committed, find nothing left to do. Each step
runs in that one transaction with its version row: a failed step leaves nothing behind.
"""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql

from ...errors import BackendCorrupt

SCHEMA_VERSION = 2
_STEPS = {1: "schema_1.sql", 2: "schema_2.sql"}


def _text(step: int, schema: str) -> str:
    raw = resources.files(__package__).joinpath(_STEPS[step]).read_text()
    return raw.replace("{s}", sql.Identifier(schema).as_string(None))


async def version(conn: psycopg.AsyncConnection[object], schema: str) -> int | None:
    """The schema's version, None when it has none (not created yet). Reads without a lock."""
    cur = await conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        (f"{sql.Identifier(schema).as_string(None)}.schema_version",),
    )
    row = await cur.fetchone()
    if not row or not row[0]:
        return None
    cur = await conn.execute(
        sql.SQL("SELECT max(version) FROM {}.schema_version").format(sql.Identifier(schema))
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def migrate(conn: psycopg.AsyncConnection[object], schema: str) -> list[int]:
    """Bring ``schema`` to `SCHEMA_VERSION`; returns the steps applied (empty: up to date).
    ``conn`` must be in autocommit mode (each run is its own transaction). Raises
    `BackendCorrupt` for a version this code does not know (a newer conveyor migrated it)."""
    current = await version(conn, schema)
    if current == SCHEMA_VERSION:
        return []
    ident = sql.Identifier(schema)
    applied: list[int] = []
    async with conn.transaction():
        # Keyed by the schema: concurrent first uses of one schema queue up here.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"conveyor:{schema}",))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_version (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        current = await version(conn, schema) or 0
        if current > SCHEMA_VERSION:
            raise BackendCorrupt(
                f"PostgreSQL schema {schema!r} has conveyor schema version {current}, "
                f"this version of conveyor knows up to {SCHEMA_VERSION}"
            )
        for step in range(current + 1, SCHEMA_VERSION + 1):
            await conn.execute(_text(step, schema).encode())
            await conn.execute(
                sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(ident),
                (step,),
            )
            applied.append(step)
    return applied


async def check(conn: psycopg.AsyncConnection[object], schema: str) -> None:
    """`BackendCorrupt` unless the schema is at `SCHEMA_VERSION` (``?migrate=false``)."""
    current = await version(conn, schema)
    if current != SCHEMA_VERSION:
        raise BackendCorrupt(
            f"PostgreSQL schema {schema!r} is at conveyor schema version {current}, this version "
            f"needs {SCHEMA_VERSION}: run `conveyor migrate` (or drop ?migrate=false)"
        )


__all__ = ["SCHEMA_VERSION", "check", "migrate", "version"]
