"""Schema migrations of the SQLite backend, one function per step (``migrate_<n>_to_<n+1>``),
each run in its own ``BEGIN IMMEDIATE`` transaction by `SqliteBackend._init`, which records the
new version. Each step is safe to run over a file another process upgraded meanwhile."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (executescript would commit our transaction)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _schema() -> str:
    return resources.files(__package__).joinpath("schema.sql").read_text()


def migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Schema 2 adds flow control: jobs.flow, the gates and flows tables, and a ready index
    that leaves flow-controlled jobs out."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    if "flow" not in cols:
        conn.execute("ALTER TABLE jobs ADD COLUMN flow TEXT")
        conn.execute("DROP INDEX IF EXISTS jobs_ready")
    schema = resources.files(__package__).joinpath("schema.sql").read_text()
    for stmt in _statements(schema):
        conn.execute(stmt)


def migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Schema 3 adds the claim token (jobs.token). Jobs active during the upgrade keep
    token 0, which their old workers never send: their outcomes are ignored and the jobs
    come back through lease recovery (at least once)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    if "token" not in cols:
        conn.execute("ALTER TABLE jobs ADD COLUMN token INTEGER NOT NULL DEFAULT 0")


def migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """Schema 4: the worker registry holds each worker's running jobs, counts and tasks;
    idempotency keys are unique per (queue, tenant), not per queue; jobs are indexed by
    tenant for listing."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(workers)")}
    for col, decl in (("running", "TEXT NOT NULL DEFAULT '[]'"),
                      ("processed", "INTEGER NOT NULL DEFAULT 0"),
                      ("failed", "INTEGER NOT NULL DEFAULT 0"),
                      ("tasks", "TEXT NOT NULL DEFAULT '[]'")):  # fmt: skip
        if col not in cols:
            conn.execute(f"ALTER TABLE workers ADD COLUMN {col} {decl}")
    conn.execute("DROP INDEX IF EXISTS jobs_idempotency")
    for stmt in _statements(_schema()):
        m = re.match(r"CREATE (?:UNIQUE )?INDEX IF NOT EXISTS (\w+)", stmt)
        if m and m[1] in ("jobs_idempotency", "jobs_tenant"):
            conn.execute(stmt)


def migrate_4_to_5(conn: sqlite3.Connection) -> None:
    """Schema 5 indexes the event log by queue, tenant and job (filtered reads); building
    the indexes reads the log once."""
    for stmt in _statements(_schema()):
        if stmt.startswith("CREATE INDEX IF NOT EXISTS events_"):
            conn.execute(stmt)


def migrate_5_to_6(conn: sqlite3.Connection) -> None:
    """Schema 6 indexes cancelled attempts that still hold their gates' slots."""
    for stmt in _statements(_schema()):
        if stmt.startswith("CREATE INDEX IF NOT EXISTS jobs_held"):
            conn.execute(stmt)


def migrate_6_to_7(conn: sqlite3.Connection) -> None:
    """Schema 7 stores each job's meta (hooks, trace context) and cost (``ctx.cost``), and
    sums the costs per (queue, task, unit)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    for col in ("meta", "cost"):
        if col not in cols:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {col} TEXT")
    for stmt in _statements(_schema()):
        if "CREATE TABLE IF NOT EXISTS costs (" in stmt:  # it may start with its comment
            conn.execute(stmt)


def migrate_7_to_8(conn: sqlite3.Connection) -> None:
    """Schema 8 adds the paused queues (queue pause/resume) and the API keys of the HTTP API."""
    for stmt in _statements(_schema()):
        if "paused_queues (" in stmt or "api_keys (" in stmt:  # the tables and the index
            conn.execute(stmt)


def migrate_8_to_9(conn: sqlite3.Connection) -> None:
    """Schema 9 adds the schedules' state (cron and periodic jobs: the last tick claimed)."""
    for stmt in _statements(_schema()):
        if "schedules (" in stmt:
            conn.execute(stmt)


def migrate_9_to_10(conn: sqlite3.Connection) -> None:
    """Schema 10 adds chains: each job's step label, declared number of steps and the jobs
    created with its outcome, and the index of a workflow's jobs."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    for col, kind in (("step", "TEXT"), ("steps", "INTEGER"), ("next_jobs", "TEXT")):
        if col not in cols:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {col} {kind}")
    for stmt in _statements(_schema()):
        if stmt.startswith("CREATE INDEX IF NOT EXISTS jobs_workflow"):
            conn.execute(stmt)


def migrate_10_to_11(conn: sqlite3.Connection) -> None:
    """Schema 11 adds the batch records (batches with callbacks)."""
    for stmt in _statements(_schema()):
        if "batches (" in stmt:
            conn.execute(stmt)
