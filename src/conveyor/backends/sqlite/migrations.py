"""The SQLite schema: created on a new file, or brought to `SCHEMA_VERSION` by migrations, one
function per step (``migrate_<n>_to_<n+1>``), each run in its own ``BEGIN IMMEDIATE``
transaction (`install`), which records the new version. Each step is safe to run over a file
another process upgraded meanwhile."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from importlib import resources

from ...errors import BackendCorrupt

SCHEMA_VERSION = "14"


def install(conn: sqlite3.Connection, path: str, exists: bool) -> None:
    """Create the schema in a new file (``exists`` False: no ``conveyor_meta`` yet), then
    migrate it step by step to `SCHEMA_VERSION`; `BackendCorrupt` for a version this code
    does not know (e.g. a newer one)."""
    if not exists:
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{_schema()}\nINSERT OR IGNORE INTO conveyor_meta (key, value) "
                f"VALUES ('schema', '{SCHEMA_VERSION}');\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    version = _version(conn)
    while version is not None and version in STEPS:
        _migrate(conn, STEPS[version], str(int(version) + 1))
        version = _version(conn)
    if version != SCHEMA_VERSION:
        raise BackendCorrupt(
            f"SQLite file {path} has conveyor schema {version!r}, "
            f"this version needs {SCHEMA_VERSION!r}"
        )


def _version(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM conveyor_meta WHERE key = 'schema'").fetchone()
    return None if row is None else str(row[0])


def _migrate(
    conn: sqlite3.Connection, step: Callable[[sqlite3.Connection], None], version: str
) -> None:
    """Run one migration step and record its version, in one transaction."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        current = conn.execute("SELECT value FROM conveyor_meta WHERE key = 'schema'")
        if int(current.fetchone()[0]) < int(version):  # another process may have done it
            step(conn)
            conn.execute("UPDATE conveyor_meta SET value = ? WHERE key = 'schema'", (version,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (executescript would commit our transaction)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        # Blank lines and comments between statements are dropped: a statement starts with its
        # keyword (migrations pick statements by how they start).
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
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


AWAIT_COLUMNS = (("prompt", "TEXT"), ("await_deadline", "REAL"), ("on_timeout", "TEXT"),
                 ("await_data", "TEXT"), ("input", "TEXT"),
                 ("resumes", "INTEGER NOT NULL DEFAULT 0"))  # fmt: skip


def migrate_10_to_11(conn: sqlite3.Connection) -> None:
    """Schema 11 adds human in the loop: the await and resume columns of jobs and the indexes
    of awaiting jobs (listing, deadline sweep). No job is awaiting before it."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    for col, decl in AWAIT_COLUMNS:
        if col not in cols:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {col} {decl}")
    for stmt in _statements(_schema()):
        if stmt.startswith(("CREATE INDEX IF NOT EXISTS jobs_awaiting",
                            "CREATE INDEX IF NOT EXISTS jobs_await_due")):  # fmt: skip
            conn.execute(stmt)


def migrate_11_to_12(conn: sqlite3.Connection) -> None:
    """Schema 12 adds fan-out / fan-in: the parents' fan-in record (``jobs.fanin``) and the
    edges table. No job has children before it."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    if "fanin" not in cols:
        conn.execute("ALTER TABLE jobs ADD COLUMN fanin TEXT")
    for stmt in _statements(_schema()):
        if stmt.startswith(("CREATE TABLE IF NOT EXISTS edges",
                            "CREATE INDEX IF NOT EXISTS edges_parent")):  # fmt: skip
            conn.execute(stmt)


def migrate_12_to_13(conn: sqlite3.Connection) -> None:
    """Schema 13 adds the batch records (batches with callbacks)."""
    for stmt in _statements(_schema()):
        if "batches (" in stmt:
            conn.execute(stmt)


def migrate_13_to_14(conn: sqlite3.Connection) -> None:
    """Schema 14 adds the indexes of jobs by task and by queue in creation order (the
    dashboard's filters and bulk counts: no scan of the table for a rare or absent value)."""
    for stmt in _statements(_schema()):
        if stmt.startswith(("CREATE INDEX IF NOT EXISTS jobs_task ",
                            "CREATE INDEX IF NOT EXISTS jobs_queue ")):  # fmt: skip
            conn.execute(stmt)


STEPS: dict[str, Callable[[sqlite3.Connection], None]] = {
    "1": migrate_1_to_2,
    "2": migrate_2_to_3,
    "3": migrate_3_to_4,
    "4": migrate_4_to_5,
    "5": migrate_5_to_6,
    "6": migrate_6_to_7,
    "7": migrate_7_to_8,
    "8": migrate_8_to_9,
    "9": migrate_9_to_10,
    "10": migrate_10_to_11,
    "11": migrate_11_to_12,
    "12": migrate_12_to_13,
    "13": migrate_13_to_14,
}
