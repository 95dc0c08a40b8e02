"""`ApiMetrics`: what ``GET /metrics`` (and ``conveyor serve --metrics-port``) serves.

One prometheus-client registry per server holding the backend-wide gauges of
`conveyor.metrics.BackendCollector` (jobs by queue and state, backlog age, live workers, open
breakers) and, when the server runs a worker (``--with-worker``), that worker's
`conveyor.metrics.PrometheusHook` counters (jobs, durations, waits, retries, active jobs).

The gauges are read from the backend when scraped, at most once per `MIN_REFRESH` seconds and
within the server's ``backend_timeout``: a scrape during an outage answers at once with
``conveyor_exporter_up 0`` instead of hanging. N API instances on one backend each serve the
same gauges: scrape one of them (or ``conveyor metrics``), never sum them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..metrics import BackendCollector, PrometheusHook, require_prometheus, serve

if TYPE_CHECKING:
    from ..app import Conveyor

#: Seconds a read of the backend's gauges is reused by the next scrapes.
MIN_REFRESH = 1.0


class ApiMetrics:
    def __init__(self, *, stale_after: float = 60.0) -> None:
        self._prom = require_prometheus()
        self.registry = self._prom.CollectorRegistry()
        self.collector = BackendCollector(stale_after=stale_after)
        self.registry.register(self.collector)
        self.hook: PrometheusHook | None = None
        self._read_at = 0.0

    @property
    def content_type(self) -> str:
        return str(self._prom.CONTENT_TYPE_LATEST)

    def watch_worker(self, app: Conveyor) -> None:
        """Also count what this process's workers run (a hook on ``app``; once)."""
        if self.hook is None:
            self.hook = PrometheusHook(self.registry)
            app.add_hook(self.hook)

    async def refresh(self, app: Conveyor, timeout: float) -> None:
        """Read the backend's gauges unless read within `MIN_REFRESH` s; ``up`` goes 0 when the
        backend does not answer within ``timeout`` (the last snapshot ages out on its own)."""
        now = time.monotonic()
        if now - self._read_at < MIN_REFRESH:
            return
        self._read_at = now
        try:
            async with asyncio.timeout(timeout):
                await self.collector.refresh(app)
        except TimeoutError:
            self.collector.up = False

    def render(self) -> bytes:
        return bytes(self._prom.generate_latest(self.registry))

    @contextlib.asynccontextmanager
    async def serving(
        self, app: Conveyor, port: int, addr: str, interval: float = 15.0
    ) -> AsyncIterator[int]:
        """Also serve the registry at ``http://addr:port/metrics`` (no key: bind it where only
        Prometheus reaches), refreshing the gauges every ``interval`` s. Yields the port."""
        server, bound = serve(self.registry, port, addr)
        stop = asyncio.Event()
        task = asyncio.create_task(self.collector.run(app, interval, stop))
        try:
            yield bound
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await task
            server.shutdown()


def api_metrics() -> Any:
    """An `ApiMetrics`, or None when prometheus-client is not installed (``/metrics`` then
    answers 503 naming the extra)."""
    from ..errors import ConfigurationError

    try:
        return ApiMetrics()
    except ConfigurationError:
        return None
