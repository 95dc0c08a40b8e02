"""`Listeners`: the in-process listeners of an app (``app.on(event, fn)``), called when this
process sees an event (a producer's ``enqueued``/``cancelled``, a worker's ``started``,
``progress`` and outcomes). Not the durable event log (`Conveyor.events`): nothing is stored,
and a listener sees only its own process. A failing listener is logged and never disturbs a job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .backends.base import Outcome
from .job import Job

log = logging.getLogger("conveyor")
Listener = Callable[..., Any]


class Listeners:
    """Listeners by event name ("*": every event). False while none was ever registered, so
    the hot paths skip building an event's data (``if listeners: listeners.emit(...)``)."""

    def __init__(self) -> None:
        self._by_event: dict[str, list[Listener]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_event)

    def on(self, event: str, fn: Listener) -> Callable[[], None]:
        """Call ``fn(event, job, data)`` on ``event``; returns a function that unsubscribes."""
        self._by_event.setdefault(event, []).append(fn)
        return lambda: self._by_event.get(event, []).remove(fn)

    def emit(self, event: str, job: Job, data: Any = None) -> None:
        """Call the listeners of ``event`` and of "*"; a coroutine one runs as a task."""
        if isinstance(data, Outcome):
            data = {"result": data.result, "error": data.error, "retry_in": data.retry_in}
        for key in (event, "*"):
            for fn in self._by_event.get(key, ()):
                try:
                    res = fn(event, job, data)
                    if asyncio.iscoroutine(res):
                        task = asyncio.ensure_future(res)
                        task.add_done_callback(_log_listener_error)
                except Exception:
                    log.exception("listener %r for %r failed", fn, event)


def _log_listener_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("async listener failed", exc_info=task.exception())
