"""The observing and housekeeping side of the producer API (stats, workers, cleanup, events),
split out of `producer.py`: `Producer` mixes it in; written once against the `Backend`
protocol like the rest of it."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from .backends.base import Backend, Event, EventFilter, QueueStats, WorkerInfo
from .errors import ValidationError
from .job import JobState

if TYPE_CHECKING:
    from .catalog import Catalog
    from .forwarder import Spooler


class Observing:
    """Reads of queues, workers and the event log, and the cleanup of finished jobs."""

    backend: Backend
    catalog: Catalog
    _spooler: Spooler | None

    if TYPE_CHECKING:

        async def open(self) -> None: ...

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        """Per queue: counts by state, live workers and their concurrency, run time, rate, and
        backpressure (``max_queued``, ``full``)."""
        await self.open()
        wanted = list(queues) if queues else None
        out = await self.backend.stats(wanted)
        if wanted is None:
            for q in self.catalog.queues():
                if q not in out:
                    out.update(await self.backend.stats([q]))
        for q, st in out.items():  # this app's own setting is the one its producers enforce
            if q in self.catalog.max_queued:
                st.max_queued = self.catalog.max_queued[q]
        if self._spooler is not None:
            await self._spooler.add_depth(out)
        return dict(sorted(out.items()))

    async def workers(self) -> builtins.list[WorkerInfo]:
        """The live workers of this backend (any process, any host), by id: who and where they
        are, what they serve and run, what they have done. A worker that crashed drops out
        when its heartbeat expires (``WorkerInfo.ttl``)."""
        await self.open()
        return await self.backend.list_workers()

    async def cleanup(
        self,
        older_than: float | timedelta = 0.0,
        states: Sequence[JobState | str] = (
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
        ),
    ) -> int:
        """Delete finished jobs that ended more than ``older_than`` ago. Returns the count."""
        secs = (
            older_than.total_seconds() if isinstance(older_than, timedelta) else float(older_than)
        )
        if not secs >= 0 or secs == float("inf"):  # also refuses NaN
            raise ValidationError(
                f"older_than must be a finite number >= 0, got {secs}", field="older_than"
            )
        try:
            sts = [JobState(s) for s in states]
        except ValueError as exc:
            raise ValidationError(str(exc), field="states") from None
        bad = [s.value for s in sts if not s.is_final]
        if bad:
            raise ValidationError(f"cleanup only removes finished jobs, not {bad}", field="states")
        await self.open()
        return await self.backend.cleanup(secs, sts)

    async def events(
        self, since: str | None = None, *, follow: bool = True, poll: float = 0.1,
        queue: str | None = None, tenant: str | None = None, job_id: str | None = None,
    ) -> AsyncIterator[Event]:  # fmt: skip
        """Events from the durable log committed after the cursor ``since``, across all
        processes, each exactly once, oldest first (on Redis: per queue in commit order, queues
        merged by time). ``since``: an event's ``cursor`` to resume after it, ``"oldest"``
        for everything the log still holds, ``"0"`` for everything ever logged (reporting
        what retention deleted), None for only new events. With
        ``follow`` it keeps waiting for more. ``queue``, ``tenant`` and ``job_id`` filter
        without reading the whole log; resume a filtered read with the same filters.

        Raises `EventsTrimmed` when retention deleted events after ``since`` before they were
        read; its ``resume`` cursor continues past the gap."""
        if since is not None and not isinstance(since, str):
            raise ValidationError("since must be an event cursor (a string)", field="since")
        await self.open()
        where = EventFilter(queue, tenant, job_id)
        cursor = await self.backend.last_event_cursor() if since is None else since
        while True:
            page = await self.backend.read_events(cursor, 1000, where if where else None)
            for ev in page.events:
                yield ev
            cursor = page.cursor
            if not page.more:
                if not follow:
                    return
                await asyncio.sleep(poll)
