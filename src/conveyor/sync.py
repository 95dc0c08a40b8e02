"""`SyncFacade`: the producer API for sync callers (Flask, Django, scripts).

One generic facade, not a sync twin of every method: any coroutine method of the app is run on
a private event loop in a background thread and its result returned. Safe from many threads at
once: their calls run concurrently on that one loop (and wait for a backend connection when all
are busy). A call never touches a worker's state from this loop: the app hands such work to the
worker's own loop (`Worker.notify_cancelled`, `Worker.notify_work`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Conveyor

CLOSE_TIMEOUT = 5.0


class SyncFacade:
    def __init__(self, app: Conveyor) -> None:
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="conveyor-sync", daemon=True)
            t.start()
            self._loop, self._thread = loop, t
        return self._loop

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the facade's loop and return its result."""
        # Submitted under the lock, so `close` either sees the call (and ends it) or comes
        # first (and the call gets a fresh loop): a caller never waits on a stopped loop.
        with self._lock:
            future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        return future.result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        attr = getattr(self._app, name)
        if not inspect.iscoroutinefunction(attr):
            raise AttributeError(f"app.sync.{name}: only the app's async methods have a sync form")

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(attr(*args, **kwargs))

        return call

    def close(self) -> None:
        """Stop the loop. Calls still in flight end with `CancelledError` (not a hang)."""
        with self._lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is None:
            return
        if thread is not threading.current_thread():
            ending = asyncio.run_coroutine_threadsafe(_cancel_all(), loop)
            with contextlib.suppress(Exception):
                ending.result(timeout=CLOSE_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=CLOSE_TIMEOUT)
            if not thread.is_alive():
                loop.close()


async def _cancel_all() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
