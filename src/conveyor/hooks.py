"""Hooks: the one seam for cross-cutting behaviour (metrics, tracing, logging context, auditing).

Subclass `Hooks`, override what you need, and register it: ``Conveyor(url, hooks=[...])`` or
``app.add_hook(hook)``. Every method has a no-op default, and a method a hook does not override
costs nothing: the `HookBus` works out once, when a hook is added, which hooks override which
method, and the producer and the worker skip a method no hook overrides (with no hook at all the
worker's per-job path does no extra work).

When each method runs:

- ``before_enqueue(jobs)``: in the producer, after the jobs were validated and before the
  backend call, once per ``enqueue`` / ``enqueue_many`` call. It sees each job as an `Enqueuing`
  (never the payload) and may set entries of its ``meta``, which is stored with the job.
- ``around_execute(ctx, call_next)``: in the worker, once per attempt, around the handler call;
  the first registered hook is the outermost. It must return ``await call_next()``'s result or
  let its exception propagate.
- ``after_outcome(job, outcome)``: in the worker, once per attempt, after its outcome was decided
  and *before* the backend acknowledges it (acknowledgements are batched): `Outcome.kind` is
  completed, failed, retry, cancelled (the job was cancelled or its lease lost while it ran) or
  released (handed back uncharged at shutdown).
- ``on_worker_start(worker)`` once the worker runs; ``on_worker_stop(worker)`` once it stopped.
- ``on_event(event, job, data)``: what ``app.on`` listeners get (``enqueued``, ``started``,
  ``progress``, ``completed``, ``failed``, ``retrying``, ``cancelled``), in this process.

A hook that raises is logged (one record per failure, naming the hook and the method, never the
payload) and is skipped for that call: the enqueue proceeds, the job runs without that hook's
wrapper, the outcome stands, the worker goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.base import Outcome
    from .job import Job
    from .worker.context import Context
    from .worker.runtime import Worker

log = logging.getLogger("conveyor.hooks")
_METHODS = (
    "before_enqueue",
    "around_execute",
    "after_outcome",
    "on_worker_start",
    "on_worker_stop",
    "on_event",
)


@dataclass(slots=True)
class Enqueuing:
    """What `Hooks.before_enqueue` sees of a job being enqueued: never its payload. ``meta`` is
    mutable: what hooks put there is validated (JSON, size limit) and stored with the job."""

    id: str
    queue: str
    task: str
    tenant: str | None
    batch: str | None
    priority: int
    delay: float
    meta: dict[str, Any] = field(default_factory=dict)


class Hooks:
    """Base class with no-op defaults: subclass and override what you need."""

    def before_enqueue(self, jobs: Sequence[Enqueuing]) -> None:
        """Producer side, before the backend call (one call per ``enqueue``/``enqueue_many``);
        may set entries of each item's ``meta``. Raising is logged; the enqueue proceeds."""

    async def around_execute(self, ctx: Context, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Worker side, once per attempt, wrapping the handler call. Must return
        ``await call_next()``'s result or re-raise its exception."""
        return await call_next()

    def after_outcome(self, job: Job, outcome: Outcome) -> None:
        """Worker side, after the attempt's outcome is decided, before the backend ack."""

    def on_worker_start(self, worker: Worker) -> None:
        """Once a worker runs (connected, registered, claiming)."""

    def on_worker_stop(self, worker: Worker) -> None:
        """Once a worker stopped (jobs finished or handed back, connections closed)."""

    def on_event(self, event: str, job: Job, data: Any) -> None:
        """An in-process event (what ``app.on`` listeners get)."""


def hook_name(hook: object) -> str:
    return type(hook).__qualname__


def _overrides(hook: object, method: str) -> bool:
    own = getattr(type(hook), method, None)
    return own is not None and own is not getattr(Hooks, method)


class _Call:
    """The ``call_next`` one hook of the chain gets: runs the rest of the chain once and keeps
    how it ended, so that the bus can tell the handler's exception from the hook's own."""

    __slots__ = ("called", "done", "error", "nxt", "result")

    def __init__(self, nxt: Callable[[], Awaitable[Any]]) -> None:
        self.nxt = nxt
        self.called = False
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    async def __call__(self) -> Any:
        if self.called:
            raise RuntimeError("call_next() may be called only once per attempt")
        self.called = True
        try:
            self.result = await self.nxt()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.done = True
        return self.result


class HookBus:
    """The registered hooks, and for each method the tuple of hooks that override it (empty:
    the method is skipped). ``listeners`` (``app.on``) is a hook like any other, listed only
    once a listener exists."""

    def __init__(self, hooks: Iterable[object] = ()) -> None:
        from .listeners import Listeners

        self.hooks: list[Any] = []
        self.listeners = Listeners(self)
        self.enqueue: tuple[Any, ...] = ()
        self.execute: tuple[Any, ...] = ()
        self.outcome: tuple[Any, ...] = ()
        self.start: tuple[Any, ...] = ()
        self.stop: tuple[Any, ...] = ()
        self.event: tuple[Any, ...] = ()
        for h in hooks:
            self.add(h)

    def add(self, hook: object) -> None:
        """Register ``hook`` (a `Hooks` or any object with some of its methods) after the others."""
        if not any(callable(getattr(hook, m, None)) for m in _METHODS):
            from .errors import ConfigurationError

            raise ConfigurationError(
                f"{hook_name(hook)} is not a hook: subclass conveyor.Hooks and override "
                "before_enqueue, around_execute, after_outcome, on_worker_start/stop or on_event"
            )
        self.hooks.append(hook)
        self.refresh()

    def refresh(self) -> None:
        """Work out again which hooks override which method (after ``hooks`` changed)."""
        every = [*self.hooks, self.listeners] if self.listeners else list(self.hooks)

        def which(method: str) -> tuple[Any, ...]:
            return tuple(h for h in every if _overrides(h, method))

        self.enqueue = which("before_enqueue")
        self.execute = which("around_execute")
        self.outcome = which("after_outcome")
        self.start = which("on_worker_start")
        self.stop = which("on_worker_stop")
        self.event = which("on_event")

    # -- producer side ----------------------------------------------------------------------------

    def before_enqueue(self, jobs: Sequence[Enqueuing]) -> None:
        for h in self.enqueue:
            try:
                h.before_enqueue(jobs)
            except Exception:
                _failed(h, "before_enqueue")

    # -- worker side ------------------------------------------------------------------------------

    async def around_execute(self, ctx: Context, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call`` (the handler) inside every ``around_execute``, first registered outermost."""
        return await self._layer(0, ctx, call)

    async def _layer(self, i: int, ctx: Context, call: Callable[[], Awaitable[Any]]) -> Any:
        hooks = self.execute
        if i >= len(hooks):
            return await call()
        hook = hooks[i]
        nxt = _Call(lambda: self._layer(i + 1, ctx, call))
        try:
            res = await hook.around_execute(ctx, nxt)
        except Exception as exc:
            if nxt.error is exc:  # the handler's (or an inner layer's) exception: propagate
                raise
            _failed(hook, "around_execute")
            if not nxt.called:  # it failed before the job ran: run the job without it
                return await nxt()
            if not nxt.done:  # it raised while call_next was still running: impossible
                raise  # unless it leaked the awaitable; keep the hook's error then
            if nxt.error is not None:
                raise nxt.error from None
            return nxt.result
        if not nxt.called:
            log.error(
                "hook %s.around_execute returned without calling call_next(): the job runs "
                "without it",
                hook_name(hook),
            )
            return await nxt()
        if nxt.error is not None:  # it swallowed the handler's exception: the attempt failed
            log.error(
                "hook %s.around_execute swallowed the handler's exception: the attempt still fails",
                hook_name(hook),
            )
            raise nxt.error
        del res  # the handler's result stands, whatever the hook returned
        return nxt.result

    def after_outcome(self, job: Job, outcome: Outcome) -> None:
        for h in self.outcome:
            try:
                h.after_outcome(job, outcome)
            except Exception:
                _failed(h, "after_outcome")

    def worker_started(self, worker: Worker) -> None:
        for h in self.start:
            try:
                h.on_worker_start(worker)
            except Exception:
                _failed(h, "on_worker_start")

    def worker_stopped(self, worker: Worker) -> None:
        for h in self.stop:
            try:
                h.on_worker_stop(worker)
            except Exception:
                _failed(h, "on_worker_stop")

    # -- events -----------------------------------------------------------------------------------

    def emit(self, event: str, job: Job, data: Any = None) -> None:
        """Hand an event to every ``on_event`` hook (callers check ``bus.event`` first, so an
        event nobody hears costs nothing to build)."""
        from .backends.base import Outcome

        if isinstance(data, Outcome):
            data = {"result": data.result, "error": data.error, "retry_in": data.retry_in}
        for h in self.event:
            try:
                h.on_event(event, job, data)
            except Exception:
                _failed(h, "on_event")


def _failed(hook: object, method: str) -> None:
    """One record per failure: the hook and the method, with the hook's traceback."""
    log.exception("hook %s.%s failed; skipped for this call", hook_name(hook), method)


def log_task_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("async listener failed", exc_info=task.exception())
