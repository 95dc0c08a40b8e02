"""SQLite reads of workflows: the root job by id and its workflow's jobs through the
``jobs_workflow`` index, in one statement. Jobs that an outcome creates are inserted in the
outcome's own transaction (`attempts.hand_over`): there is no outbox to forward."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...job import Job
from .ops import JOB_COLS, row_to_job

_WORKFLOW = (
    f"SELECT * FROM (SELECT seq, {JOB_COLS} FROM jobs WHERE id = :w AND workflow IS NULL "
    f"UNION ALL SELECT seq, {JOB_COLS} FROM jobs WHERE workflow = :w) ORDER BY seq"
)


def workflow_jobs(conn: sqlite3.Connection, workflow: str, tenant: str | None) -> list[Job]:
    jobs = [row_to_job(r[1:]) for r in conn.execute(_WORKFLOW, {"w": workflow})]
    if tenant is not None and any(j.tenant != tenant for j in jobs):
        return []  # another tenant's workflow: as if it did not exist
    return jobs


class SqliteWorkflows:
    """The `WorkflowStore` methods of `SqliteBackend`."""

    def _read(self, fn: Any, *args: Any) -> Any: ...

    async def workflow_jobs(self, workflow: str, *, tenant: str | None = None) -> list[Job]:
        jobs: list[Job] = await self._read(workflow_jobs, workflow, tenant)
        return jobs

    async def forward_handovers(self, queues: Sequence[str]) -> int:
        return 0  # created in the finishing transaction itself
