"""What live workers publish about the tasks they run, and what producers and workers do with it.

Each worker's registry heartbeat carries its tasks: name, queue and payload JSON Schema
(`conveyor.backends.base.TaskInfo`). A producer without the app (``conveyor enqueue`` without
``--app``, later the HTTP API) routes and checks a job from that; a job no live worker can run
is refused at enqueue; a worker that claims a job it has no handler for fails it for good, unless
another live worker on the job's queue runs that task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backends.base import TaskInfo, WorkerInfo
from .errors import Permanent, Retry
from .job import Job

if TYPE_CHECKING:
    from .worker.runtime import Worker

HANDOFF_DELAY = 1.0  # seconds before a job goes back for a worker that has its handler


def runners(workers: list[WorkerInfo], task: str, queue: str | None = None) -> list[WorkerInfo]:
    """The workers that run ``task`` (on ``queue`` when given), newest first."""
    found = [
        w
        for w in workers
        if any(t.name == task and (queue is None or t.queue == queue) for t in w.tasks)
        and (queue is None or queue in w.queues)
    ]
    return sorted(found, key=lambda w: w.started_at, reverse=True)


def published(workers: list[WorkerInfo], task: str) -> TaskInfo | None:
    """How the live workers publish ``task``; the newest worker's word when they differ (a
    rolling deploy moves a task to its new definition)."""
    for w in runners(workers, task):
        for t in w.tasks:
            if t.name == task:
                return t
    return None


async def missing_handler(worker: Worker, job: Job) -> Exception:
    """What to raise when ``worker`` claimed ``job`` but has no handler for its task: `Retry`
    when another live worker on the job's queue runs the task (the job goes back for it),
    else `Permanent` (no worker can run it: failing for good says so, retrying would not)."""
    try:
        others = [
            w for w in runners(await worker.app.backend.list_workers(), job.task, job.queue)
            if w.id != worker.id
        ]  # fmt: skip
    except Exception as exc:  # the registry is unreadable: no grounds to fail the job for good
        return Retry(HANDOFF_DELAY, f"worker {worker.id} has no handler for task {job.task!r} "
                                    f"and could not read the worker registry: {exc}")  # fmt: skip
    if others:
        return Retry(HANDOFF_DELAY, f"worker {worker.id} has no handler for task {job.task!r}; "
                                    f"live worker {others[0].id} has")  # fmt: skip
    return Permanent(f"no handler for task {job.task!r}: worker {worker.id} does not define it "
                     f"and no live worker on queue {job.queue!r} does")  # fmt: skip


__all__ = ["missing_handler", "published", "runners"]
