"""`SyncFacade`: the producer API for sync callers (Flask, Django, scripts).

One generic facade, not a sync twin of every method: any coroutine method of the app is run on
a private event loop in a background thread and its result returned.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Conveyor


class SyncFacade:
    def __init__(self, app: Conveyor) -> None:
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="conveyor-sync", daemon=True)
                t.start()
                self._loop, self._thread = loop, t
            return self._loop

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the facade's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop()).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        attr = getattr(self._app, name)
        if not inspect.iscoroutinefunction(attr):
            raise AttributeError(f"app.sync.{name}: only the app's async methods have a sync form")

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(attr(*args, **kwargs))

        return call

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            loop.close()
