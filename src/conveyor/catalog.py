"""`Catalog`: an app's task registry and queue configuration: which tasks exist, and each
queue's retention rule, flow limits and backpressure (``max_queued``). Bookkeeping only, no I/O:
producers read it to build jobs, workers to run them. Also the handlers behind
``app.command(...)`` and ``app.declare(...)``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .backends.base import EventRetention, Retention
from .errors import ConfigurationError, UnknownTask, ValidationError
from .limits import Concurrency, RateLimit, as_concurrency, as_rate_limits
from .options import MAX_KEY_LEN, text_problem

if TYPE_CHECKING:
    from .command import CommandSpec
    from .schedule import Schedule
    from .task import Task

Handler = Callable[..., Any]


class Catalog:
    """The registered tasks by name, and the per-queue settings of one app.

    Args:
        retention: default rule for finished jobs of every queue (`configure_queue` sets one
            queue's own).
        event_retention: cap of the event log by count and age.
    """

    def __init__(
        self, retention: Retention | None = None, event_retention: EventRetention | None = None
    ) -> None:
        self.tasks: dict[str, Task] = {}
        self.default_retention = retention or Retention()
        self.event_retention = event_retention or EventRetention()
        self.max_queued: dict[str, int] = {}  # backpressure, passed to the backend's checks
        self.schedules: dict[str, Schedule] = {}  # @app.cron / @app.periodic, by name
        self._retention: dict[str, Retention] = {}
        self._queue_limits: dict[str, tuple[RateLimit | Concurrency, ...]] = {}

    # -- tasks ----------------------------------------------------------------------------------

    def check_name(self, name: str) -> None:
        """Raise `ConfigurationError` unless ``name`` can name a new task (free and valid)."""
        if name in self.tasks:
            raise ConfigurationError(f"task {name!r} is already registered")
        bad = text_problem(name)
        if bad is not None or len(name) > MAX_KEY_LEN:
            raise ConfigurationError(
                f"task name {name!r:.80} is invalid: "
                f"{bad or f'it is longer than {MAX_KEY_LEN} characters'}"
            )

    def add(self, task: Task) -> Task:
        """Register ``task`` under its name (checked first with `check_name`)."""
        self.tasks[task.name] = task
        return task

    def lookup(self, task: str | Task) -> Task:
        """The registered task of this name (a `Task` is returned as is); raises
        `UnknownTask`, or `ValidationError` when ``task`` is not a string."""
        from .task import Task

        if isinstance(task, Task):
            return task
        if not isinstance(task, str):  # before the lookup: a list or dict is not hashable
            raise ValidationError(
                f"task must be a task name, got {type(task).__name__}", field="task"
            )
        t = self.tasks.get(task)
        if t is None:
            raise UnknownTask(task, list(self.tasks))
        return t

    def queues(self) -> list[str]:
        """The queues of the registered tasks, in registration order, then the queues that
        schedules send their jobs to, if other."""
        own = [s.queue for s in self.schedules.values() if s.queue is not None]
        return list(dict.fromkeys([*(t.options.queue for t in self.tasks.values()), *own]))

    def add_schedule(self, schedule: Schedule) -> Schedule:
        """Register a schedule; raises `ConfigurationError` if its name is taken."""
        if schedule.name in self.schedules:
            raise ConfigurationError(
                f"schedule {schedule.name!r} is already registered: give this one name=..."
            )
        self.schedules[schedule.name] = schedule
        return schedule

    # -- queues ---------------------------------------------------------------------------------

    def configure_queue(
        self,
        name: str,
        *,
        retention: Retention | None = None,
        rate_limit: str | RateLimit | list[RateLimit] | None = None,
        concurrency: int | Concurrency | list[Concurrency] | None = None,
        max_queued: int | None = None,
    ) -> None:
        """Set a queue's retention, limits (as a whole) and backpressure: see `Conveyor.queue`."""
        if max_queued is not None and (
            isinstance(max_queued, bool) or not isinstance(max_queued, int) or max_queued < 0
        ):
            small = type(max_queued) is int and abs(max_queued) < 10**18  # never repr a huge value
            shown = repr(max_queued) if small else type(max_queued).__name__
            raise ConfigurationError(f"max_queued must be an integer >= 0 or None, got {shown}")
        if max_queued is None:
            self.max_queued.pop(name, None)
        else:
            self.max_queued[name] = max_queued
        if retention is not None:
            self._retention[name] = retention
        limits = (*as_rate_limits(rate_limit, "queue"), *as_concurrency(concurrency, "queue"))
        if limits or name in self._queue_limits:
            self._queue_limits[name] = limits
        for t in self.tasks.values():
            if t.options.queue == name:
                t._forget_rules()

    def queue_limits(self, queue: str) -> tuple[RateLimit | Concurrency, ...]:
        return self._queue_limits.get(queue, ())

    def retention_for(self, queue: str) -> Retention:
        return self._retention.get(queue, self.default_retention)


# -- handlers of tasks that are not Python functions ------------------------------------------------


def command_handler(name: str, spec: CommandSpec, timeout: float | None) -> Handler:
    """The handler of ``app.command(name, ...)``: runs the program of ``spec``."""
    from .command import run_command

    async def run(ctx: Any, payload: dict[str, Any]) -> Any:
        if timeout is None or ctx.job.timeout is not None:
            return await run_command(spec, ctx, payload)
        # A job enqueued without this definition (``conveyor enqueue`` without --app)
        # carries no timeout: the worker's definition still bounds it.
        from .worker.executor import JobTimeout

        try:
            async with asyncio.timeout(timeout):
                return await run_command(spec, ctx, payload)
        except TimeoutError:
            raise JobTimeout(f"timed out after {timeout:g}s") from None

    run.__name__ = name
    return run


def declared_handler(name: str) -> Handler:
    """The handler of ``app.declare(name)``: a worker here does not run the task (see
    `conveyor.registry.missing_handler`)."""

    async def undefined(ctx: Any, payload: dict[str, Any]) -> Any:
        from .registry import missing_handler

        raise await missing_handler(ctx._worker, ctx.job)

    undefined.__name__ = name
    return undefined
