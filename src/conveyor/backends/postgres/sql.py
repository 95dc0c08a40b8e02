"""SQL text shared by the PostgreSQL modules: the schema placeholder, the clock and the job
columns; and `Conn`, what every operation runs on (a pooled connection, or the caller's own
connection of a transactional enqueue, sync ones adapted by `SyncConn`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
from psycopg import sql as _sql

from ..sqlite.ops import JOB_COLS as JOB_COLS  # same columns, same order: one row decoder
from ..sqlite.ops import row_to_job as row_to_job

#: The database's clock in epoch seconds: every lease, schedule and rate limit uses it.
NOW = "extract(epoch FROM clock_timestamp())::float8"
#: Sent first in a worker round's pipeline, the statements after it run on their prepared generic
#: plans until the implicit transaction ends (psycopg prepares a statement on its fifth run on a
#: connection). Under the default plan_cache_mode the server chose custom plans and planned the
#: round's CTE statements again every round: 8 % of its CPU in a drain (perf). The generic plans
#: read the same indexes (tests/backends/postgres/test_pg_claims.py explains them). A plain
#: enqueue gained nothing measurable from it (W1 probe, single enqueues): not used there.
GENERIC_PLANS = "SELECT set_config('plan_cache_mode', 'force_generic_plan', true)"
#: A CTE for the statements that take a list of attempts (ids and tokens): they compare the job's
#: status with ``act.status``, not with the literal 'active'. The planner does not see through a
#: materialized CTE, so it cannot answer ``status = 'active'`` from the partial index
#: jobs_active. With statistics taken while no job was active (autovacuum's ANALYZE after a bulk
#: enqueue) that index looks empty, and the planner read it in a nested loop that scanned the
#: whole list again for every active row: quadratic in the round's size (a drain of 20,000 jobs
#: after an ANALYZE: 11,500-12,400 -> 7,800-8,300 jobs/s). Through the primary key instead.
ACTIVE = "act AS MATERIALIZED (SELECT 'active'::text AS status)"
#: The job columns qualified with the alias ``j`` (UPDATE ... FROM ... RETURNING).
J_COLS = ", ".join(f"j.{c.strip()}" for c in JOB_COLS.split(","))


class Cursor(Protocol):
    async def fetchone(self) -> Any: ...
    async def fetchall(self) -> list[Any]: ...
    @property
    def rowcount(self) -> int: ...


class Conn(Protocol):
    async def execute(self, query: Any, params: Any = None) -> Any: ...


class SyncConn:
    """A sync psycopg `Connection` (``app.sync.enqueue(..., connection=conn)``) seen as an
    async one: each statement runs at once on the caller's connection (it blocks the sync
    facade's loop for that statement, as the caller's thread waits for the call anyway)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    async def execute(self, query: Any, params: Any = None) -> _SyncCursor:
        return _SyncCursor(self._conn.execute(query, params))


class _SyncCursor:
    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    async def fetchone(self) -> Any:
        return self._cur.fetchone()

    async def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


class Schema:
    """SQL text with ``{s}`` replaced by the quoted schema name, formatted once per text."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ident = _sql.Identifier(name).as_string(None)
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        out = self._cache.get(text)
        if out is None:
            out = self._cache[text] = text.replace("{s}", self.ident)
        return out

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this schema's wake-ups (payload: ``w:<queue>`` for
        work, ``c:<worker>`` for a cancelled job of that worker). PostgreSQL refuses a
        NOTIFY channel of more than 63 bytes: a longer one is named by the schema's digest."""
        channel = f"conveyor_{self.name}"
        if len(channel) > 63:
            channel = f"conveyor_{hashlib.sha256(self.name.encode()).hexdigest()[:40]}"
        return channel


def arrays(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows -> one list per column (the arrays an ``unnest(...)`` statement takes)."""
    cols: list[list[Any]] = [[] for _ in range(width)]
    for r in rows:
        for i in range(width):
            cols[i].append(r[i])
    return cols


__all__ = [
    "ACTIVE",
    "GENERIC_PLANS",
    "JOB_COLS",
    "J_COLS",
    "NOW",
    "Conn",
    "Cursor",
    "Schema",
    "SyncConn",
    "arrays",
    "row_to_job",
]
