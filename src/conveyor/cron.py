"""The user side of schedules: what ``@app.cron`` / ``@app.periodic`` do at decoration time
(check everything, register the task if needed, then the `Schedule`) and what
``app.schedules()`` / ``conveyor cron list`` show (`ScheduleInfo`).

A schedule decorates either a plain function, which is then registered as a task with default
options (``queue=`` / ``priority=`` become the task's), or a task registered already (``@app.cron``
above ``@app.task(...)``, or on the result of ``app.declare``), which keeps its options while
``queue=`` / ``priority=`` apply to the schedule's jobs only. The decorator returns the `Task`,
so schedules stack: one task may have several, each with its own ``name=`` (default: the task's
name)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, ValidationError
from .job import JobState, parse_priority
from .options import check_queue_name
from .schedule import Schedule

if TYPE_CHECKING:
    from .app import Conveyor
    from .task import Task

Decorator = Callable[[Any], "Task"]


def schedule_decorator(
    app: Conveyor,
    make: Callable[[str, str, dict[str, Any]], Schedule],
    name: str | None,
    policies: dict[str, Any],
) -> Decorator:
    """The decorator of ``@app.cron`` / ``@app.periodic``; ``make(name, task, policies)``
    builds the `Schedule` (it raises `ConfigurationError` for a bad expression or period)."""
    from .task import Task

    queue, priority = policies.get("queue"), policies.get("priority")
    if queue is not None:
        try:
            check_queue_name(queue)
        except ValidationError as exc:
            raise ConfigurationError(str(exc)) from None
    if priority is not None:
        try:
            policies["priority"] = parse_priority(priority)
        except ValidationError as exc:
            raise ConfigurationError(str(exc)) from None

    def register(target: Any) -> Task:
        if isinstance(target, Task):
            task = target
        elif callable(target):
            opts = {k: v for k, v in (("queue", queue), ("priority", priority)) if v is not None}
            policies.pop("queue", None)
            policies.pop("priority", None)
            task = app.task(**opts)(target)
        else:
            raise ConfigurationError(f"@cron/@periodic decorates a function or a task, got "
                                     f"{type(target).__name__}")  # fmt: skip
        s = make(name or task.name, task.name, policies)
        try:
            payload = task.spec.validate(s.payload)
        except ValidationError as exc:
            raise ConfigurationError(f"schedule {s.name!r}: {exc}") from None
        if payload != s.payload:
            s = make(s.name, task.name, {**policies, "payload": payload})
        app.catalog.add_schedule(s)
        return task

    return register


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One schedule as ``app.schedules()`` and ``conveyor cron list`` show it: its definition,
    the next tick (epoch seconds, backend clock), the last tick that fired (None: never), and
    the job of that tick with its status (None when retention deleted it)."""

    name: str
    task: str
    schedule: str  # the cron expression, or "every <n>s"
    tz: str
    queue: str
    catch_up: str
    overlap: str
    next_fire: float
    last_fire: float | None
    last_job: str | None
    last_status: JobState | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "task": self.task, "schedule": self.schedule, "tz": self.tz,
            "queue": self.queue, "catch_up": self.catch_up, "overlap": self.overlap,
            "next_fire": self.next_fire, "last_fire": self.last_fire, "last_job": self.last_job,
            "last_status": None if self.last_status is None else self.last_status.value,
        }  # fmt: skip


async def schedule_infos(app: Conveyor) -> list[ScheduleInfo]:
    """The app's schedules with their stored state, in registration order."""
    await app.open()
    schedules = list(app.catalog.schedules.values())
    queues = [s.queue or app.catalog.lookup(s.task).options.queue for s in schedules]
    states = await app.backend.schedule_states(
        [(s.name, q) for s, q in zip(schedules, queues, strict=True)]
    )
    now = int(app.backend.now() * 1000)
    out: list[ScheduleInfo] = []
    for s, queue in zip(schedules, queues, strict=True):
        st = states.get(s.name)
        job = None
        if st is not None and st.last_job is not None:
            job = await app.backend.get_job(st.last_job)
        # A schedule not yet seen by a scheduler starts after its first pass: next tick on.
        after = max(now, st.last_tick) if st is not None else now
        out.append(ScheduleInfo(
            s.name, s.task, s.describe(), s.tz, queue, s.catch_up.value, s.overlap.value,
            s.next_after(after) / 1000,
            None if st is None or st.last_fire is None else st.last_fire / 1000,
            None if st is None else st.last_job, None if job is None else job.status,
        ))  # fmt: skip
    return out
