"""A worker's background services (lease heartbeat, worker registry, recovery and retention, the
scheduler of cron and periodic jobs, the hand-back of jobs claimed ahead that no slot took in time) and the backend steps of its shutdown,
each bounded in time so that stopping always stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Any

from ..backends.base import TaskInfo, WorkerInfo
from ..outage import Outage
from .slots import STALE

if TYPE_CHECKING:
    from ..catalog import Catalog
    from .runtime import Worker

log = logging.getLogger("conveyor.worker")

REGISTRY_INTERVAL = 5.0
RETENTION_INTERVAL = 10.0
EVENTS_TRIM_INTERVAL = 30.0
MAX_HEARTBEAT = 2.0
STOP_STEP = 5.0
"""Seconds one backend call of a shutdown may take before the worker gives up on it."""
STOP_STEP_AFTER_HANG = 1.0
"""The same once a call of this shutdown hung: the store is not answering."""


async def bounded(task: asyncio.Future[Any], timeout: float = STOP_STEP) -> bool:
    """Wait up to ``timeout`` for ``task`` without cancelling it; True if it is done."""
    done, _ = await asyncio.wait([task], timeout=timeout)
    return bool(done)


def task_infos(catalog: Catalog, queues: list[str]) -> list[TaskInfo]:
    """The tasks a worker on ``queues`` runs, as it publishes them: name, queue and payload
    JSON Schema. Tasks only declared here (defined elsewhere) are not published: this worker
    cannot run them."""
    return [
        TaskInfo(t.name, t.options.queue, t.payload_schema)
        for t in catalog.tasks.values()
        if not t.declared and t.options.queue in queues
    ]


def worker_info(w: Worker, tasks: list[TaskInfo]) -> WorkerInfo:
    """What the worker reports with each registry heartbeat."""
    return WorkerInfo(
        w.id, w.queues, w.capacity, len(w.running), os.getpid(), socket.gethostname(),
        w._started_at, running=sorted({job_id for job_id, _ in w.running}),
        processed=w.processed, failed=w.failed, tasks=tasks,
    )  # fmt: skip


class Services:
    """Periodic tasks of one worker, the hand-back of its jobs claimed ahead that no slot took,
    and the bounded backend steps of its shutdown. Every periodic task is safe to run in every
    worker at once: the backend operations are atomic and idempotent."""

    def __init__(self, worker: Worker, maintenance_interval: float) -> None:
        self._worker = worker
        self._maintenance_interval = maintenance_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._lease_check = asyncio.Event()
        self._closing = False
        self._published: list[TaskInfo] | None = None
        # The worker's loops (these and the pump) report backend trouble here: an outage is
        # two log lines, not a traceback per retry.
        self.outage = Outage(log, f"worker {worker.id}")
        self._handing: set[asyncio.Task[None]] = set()
        self._hung = False  # a backend call of this shutdown timed out
        self._stale_timer: asyncio.TimerHandle | None = None
        self._stale_due = 0.0  # monotonic time the stale check is due
        # Queues whose acknowledged outcomes created jobs: their outboxes are forwarded after
        # the round (`forward_soon`); every queue's is swept each maintenance pass.
        self.handed_over: set[str] = set()

    def info(self) -> WorkerInfo:
        if self._published is None:  # schemas are worked out once per worker
            self._published = task_infos(self._worker.catalog, self._worker.queues)
        return worker_info(self._worker, self._published)

    def start(self) -> None:
        self._closing = False
        self._lease_check = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="conveyor-heartbeat"),
            asyncio.create_task(self._registry(), name="conveyor-registry"),
            asyncio.create_task(self._maintenance(), name="conveyor-maintenance"),
        ]
        w = self._worker
        if w.run_scheduler and w.catalog.schedules:  # cron and periodic jobs (scheduler.py)
            from .scheduler import Scheduler

            sched = Scheduler(w.backend, w.catalog, on_fired=w.notify_work,
                              who=f"worker {w.id} scheduler")  # fmt: skip
            run = sched.run(lambda: self._closing)
            self._tasks.append(asyncio.create_task(run, name="conveyor-scheduler"))

    async def close(self) -> None:
        """The end of a shutdown: stop the periodic tasks, close the listener, unregister. Each
        step is bounded and a failure is logged; never raises."""
        w = self._worker
        if self._stale_timer is not None:
            self._stale_timer.cancel()
        if self._handing:
            await asyncio.wait(list(self._handing), timeout=STOP_STEP)
        # A flag as well as cancel(): a driver that turns CancelledError into its own error
        # (seen with redis-py mid-command) must not keep a loop alive.
        self._closing = True
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_STEP)
        self._tasks = []
        w.env.detach(w)
        if w._listener is not None:
            await self._step("closing the wake-up listener", w._listener.close())
        await self._step("unregistering", w.backend.remove_worker(w.id))

    def hung(self) -> None:
        """A step of this shutdown timed out: give the later ones less time."""
        self._hung = True

    async def _step(self, what: str, call: Awaitable[Any]) -> tuple[bool, Any]:
        """Run one backend call of a shutdown within STOP_STEP (less once one hung): (True,
        result), or (False, None) with the failure logged."""
        limit = STOP_STEP_AFTER_HANG if self._hung else STOP_STEP
        try:
            async with asyncio.timeout(limit):
                return True, await call
        except TimeoutError:
            self._hung = self._worker._stopping
            log.error("worker %s: %s took over %gs; gave up", self._worker.id, what, limit)
        except Exception:
            log.exception("worker %s: %s failed", self._worker.id, what)
        return False, None

    async def hand_back(
        self, keys: Sequence[tuple[str, int]], what: str, level: int = logging.WARNING
    ) -> None:
        """Return held attempts to the queue uncharged (`release_jobs`). If the store fails,
        they come back when their leases expire (a stall is counted then)."""
        w = self._worker
        release = w.backend.release_jobs(w.id, keys)
        ok, n = await self._step(f"returning {len(keys)} {what} jobs to the queue", release)
        if ok:
            log.log(level, "worker %s: returned %d %s jobs to the queue", w.id, n, what)
        else:
            log.error("worker %s: %d %s jobs come back to the queue when their leases expire",
                      w.id, len(keys), what)  # fmt: skip

    def give_back(self, keys: Sequence[tuple[str, int]], what: str) -> asyncio.Task[None]:
        """Hand held attempts back in the background (the worker no longer holds them); a
        shutdown waits for it."""
        t = asyncio.create_task(self.hand_back(keys, what, logging.INFO))
        self._handing.add(t)
        t.add_done_callback(self._handing.discard)
        return t

    @property
    def handing_back(self) -> bool:
        """Whether a hand-back is still on its way to the store."""
        return bool(self._handing)

    # -- jobs claimed ahead of free slots (see `slots.py`) -------------------------------------

    def watch_buffers(self) -> None:
        """A job was buffered: check within STALE that it (and any other) gets a slot soon."""
        if self._stale_timer is None:
            self._check_stale_in(STALE)

    def _check_stale_in(self, delay: float) -> None:
        self._stale_due = monotonic() + delay
        self._stale_timer = asyncio.get_running_loop().call_later(delay, self._check_stale)

    def _check_stale(self) -> None:
        """Hand back (in the background) the buffered jobs no slot took in time."""
        self._stale_timer = None
        w = self._worker
        if w._stopping:
            return  # the shutdown hands back every job it holds
        stale, due = w._lanes.stale(self._stale_due)
        if stale:
            for r in stale:
                r.released = True
                del w.running[r.key]
            self.give_back([r.key for r in stale], "claimed-ahead")
        if due is not None:
            self._check_stale_in(due)

    async def flush(self) -> None:
        """Store the outcomes not yet acknowledged. If the store fails, those jobs run again
        once their leases expire (at least once)."""
        w = self._worker
        while w._acks:
            acks, w._acks = w._acks, []
            ok, lost = await self._step(f"acknowledging {len(acks)} outcomes",
                                        w.backend.finish_jobs(w.id, acks))  # fmt: skip
            if not ok:
                log.error("worker %s: %d outcomes not stored; those jobs run again when their "
                          "leases expire", w.id, len(acks) + len(w._acks))  # fmt: skip
                w._acks = []
                return
            w._report_lost(lost)

    def _failed(self, what: str, exc: Exception) -> None:
        """Report a failed iteration, unless we are stopping (then end the loop)."""
        task = asyncio.current_task()
        if self._closing or (task is not None and task.cancelling()):
            raise asyncio.CancelledError
        self.outage.failed(exc, what)

    def check_leases_soon(self) -> None:
        """A job may have been cancelled: renew leases now and learn which ones we lost."""
        self._lease_check.set()

    def _interval(self) -> float:
        return min(MAX_HEARTBEAT, self._worker.min_lease / 3)

    async def _heartbeat(self) -> None:
        w = self._worker
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval()):
                    await self._lease_check.wait()
            self._lease_check.clear()
            held = [r.key for r in w.running.values() if not r.lost]
            if not held:
                continue
            try:
                lost = set(await w.backend.extend_leases(w.id, held))
            except Exception as exc:
                self._failed("lease renewal", exc)
                continue
            self.outage.back()
            if lost:
                w.drop_lost([k for k in held if k[0] in lost])

    async def _registry(self) -> None:
        w = self._worker
        while not self._closing:
            await asyncio.sleep(REGISTRY_INTERVAL)
            try:
                await w.backend.worker_heartbeat(w.info())
            except Exception as exc:
                self._failed("registry heartbeat", exc)
            else:
                self.outage.back()

    def forward_soon(self) -> None:
        """After a round that stored outcomes with jobs to create: deliver them now (one more
        round trip on Redis, where they wait in the finishing queue's outbox; nothing on
        SQLite). A failure is left to the maintenance sweep."""
        if not self.handed_over:
            return
        queues, self.handed_over = sorted(self.handed_over), set()
        t = asyncio.create_task(self._forward(queues))
        self._handing.add(t)
        t.add_done_callback(self._handing.discard)

    async def _forward(self, queues: list[str]) -> None:
        try:
            await self._worker.backend.forward_handovers(queues)
        except Exception as exc:
            self._failed("forwarding hand-overs", exc)

    async def _maintenance(self) -> None:
        w = self._worker
        backend, catalog = w.backend, w.catalog
        since_retention = RETENTION_INTERVAL  # run retention right away
        since_trim = 0.0
        while not self._closing:
            try:
                recovered = await backend.recover_expired()
                for rec in recovered:
                    log.warning("job %s: lease expired, now %s", rec.job_id, rec.state.value)
                # Awaiting jobs past their deadline (human in the loop): on_timeout, once.
                expired = await backend.expire_awaiting()
                for rec in expired:
                    log.info("job %s: no input by its deadline, now %s", rec.job_id,
                             rec.state.value)  # fmt: skip
                if recovered or expired:
                    w.notify_work()
                # Jobs that outcomes created but a worker killed before delivering them left
                # in its queues' outboxes (Redis): delivered here by any worker of the queue.
                if await backend.forward_handovers(w.queues):
                    w.notify_work()
                # Batches whose last member ended here but whose callbacks are not stored yet
                # (the process that ended it died first; Redis only: SQLite fires in the
                # member's own transaction).
                if await backend.settle_batches(list(w.queues)):
                    w.notify_work()
                if since_retention >= RETENTION_INTERVAL:
                    since_retention = 0.0
                    for queue in w.queues:
                        await backend.apply_retention(queue, catalog.retention_for(queue))
                if since_trim >= EVENTS_TRIM_INTERVAL:
                    since_trim = 0.0
                    await backend.trim_events(catalog.event_retention)
            except Exception as exc:
                self._failed("maintenance", exc)
            else:
                self.outage.back()
            await asyncio.sleep(self._maintenance_interval)
            since_retention += self._maintenance_interval
            since_trim += self._maintenance_interval
