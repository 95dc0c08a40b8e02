"""`Producer`: the producer API of an app (enqueue, enqueue_many, get, list, cancel, retry, resume,
wait, batch, workflow; stats, workers, cleanup and events come from `observing.Observing`),
written once against the `Backend` protocol.

It reads the app's `Catalog` (tasks, ``max_queued``) and hands jobs the backend cannot take to
the spool when the app has one (`conveyor.forwarder`). `Conveyor` is a `Producer` with a task
registry, a lifecycle and workers; the HTTP API and the CLI call the same methods."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .awaiting import input_json
from .backends.base import (
    Backend,
    EnqueueResult,
    JobPage,
    ListParams,
    NewBatch,
    NewJob,
)
from .batch import Batch
from .errors import (
    ConfigurationError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    ValidationError,
    WorkflowNotFound,
)
from .hooks import Enqueuing, HookBus
from .inputs import PayloadLimits, brief
from .job import Job, JobState
from .meta import decoded_meta, encoded_meta
from .newbatches import batch_of_call, check_members
from .newjobs import EnqueueItem, JobBuilder, job_from_new
from .observing import Observing
from .options import check_lookups, check_options
from .workflows import WorkflowInfo, workflow_info

log = logging.getLogger("conveyor")

if TYPE_CHECKING:
    from .catalog import Catalog
    from .forwarder import Spooler
    from .task import Task
    from .worker.runtime import Worker


class Producer(Observing):
    """Enqueue jobs and read and steer them, on ``backend``, for the tasks of ``catalog``.

    Opens the backend on the first call that needs it. Wakes the workers attached to it (same
    process) when it stores jobs, and tells them of a cancel. The hooks bus (``bus``) sees
    ``before_enqueue`` and the ``enqueued`` and ``cancelled`` events.
    """

    def __init__(
        self,
        backend: Backend,
        catalog: Catalog,
        payload_limits: PayloadLimits,
        bus: HookBus | None = None,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self._builder = JobBuilder(catalog, payload_limits)
        self.bus = bus if bus is not None else HookBus()  # the worker's hooks too
        self._workers: list[Worker] = []
        self._opened = False
        self._spooler: Spooler | None = None

    @property
    def payload_limits(self) -> PayloadLimits:
        """The largest and deepest payload accepted (`conveyor.inputs.PayloadLimits`)."""
        return self._builder.limits

    @payload_limits.setter
    def payload_limits(self, limits: PayloadLimits) -> None:
        self._builder.limits = limits

    async def open(self) -> None:
        """Open the backend (done automatically by the first call that needs it)."""
        if self._opened:
            return
        await self.backend.open()  # idempotent and safe to race
        self._opened = True

    def _attach_worker(self, w: Worker) -> None:
        self._workers.append(w)

    def _detach_worker(self, w: Worker) -> None:
        if w in self._workers:
            self._workers.remove(w)

    def _wake_workers(self) -> None:
        for w in tuple(self._workers):  # a copy: producers may run in other threads (app.sync)
            w.notify_work()

    def _before_enqueue(self, jobs: list[NewJob]) -> None:
        """Show the jobs to the ``before_enqueue`` hooks and store the meta they set."""
        seen = [
            Enqueuing(nj.id, nj.queue, nj.task, nj.tenant, nj.batch, nj.priority, nj.delay,
                      decoded_meta(nj.meta))
            for nj in jobs
        ]  # fmt: skip
        self.bus.before_enqueue(seen)
        for i, (nj, e) in enumerate(zip(jobs, seen, strict=True)):
            try:
                nj.meta = encoded_meta(e.meta)
            except ValidationError as exc:  # a hook's bad meta: the job goes without it
                log.error("hooks set a meta that cannot be stored on jobs[%d] (%s): %s; "
                          "stored without it", i, nj.task, exc)  # fmt: skip

    # -- producing ------------------------------------------------------------------------------

    async def enqueue(
        self,
        task: str | Task,
        payload: dict[str, Any] | None = None,
        *,
        priority: int | str | None = None,
        delay: float | timedelta | datetime | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        max_attempts: int | None = None,
        meta: dict[str, Any] | None = None,
        connection: Any = None,
    ) -> Job:
        """Validate and store one job. With an ``idempotency_key`` this tenant (or, without
        ``tenant``, a tenant-less job) already used in the task's queue, that job is returned and
        nothing new is stored. ``meta``: a small JSON object stored with the job and returned
        on `Job.meta` (context such as a trace id; not passed to the handler).

        ``connection``: transactional enqueue (PostgreSQL): the caller's psycopg connection
        (``AsyncConnection``; a sync ``Connection`` through ``app.sync``). The job is written
        inside the caller's open transaction: it exists if and only if that transaction
        commits, and workers are woken when it does. `ConfigurationError` on other backends."""
        self._check_connection(connection)
        t = self.catalog.lookup(task)
        prio, secs = check_options(
            priority, delay, idempotency_key, tenant, max_attempts, time.time()
        )
        nj = self._builder.new_job(
            t, payload, prio, secs, idempotency_key, tenant, max_attempts, None
        )
        if meta is not None:
            nj.meta = encoded_meta(meta)
        if self.bus.enqueue:
            self._before_enqueue([nj])
        # With on_event hooks a worker of this process may start the job before this call
        # returns: `_store_telling` has the bus hold its events until ``enqueued``.
        store = self._store_telling if self.bus.event else self._store
        res, spooled = await store([nj], None, None, connection)
        self._wake_workers()
        if not res.created[0]:
            existing = await self._existing(res.ids[0], connection)
            existing.created = False
            return existing
        job = job_from_new(nj, res.now)
        job.spooled = spooled
        job.created = True
        return job

    async def enqueue_many(
        self,
        items: Iterable[EnqueueItem],
        *,
        priority: int | str | None = None,
        delay: float | timedelta | datetime | None = None,
        tenant: str | None = None,
        batch: str | None = None,
        on_complete: Any = None,
        on_success: Any = None,
        batch_ttl: float | timedelta | None = None,
        connection: Any = None,
    ) -> Batch:
        """Store many jobs atomically (all or none) in one round trip; returns a `Batch` handle.

        Each item is ``(task, payload)`` or a dict with ``task``, ``payload`` and optionally
        ``priority``, ``delay``, ``idempotency_key``, ``tenant``, ``max_attempts``, ``meta``.

        Callbacks: ``on_complete`` (a task name, a `Task`, or a dict with ``task`` and
        optionally ``priority``, ``max_attempts``, ``meta``) is enqueued once when every member
        has ended (completed, failed for good or cancelled); ``on_success`` only if they all
        completed. Either gives the batch a durable record kept ``batch_ttl`` seconds (default
        7 days) after the callbacks fired. ``batch``: add the items to that open batch of this
        ``tenant`` instead (`BatchNotFound`, or `BatchClosed` once its callbacks fired).
        ``connection``: transactional enqueue, as for `enqueue`.
        """
        self._check_connection(connection)
        now = time.time()
        prio, secs = check_options(priority, delay, None, tenant, None, now)
        batch_id, record = batch_of_call(self._builder, tenant, batch, on_complete, on_success,
                                         batch_ttl, now)  # fmt: skip
        jobs = self._builder.many(items, prio, secs, tenant, batch_id, now)
        if record is not None:
            check_members(record, jobs, tenant)
        if jobs and self.bus.enqueue:
            self._before_enqueue(jobs)
        if not jobs:
            await self.open()
        store = self._store_telling if self.bus.event else self._store
        res, spooled = await store(jobs, batch_id, record, connection) if jobs else (None, False)
        self._wake_workers()
        ids = res.ids if res else []
        handle = Batch(self, batch_id, ids, res.created if res else [],
                       tenant=tenant if record is not None else None)  # fmt: skip
        handle.spooled = spooled
        return handle

    async def _existing(self, job_id: str, connection: Any) -> Job:
        """The job an idempotency key matched; with ``connection``, read in the caller's
        transaction (the match may be a job that transaction enqueued and not yet committed)."""
        if connection is None:
            return await self.get(job_id)
        job = await self.backend.get_job(job_id, connection=connection)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _check_connection(self, connection: Any) -> None:
        if connection is not None and not self.backend.capabilities.transactional_enqueue:
            raise ConfigurationError(
                f"connection= (transactional enqueue) needs the postgres backend; this app "
                f"uses {type(self.backend).__name__}"
            )

    async def _store_telling(
        self,
        jobs: list[NewJob],
        group: str | None,
        record: NewBatch | None = None,
        connection: Any = None,
    ) -> tuple[EnqueueResult, bool]:
        """`_store` for ``on_event`` hooks: an ``enqueued`` event per job created, each before
        any event a worker of this process emits for it (the bus holds those meanwhile)."""
        for nj in jobs:
            self.bus.enqueuing(nj.id)
        made: dict[str, Job] = {}
        try:
            res, spooled = await self._store(jobs, group, record, connection)
            for nj, created in zip(jobs, res.created, strict=True):
                if created:
                    job = made[nj.id] = job_from_new(nj, res.now)
                    job.spooled = spooled
        finally:
            for nj in jobs:
                self.bus.enqueued(nj.id, made.get(nj.id))
        return res, spooled

    async def _store(
        self,
        jobs: list[NewJob],
        group: str | None,
        record: NewBatch | None = None,
        connection: Any = None,
    ) -> tuple[EnqueueResult, bool]:
        """Store jobs in the backend, or in the spool (then True) when it is unreachable. The
        members of a batch record go to the backend only: the record is checked as they are
        stored (a spool could not refuse them once the batch closed). With ``connection``
        the backend writes them with the caller's connection (never the spool: the caller's
        transaction decides)."""
        limits = self.catalog.max_queued or None
        if connection is not None:
            await self.open()
            backend: Any = self.backend
            if record is not None:
                res = await backend.enqueue_batch(
                    record, jobs, max_queued=limits, connection=connection
                )
            else:
                res = await backend.enqueue_jobs(jobs, max_queued=limits, connection=connection)
            return res, False
        if record is not None:
            await self.open()
            return await self.backend.enqueue_batch(record, jobs, max_queued=limits), False
        if self._spooler is not None:
            return await self._spooler.store(jobs, group, limits)
        await self.open()
        return await self.backend.enqueue_jobs(jobs, max_queued=limits), False

    # -- reading and steering jobs ----------------------------------------------------------------

    async def get(self, job_id: str, *, tenant: str | None = None) -> Job:
        """The job with this id; raises JobNotFound (also, when ``tenant`` is given, for
        another tenant's job: a tenant cannot tell it from a job that does not exist). With a
        spool, a job still waiting there is returned from it, ``spooled=True``."""
        check_lookups(job_id=job_id, tenant=tenant)
        if self._spooler is not None:
            return await self._spooler.get(job_id, tenant)
        await self.open()
        job = await self.backend.get_job(job_id, tenant=tenant)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def list(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        batch: str | None = None,
        tenant: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs newest first; pass ``page.next_cursor`` as ``cursor`` for the next page."""
        st: JobState | None = None
        if status is not None:
            try:
                st = JobState(status)
            except ValueError:
                states = ", ".join(s.value for s in JobState)
                raise ValidationError(
                    f"unknown status {brief(status)}: use one of {states}", field="status"
                ) from None
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValidationError(
                f"limit must be an integer 1-1000, got {brief(limit)}", field="limit"
            )
        check_lookups(queue=queue, task=task, batch=batch, tenant=tenant, cursor=cursor)
        await self.open()
        return await self.backend.list_jobs(
            ListParams(st, queue, task, batch, tenant, limit, cursor)
        )

    async def cancel(self, job_id: str, *, tenant: str | None = None) -> Job:
        """Cancel a pending or active job (an active async handler is cancelled where it awaits;
        a sync one sees ``ctx.cancelled``). Idempotent. Raises JobNotFound (also for another
        tenant's job when ``tenant`` is given) / JobStateError."""
        check_lookups(job_id=job_id, tenant=tenant)
        await self.open()
        job = await self.backend.cancel_job(job_id, tenant=tenant)
        for w in tuple(self._workers):
            w.notify_cancelled(job_id)
        if self.bus.event:
            self.bus.emit("cancelled", job)
        return job

    async def retry(self, job_id: str, *, tenant: str | None = None) -> Job:
        """Requeue a failed or cancelled job with fresh attempts. Raises JobNotFound (also for
        another tenant's job when ``tenant`` is given) / JobStateError, or `QueueFull` when its
        queue's ``max_queued`` is reached (it adds a waiting job, like an enqueue)."""
        check_lookups(job_id=job_id, tenant=tenant)
        await self.open()
        job = await self.backend.retry_job(
            job_id, tenant=tenant, max_queued=self.catalog.max_queued or None
        )
        self._wake_workers()
        return job

    async def resume(self, job_id: str, data: Any = None, *, tenant: str | None = None) -> Job:
        """Continue an ``awaiting`` job (a handler returned `AwaitInput`) with the decision
        ``data`` (JSON, up to 64 KiB): it is queued again, and its next run sees
        ``ctx.resumed`` and ``ctx.input``. Exactly once: a job that is not awaiting (resumed
        already, timed out, cancelled...) raises `JobStateError` naming its state; JobNotFound
        also for another tenant's job when ``tenant`` is given."""
        check_lookups(job_id=job_id, tenant=tenant)
        text = None if data is None else input_json(data, "data")
        await self.open()
        job = await self.backend.resume_job(job_id, text, tenant=tenant)
        self._wake_workers()
        if self.bus.event:
            self.bus.emit("resumed", job)
        return job

    async def wait(self, job_id: str, timeout: float | None = None, *, poll: float = 0.2) -> Any:
        """Wait for a job to end; return its result, or raise JobFailed / JobCancelled /
        TimeoutError (after ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        interval = 0.002
        while True:
            job = await self.get(job_id)
            if job.status is JobState.COMPLETED:
                return job.result
            if job.status is JobState.FAILED:
                raise JobFailed(job_id, job.error)
            if job.status is JobState.CANCELLED:
                raise JobCancelled(job_id)
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"job {job_id!r} still {job.status.value} after {timeout}s")
            sleep = (
                interval if deadline is None else min(interval, max(0.0, deadline - loop.time()))
            )
            await asyncio.sleep(sleep)
            interval = min(poll, interval * 2)

    async def batch(self, batch_id: str, *, tenant: str | None = None) -> Batch:
        """A handle on an existing batch; with ``tenant``, on that tenant's jobs of it only
        (what a tenant may see of a batch whose items named several tenants)."""
        check_lookups(batch_id=batch_id, tenant=tenant)
        await self.open()
        return Batch(self, batch_id, [], [], tenant=tenant)

    async def workflow(self, workflow_id: str, *, tenant: str | None = None) -> WorkflowInfo:
        """The workflow (chain) whose first job has this id: state, current step, the steps in
        order and progress (`conveyor.workflows`). Raises `WorkflowNotFound`, also for another
        tenant's workflow when ``tenant`` is given."""
        check_lookups(job_id=workflow_id, tenant=tenant)
        await self.open()
        jobs = await self.backend.workflow_jobs(workflow_id, tenant=tenant)
        if not jobs:
            raise WorkflowNotFound(workflow_id)
        return workflow_info(workflow_id, jobs)
