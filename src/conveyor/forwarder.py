"""`Spooler`: an app's spool (``Conveyor(url, spool="sqlite:///spool.db")``): enqueues the
backend cannot take go to a local file (`spool.py`), and a forwarder stores them, in order, when
the backend is back.

- **Only when unreachable.** An enqueue is spooled only when the backend raised
  `BackendUnavailable` (dead, frozen past its deadline, or an answer that never came: the
  outcome is unknown, so the job is spooled with the id it was sent with). A bad payload, an
  unknown task or any other refusal raises as usual and spools nothing.
- **Order.** Spooled jobs are forwarded oldest first, an ``enqueue_many`` in one backend call.
  While this process has jobs in the spool, its new enqueues join the spool behind them rather
  than overtake them.
- **Never twice.** A row leaves the spool only after the backend stored it; a job id the
  backend already holds is not stored again (`Backend.enqueue_jobs`). So a forwarder killed
  between the two steps, or two forwarders sending the same rows (a producer and its workers
  sharing the file), store each job once.
- **Where it runs.** In the producer, started by the first spooled enqueue; in every worker of
  an app with a spool, from the start (the file may hold another process's jobs). It polls the
  file every `POLL` seconds when idle and backs off from 0.05 s to 2 s while the backend is
  down, logging the outage once (`outage.py`). ``app.close()`` stops it; jobs left in the spool
  are counted in the log and forwarded by the next process that opens the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .backends.base import EnqueueResult, NewJob, QueueStats
from .errors import BackendUnavailable, JobNotFound
from .job import Job
from .outage import Outage
from .spool import Spool

if TYPE_CHECKING:
    from .producer import Producer

log = logging.getLogger("conveyor.spool")
CHUNK = 500
POLL = 1.0
MIN_BACKOFF = 0.05
MAX_BACKOFF = 2.0
STOP_TIMEOUT = 5.0


class Spooler:
    """The producer's side of a spool and its forwarder (one per app)."""

    def __init__(self, app: Producer, url: str) -> None:
        self.app = app
        self.spool = Spool(url)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._spooled = 0  # jobs this process spooled, not yet seen leave the spool
        self._generation = 0  # bumped by every put: an empty peek is trusted only if unchanged
        # Producers and the forwarder report here: an outage is two log lines, not one per job.
        self._outage = Outage(log, f"spool {self.spool.path}", "the backend")

    # -- producing --------------------------------------------------------------------------------

    async def store(
        self,
        jobs: list[NewJob],
        group: str | None = None,
        max_queued: Mapping[str, int] | None = None,
    ) -> tuple[EnqueueResult, bool]:
        """Store jobs in the backend, or spool them if it is unreachable (or if this process
        still has jobs in the spool). Returns (result, spooled). ``max_queued`` is enforced
        by the backend when it answers; a spooled job was accepted, so it is forwarded later
        without a limit (refusing it then would lose it)."""
        if not self._spooled:
            try:
                await self.app.open()
                return await self.app.backend.enqueue_jobs(jobs, max_queued=max_queued), False
            except BackendUnavailable as exc:
                self._outage.lost(exc)  # logged once: "lost connection ...; retrying"
        now = time.time()
        self._generation += 1
        ids, created = await self.spool.put(jobs, group or jobs[0].id, now)
        self._spooled += sum(created)
        self.start()
        if self._wake is not None:
            self._wake.set()
        return EnqueueResult(ids, created, now), True

    async def get(self, job_id: str, tenant: str | None) -> Job:
        """A job from the spool (not yet forwarded) or else from the backend. The spool is read
        first: a row leaves it only once the backend holds the job, so no job falls between."""
        row = await self.spool.find(job_id)
        if row is not None and (tenant is None or row.job.tenant == tenant):
            return row.as_job(time.time())
        await self.app.open()
        job = await self.app.backend.get_job(job_id, tenant=tenant)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def add_depth(self, stats: dict[str, QueueStats]) -> None:
        """Fill in ``QueueStats.spooled``, adding queues only the spool holds jobs of."""
        for queue, n in (await self.spool.depth()).items():
            stats.setdefault(queue, QueueStats(queue, {})).spooled = n

    # -- forwarding -------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the forwarder on the running loop, unless it runs already."""
        if self._task is not None and not self._task.done():
            return
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._forward(), name="conveyor-spool-forwarder"
        )

    async def forward_once(self) -> int:
        """Forward the oldest spooled jobs (one chunk, whole groups) in one backend call.
        Returns how many left the spool; raises the backend's error (nothing is lost then)."""
        generation = self._generation
        rows = await self.spool.peek(CHUNK)
        if not rows:
            if generation == self._generation:
                self._spooled = 0
            return 0
        await self.app.open()
        now = time.time()
        await self.app.backend.enqueue_jobs([r.to_send(now) for r in rows])
        # Killed here, the rows stay and are sent again: the backend stores each id once.
        await self.spool.remove([r.job.id for r in rows])
        self._spooled = max(0, self._spooled - len(rows))
        self.app._wake_workers()
        return len(rows)

    async def _forward(self) -> None:
        outage = self._outage
        backoff = MIN_BACKOFF
        wake = self._wake
        assert wake is not None
        while True:
            try:
                n = await self.forward_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outage.failed(exc, "forwarding spooled jobs")
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            outage.back()
            backoff = MIN_BACKOFF
            if n:
                log.info("forwarded %d spooled jobs", n)
                continue
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL):
                    await wake.wait()

    async def close(self) -> None:
        """Stop the forwarder (on whichever loop runs it); report what the spool still holds."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            owner = task.get_loop()
            if owner is asyncio.get_running_loop():
                await _cancel(task)
            elif owner.is_running():  # the sync facade's loop
                done = asyncio.run_coroutine_threadsafe(_cancel(task), owner)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(done), STOP_TIMEOUT)
        if self.spool.opened:
            with contextlib.suppress(Exception):
                left = sum((await self.spool.depth()).values())
                if left:
                    log.warning(
                        "%d jobs wait in the spool %s: the next process that opens it (a "
                        "producer or a worker of this app) forwards them", left, self.spool.path,
                    )  # fmt: skip
        await asyncio.to_thread(self.spool.close)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
