"""Backend-wide gauges, read from ``stats()`` and the worker registry by one process
(``conveyor metrics --port``), so that N workers never multiply them::

    conveyor_queue_jobs{queue,state}        jobs by state (the backend's maintained counts)
    conveyor_queue_oldest_seconds{queue}    backlog age: the next job to claim waited this long
    conveyor_queue_workers{queue}           live workers serving the queue
    conveyor_workers                        live workers (heartbeat within their ttl)
    conveyor_breaker_open{queue,gate}       1 while a breaker gate is open (0 closed/half-open)
    conveyor_exporter_up                    1 when the last read of the backend succeeded
    conveyor_exporter_last_read_timestamp_seconds

A snapshot is read every ``interval`` seconds off the scrape path (a scrape never waits for the
backend); a snapshot older than ``stale_after`` is not served, so a stuck exporter shows as
missing gauges (and ``conveyor_exporter_up`` 0), never as frozen values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backends.base import QueueStats, WorkerInfo
from ..job import JobState
from .support import require_prometheus

if TYPE_CHECKING:
    from ..producer import Producer

log = logging.getLogger("conveyor.metrics")


@dataclass(slots=True)
class Snapshot:
    stats: dict[str, QueueStats]
    workers: list[WorkerInfo]
    at: float  # time.time() of the read


class BackendCollector:
    """A prometheus-client collector serving the latest `Snapshot` of a backend. Register it
    on a registry, then `refresh` it periodically (`run`)."""

    def __init__(self, *, stale_after: float = 60.0) -> None:
        require_prometheus()
        self.snapshot: Snapshot | None = None
        self.stale_after = stale_after
        self.up = False

    async def refresh(self, app: Producer) -> None:
        """Read stats and live workers once; on failure keep ``up`` False (logged at WARNING:
        the exporter itself keeps running through a backend outage)."""
        try:
            stats = await app.stats()
            workers = await app.workers()
        except Exception as exc:
            self.up = False
            log.warning("metrics exporter: reading the backend failed: %s: %s",
                        type(exc).__name__, exc)  # fmt: skip
            return
        self.snapshot = Snapshot(stats, workers, time.time())
        self.up = True

    async def run(self, app: Producer, interval: float, stop: asyncio.Event) -> None:
        """Refresh every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            await self.refresh(app)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

    def describe(self) -> list[Any]:
        return []  # no fixed families: the registry must not call collect() at registration

    def collect(self) -> Iterator[Any]:
        require_prometheus()
        from prometheus_client.core import GaugeMetricFamily as gauge

        snap = self.snapshot
        fresh = snap is not None and time.time() - snap.at <= self.stale_after
        yield gauge("conveyor_exporter_up", "1 when the last read of the backend succeeded.",
                    value=float(self.up and fresh))  # fmt: skip
        if snap is None or not fresh:
            return
        yield gauge("conveyor_exporter_last_read_timestamp_seconds",
                    "When the exporter last read the backend.", value=snap.at)  # fmt: skip
        jobs = gauge("conveyor_queue_jobs", "Jobs by state.", labels=("queue", "state"))
        oldest = gauge("conveyor_queue_oldest_seconds",
                       "Seconds the queue's next job to claim has been ready (0: none queued).",
                       labels=("queue",))  # fmt: skip
        qworkers = gauge("conveyor_queue_workers", "Live workers serving the queue.",
                         labels=("queue",))  # fmt: skip
        breaker = gauge("conveyor_breaker_open", "1 while a breaker gate is open.",
                        labels=("queue", "gate"))  # fmt: skip
        states = [s.value for s in JobState]
        for q, st in sorted(snap.stats.items()):
            for state in states:
                jobs.add_metric((q, state), float(st.counts.get(state, 0)))
            oldest.add_metric((q,), float(st.oldest_seconds or 0.0))
            qworkers.add_metric((q,), float(st.workers))
            for gate in st.limits:
                if "state" in gate:  # a breaker (rate and concurrency gates have none)
                    breaker.add_metric((q, str(gate["name"])), float(gate["state"] == "open"))
        yield jobs
        yield oldest
        yield qworkers
        yield breaker
        yield gauge("conveyor_workers", "Live workers.", value=float(len(snap.workers)))
