"""`ApiServer`: a real uvicorn serving `conveyor.server.create_app` on a free loopback port, in a
thread with its own event loop and its own `Conveyor` on the test's store (another "process" as
far as the backend is concerned). Tests talk to it over real HTTP with httpx."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from conveyor import Conveyor
from conveyor.server import ServerSettings, create_app

START_TIMEOUT = 20.0


class ApiServer:
    def __init__(
        self,
        make_conveyor: Callable[[], Conveyor],
        settings: ServerSettings | None = None,
        *,
        worker: dict[str, Any] | None = None,
    ) -> None:
        self.conveyor = make_conveyor()
        self.settings = settings or ServerSettings()
        self.api = create_app(self.conveyor, self.settings, worker=worker)
        config = uvicorn.Config(
            self.api, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
            timeout_graceful_shutdown=5,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="api-server", daemon=True)
        self._error: BaseException | None = None
        self.url = ""
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()/stop()
            self._error = exc

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def start(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the API server did not start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("the API server did not start in time")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        # Open event streams end now (as on SIGTERM under `conveyor serve`), not at uvicorn's
        # graceful-shutdown timeout: the server has no signal handlers in a thread.
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                self.loop.call_soon_threadsafe(self.api.state.event_hub.close)
        self.server.should_exit = True
        self._thread.join(timeout=15)
        if self._thread.is_alive():
            raise RuntimeError("the API server did not stop in time")
