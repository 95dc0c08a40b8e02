"""`EventHub`: one watcher of the event log per server process, shared by every open event
stream (``GET /v1/events``), so that an idle stream costs no backend call at all.

While at least one stream is open, the hub asks the backend for `Backend.last_event_cursor`
every ``settings.sse_poll`` seconds (one cheap read: SQLite's last event id, Redis's stream heads)
and, when it moved, wakes every stream, which then reads its own filtered page. With N idle
streams the backend sees one read per interval instead of N; with none the hub's task is not
running. A stream takes the hub's current `asyncio.Event` *before* it reads, so an event
committed after its read always wakes it (never a missed wake-up, at most one extra read).

`close` (server shutdown) wakes every stream for good: they end at once instead of holding the
server's graceful shutdown until its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import Conveyor

log = logging.getLogger("conveyor.server")


class EventHub:
    """Change notifications of one app's event log for the streams of this process."""

    def __init__(self, conveyor: Conveyor, interval: float, timeout: float) -> None:
        self._conveyor = conveyor
        self.interval = interval
        self.timeout = timeout  # a head read taking longer is skipped (the backend is down)
        self.subscribers = 0
        self.closed = asyncio.Event()  # created unbound: asyncio binds it on first wait
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the watching task is alive (False when no stream is open)."""
        return self._task is not None and not self._task.done()

    def changed(self) -> asyncio.Event:
        """The event set at the next change of the log (take it before reading)."""
        return self._changed

    def subscribe(self) -> None:
        """A stream opened: start watching if it is the first."""
        self.subscribers += 1
        if not self.running and not self.closed.is_set():
            self._task = asyncio.create_task(self._watch(), name="conveyor-event-hub")

    def unsubscribe(self) -> None:
        """A stream ended; the watcher stops by itself after the last one."""
        self.subscribers = max(0, self.subscribers - 1)

    def close(self) -> None:
        """Server shutdown: end every stream now and stop watching. Idempotent."""
        self.closed.set()
        self._changed.set()
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        head: str | None = None
        failing = False
        while self.subscribers > 0 and not self.closed.is_set():
            try:
                async with asyncio.timeout(self.timeout):
                    now = await self._conveyor.backend.last_event_cursor()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage: streams learn it from their own reads
                if not failing:
                    log.warning("event streams: cannot read the event log's head: %r", exc)
                failing = True
                now = None
            if now != head or now is None:
                head = now
                woken, self._changed = self._changed, asyncio.Event()
                woken.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), self.interval)
