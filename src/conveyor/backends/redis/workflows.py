"""Redis reads of workflows and the hand-over outbox (`WorkflowStore`).

Each queue indexes the jobs of a workflow it holds in ``<prefix>:{<queue>}:wf:<workflow>``
(written by enqueue.lua, cleaned by prune.lua): a workflow whose steps run on several queues is
read from every queue's index, one pipeline, then the jobs of each queue in one more."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...job import Job
from . import outbox, reads


def chain_order(root: Job | None, jobs: list[Job]) -> list[Job]:
    """The root, then each job after its parent (siblings by id): a chain's creation order,
    exact whatever the clocks of the hosts that made the ids. Jobs whose parent is gone
    (retention) follow, by id."""
    by_id = sorted(jobs, key=lambda j: j.id)
    children: dict[str | None, list[Job]] = {}
    for j in by_id:
        children.setdefault(j.parent, []).append(j)
    out: list[Job] = []
    seen: set[str] = set()
    for start in [root] if root is not None else []:
        _walk(start, children, seen, out)
    for start in by_id:
        _walk(start, children, seen, out)
    return out


def _walk(
    start: Job, children: dict[str | None, list[Job]], seen: set[str], out: list[Job]
) -> None:
    stack = [start]
    while stack:
        j = stack.pop()
        if j.id in seen:
            continue
        seen.add(j.id)
        out.append(j)
        stack += reversed(children.get(j.id, []))


class RedisWorkflows:
    """The `WorkflowStore` methods of `RedisBackend`."""

    async def workflow_jobs(self, workflow: str, *, tenant: str | None = None) -> list[Job]:
        b: Any = self
        queues = await b._queues()
        pipe = b._client().pipeline(transaction=False)
        for q in queues:
            pipe.zrange(b.key(q, f"wf:{workflow}"), 0, -1)
        indexed = await pipe.execute() if queues else []
        jobs: list[Job] = []
        for q, ids in zip(queues, indexed, strict=True):
            if ids:
                jobs += [j for j in await reads._read(b, q, ids) if j is not None]
        root = await reads.get_job(b, workflow)
        if root is not None and root.workflow is not None:
            root = None  # a step of another workflow, not a root
        out = chain_order(root, jobs)
        if tenant is not None and any(j.tenant != tenant for j in out):
            return []  # another tenant's workflow: as if it did not exist
        return out

    async def forward_handovers(self, queues: Sequence[str]) -> int:
        return await outbox.forward(self, queues)  # type: ignore[arg-type]
