"""`Listeners`: the in-process listeners of an app (``app.on(event, fn)``), a thin hook on
`Hooks.on_event`. Called when this process sees an event (a producer's ``enqueued``/``cancelled``,
a worker's ``started``, ``progress`` and outcomes). Not the durable event log
(`Conveyor.events`): nothing is stored, and a listener sees only its own process. A failing
listener is logged and never disturbs a job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .hooks import Hooks, log_task_error
from .job import Job

if TYPE_CHECKING:
    from .hooks import HookBus

log = logging.getLogger("conveyor")
Listener = Callable[..., Any]


class Listeners(Hooks):
    """Listeners by event name ("*": every event). False while none is registered: the bus then
    leaves it out, so an app without listeners or hooks builds no event data."""

    def __init__(self, bus: HookBus) -> None:
        self._bus = bus
        self._by_event: dict[str, list[Listener]] = {}

    def __bool__(self) -> bool:
        return any(self._by_event.values())

    def on(self, event: str, fn: Listener) -> Callable[[], None]:
        """Call ``fn(event, job, data)`` on ``event``; returns a function that unsubscribes."""
        self._by_event.setdefault(event, []).append(fn)
        self._bus.refresh()

        def off() -> None:
            fns = self._by_event.get(event, [])
            if fn in fns:
                fns.remove(fn)
            self._bus.refresh()

        return off

    def on_event(self, event: str, job: Job, data: Any) -> None:
        """Call the listeners of ``event`` and of "*"; a coroutine one runs as a task."""
        for key in (event, "*"):
            for fn in self._by_event.get(key, ()):
                try:
                    res = fn(event, job, data)
                    if asyncio.iscoroutine(res):
                        task = asyncio.ensure_future(res)
                        task.add_done_callback(log_task_error)
                except Exception:
                    log.exception("listener %r for %r failed", fn, event)
