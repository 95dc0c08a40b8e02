"""The workflow part of the storage seam (`Backend` includes it): reading a workflow's jobs and
delivering the jobs that outcomes created in another atomic unit (Redis outboxes).

A workflow is the chain of jobs a first job (the *root*) starts when its handler returns a
`conveyor.Next`: each next job carries ``workflow`` = the root's id and ``parent`` = the job
before it. The root itself keeps ``workflow`` None (it was enqueued before anyone knew it would
hand over); it is found by its id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..job import Job


class WorkflowStore(Protocol):
    async def workflow_jobs(self, workflow: str, *, tenant: str | None = None) -> list[Job]:
        """The root job ``workflow`` (when it has no workflow of its own) and the jobs of that
        workflow, in creation order, read through an index of the workflow's jobs (never a scan
        of every job). Empty when there is none, or when ``tenant`` is given and they are
        another tenant's (a chain never changes tenant). Not atomic across queues on Redis."""

    async def forward_handovers(self, queues: Sequence[str]) -> int:
        """Deliver the jobs that outcomes of ``queues`` created but that are not stored yet
        (Redis: the queue's outbox; a backend that stores them with the outcome has none).
        Idempotent: each entry is stored by its fixed job id, then removed. Returns how many
        entries were delivered."""


__all__ = ["WorkflowStore"]
