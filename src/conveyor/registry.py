"""What live workers publish about the tasks they run, and what producers and workers do with it.

Each worker's registry heartbeat carries its tasks: name, queue and payload JSON Schema
(`conveyor.backends.base.TaskInfo`). A producer without the app (``conveyor enqueue`` without
``--app``, later the HTTP API) routes and checks a job from that; a job no live worker can run
is refused at enqueue; a worker that claims a job it has no handler for fails it for good, unless
another live worker on the job's queue runs that task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backends.base import TaskInfo, WorkerInfo
from .errors import Permanent, Retry, ValidationError
from .job import Job, JobState
from .schema_check import check_payload
from .task import AnyPayload

if TYPE_CHECKING:
    from .app import Conveyor
    from .task import Task
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


class SchemaPayload(AnyPayload):
    """The payload rule of a task as a live worker publishes it: its JSON Schema."""

    def __init__(self, name: str, schema: dict[str, Any] | None) -> None:
        super().__init__(name)
        self._schema = schema

    def validate(self, payload: Any) -> dict[str, Any]:
        clean = super().validate(payload)
        if self._schema is not None:
            check_payload(self._schema, clean, self._name)
        return clean

    def json_schema(self) -> dict[str, Any] | None:
        return self._schema


async def declare_live(app: Conveyor, name: str, queue: str | None = None) -> Task:
    """Declare ``name`` on ``app`` as the live workers publish it, so ``app`` can enqueue it
    without its code: to the queue they run it on, its payload checked against their schema.

    Raises `ValidationError` (field ``task``) when no live worker runs it, or (field ``queue``)
    when ``queue`` is given and is not theirs."""
    live = await app.workers()
    info = published(live, name)
    if info is None:
        names = sorted({t.name for w in live for t in w.tasks})
        runs = f"live workers run {', '.join(names)}" if names else "no worker is live"
        raise ValidationError(f"no live worker runs task {name!r} ({runs})", field="task")
    if queue is not None and queue != info.queue:
        raise ValidationError(f"task {name!r} runs on queue {info.queue!r} (so say the live "
                              f"workers), not {queue!r}", field="queue")  # fmt: skip
    t = app.declare(name, queue=info.queue)
    t.spec = SchemaPayload(name, info.schema)  # type: ignore[assignment]
    return t


async def why_waiting(app: Conveyor, job: Job) -> str | None:
    """Why a pending job may not run: no live worker serves its queue, or those that do lack
    its task. None when a live worker can run it, or when the job is not pending."""
    if job.status not in (JobState.QUEUED, JobState.SCHEDULED):
        return None
    on_queue = [w for w in await app.workers() if job.queue in w.queues]
    if not on_queue:
        return f"no live worker serves queue {job.queue!r}"
    if not runners(on_queue, job.task, job.queue):
        return (f"the live workers on queue {job.queue!r} have no handler for task {job.task!r} "
                "(the job will fail when one claims it)")  # fmt: skip
    return None


async def missing_handler(worker: Worker, job: Job) -> Exception:
    """What to raise when ``worker`` claimed ``job`` but has no handler for its task: `Retry`
    when another live worker on the job's queue runs the task (the job goes back for it),
    else `Permanent` (no worker can run it: failing for good says so, retrying would not)."""
    try:
        others = [
            w for w in runners(await worker.backend.list_workers(), job.task, job.queue)
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


__all__ = [
    "SchemaPayload", "declare_live", "missing_handler", "published", "runners", "why_waiting",
]  # fmt: skip
