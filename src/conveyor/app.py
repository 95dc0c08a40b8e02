"""`Conveyor`: the task registry and the producer API (enqueue, get, list, cancel, retry, wait,
stats, events), written once against the `Backend` protocol."""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from .backends import open_backend
from .backends.base import (
    EnqueueResult,
    Event,
    EventFilter,
    EventRetention,
    JobPage,
    ListParams,
    NewJob,
    QueueStats,
    Retention,
    WorkerInfo,
)
from .batch import Batch
from .catalog import Catalog, command_handler, declared_handler
from .clock import Clock
from .command import OUTPUT_LIMIT
from .errors import (
    JobCancelled,
    JobFailed,
    JobNotFound,
    ValidationError,
)
from .forwarder import Spooler
from .inputs import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_PAYLOAD_DEPTH,
    PayloadLimits,
    brief,
    validated_payload,
)
from .job import Job, JobState, Progress, new_id
from .limits import Concurrency, RateLimit, flow_of
from .listeners import Listeners
from .options import check_lookups, check_options
from .retry import Backoff
from .sync import SyncFacade
from .task import AnyPayload, Task, make_options

if TYPE_CHECKING:
    from .worker.runtime import Worker

log = logging.getLogger("conveyor")
DEFAULT_URL = "sqlite:///conveyor.db"
_ITEM_KEYS = frozenset(
    {"task", "payload", "priority", "delay", "idempotency_key", "tenant", "max_attempts"}
)
EnqueueItem = tuple[str, dict[str, Any] | None] | dict[str, Any]


class Conveyor:
    """The application object: register tasks with ``@app.task``, enqueue jobs, run workers.

    Args:
        url: backend URL; default ``$CONVEYOR_URL`` or ``sqlite:///conveyor.db``.
        retention: default rule for finished jobs of every queue (see `queue()` for per-queue).
        event_retention: cap of the event log by count and age.
        clock: injectable clock (tests).
        spool: ``sqlite:///spool.db``: enqueues the backend cannot take (unreachable) are kept
            in this local file and forwarded when it is back (`conveyor.forwarder`); without
            it they raise `BackendUnavailable`.
        max_payload_bytes: the largest payload accepted, as JSON (default 1 MiB).
        max_payload_depth: the deepest nesting accepted in a payload (default 64 levels).
            See `conveyor.inputs.PayloadLimits` for why these defaults.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        retention: Retention | None = None,
        event_retention: EventRetention | None = None,
        clock: Clock | None = None,
        spool: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_payload_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH,
    ) -> None:
        self.payload_limits = PayloadLimits(max_payload_bytes, max_payload_depth)
        if url is not None and not url:
            from .errors import ConfigurationError

            raise ConfigurationError("backend URL is empty: pass None for the default")
        self.url = url or os.environ.get("CONVEYOR_URL") or DEFAULT_URL
        self.backend = open_backend(self.url, clock=clock)
        self.catalog = Catalog(retention, event_retention)
        self.tasks = self.catalog.tasks  # the same dict: what users and workers read
        self._listeners = Listeners()  # the worker emits through it too
        self._workers: list[Worker] = []
        self._opened = False
        self._sync: SyncFacade | None = None
        self._sync_lock = threading.Lock()
        self._spooler = Spooler(self, spool) if spool is not None else None

    # -- registry -------------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...
    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a handler. Options: queue, priority, retries, backoff (a `Backoff`) or
        backoff_initial/backoff_factor/backoff_max/backoff_jitter, timeout, lease, max_stalls."""
        opts = make_options(**options)

        def register(f: Callable[..., Any]) -> Task:
            # The function's own name: what users type (CLI, HTTP). Collisions are errors.
            task_name = name or f.__name__
            self.catalog.check_name(task_name)
            return self.catalog.add(Task(self, f, task_name, opts))

        return register(fn) if fn is not None else register

    def command(
        self,
        name: str,
        command: str | Sequence[str],
        *,
        shell: bool = False,
        stdin: bool = True,
        env: Sequence[str] | None = None,
        extra_env: dict[str, str] | None = None,
        cwd: str | None = None,
        output_limit: int = OUTPUT_LIMIT,
        kill_grace: float = 5.0,
        memory_limit: int | None = None,
        cpu_limit: int | None = None,
        **options: Any,
    ) -> Task:
        """Register a task that runs a program: ``app.command("ingest", "python ingest.py
        {path}")``. The payload goes to its stdin as JSON (``stdin=False`` to not) and fills
        ``{field}`` placeholders; ``PROGRESS: n msg`` lines on stdout become progress; the last
        stdout line, if JSON, is the result. Only the variables named in ``env`` (default
        PATH, HOME, LANG, LC_ALL, TZ, TMPDIR) reach it. Task options (queue, retries, timeout,
        rate_limit, ...) as for ``@app.task``. See `conveyor.command`."""
        from .command import DEFAULT_ENV, CommandPayload, CommandSpec

        spec = CommandSpec.parse(
            command, shell=shell, stdin=stdin, env=tuple(DEFAULT_ENV if env is None else env),
            extra_env=dict(extra_env or {}), cwd=cwd, output_limit=output_limit,
            kill_grace=kill_grace, memory_limit=memory_limit, cpu_limit=cpu_limit,
        )  # fmt: skip
        run = command_handler(name, spec, options.get("timeout"))
        t = self.task(name=name, **options)(run)
        t.spec = CommandPayload(name, spec)  # type: ignore[assignment]
        t.command = spec  # type: ignore[attr-defined]
        return t

    def declare(self, name: str, *, queue: str = "default", **options: Any) -> Task:
        """Declare a task defined elsewhere (another program, another language, or a worker
        started with ``--command``) so this app can enqueue it: any JSON object is accepted
        as its payload. A worker here does not run it: see `conveyor.registry.missing_handler`."""
        t = self.task(name=name, queue=queue, **options)(declared_handler(name))
        t.spec = AnyPayload(name)  # type: ignore[assignment]
        t.declared = True
        return t

    def queue(
        self,
        name: str,
        *,
        retention: Retention | None = None,
        rate_limit: str | RateLimit | list[RateLimit] | None = None,
        concurrency: int | Concurrency | list[Concurrency] | None = None,
        max_queued: int | None = None,
    ) -> None:
        """Configure a queue: its retention rule for finished jobs, and limits that hold for
        all of its jobs across every worker (``rate_limit="100/s"``, ``concurrency=20``, or
        keyed: ``Concurrency(2, key="tenant")``). The limits are set as a whole: a limit not
        given is removed.

        ``max_queued=N`` is backpressure: while the queue holds N or more waiting jobs (queued
        or scheduled, not active ones), an enqueue (or a manual `retry`) raises `QueueFull` and
        stores nothing; an `enqueue_many` whose new jobs do not all fit is refused as a whole.
        The backend checks it atomically with the insert. Never refused: a worker's retry of a
        job it ran, and an enqueue whose idempotency key matches an existing job (that job is
        returned)."""
        self.catalog.configure_queue(
            name,
            retention=retention,
            rate_limit=rate_limit,
            concurrency=concurrency,
            max_queued=max_queued,
        )

    def queue_limits(self, queue: str) -> tuple[RateLimit | Concurrency, ...]:
        return self.catalog.queue_limits(queue)

    def retention_for(self, queue: str) -> Retention:
        return self.catalog.retention_for(queue)

    def queues(self) -> list[str]:
        """The queues of the registered tasks, in registration order."""
        return self.catalog.queues()

    @property
    def default_retention(self) -> Retention:
        return self.catalog.default_retention

    @property
    def event_retention(self) -> EventRetention:
        return self.catalog.event_retention

    @property
    def _max_queued(self) -> dict[str, int]:
        return self.catalog.max_queued

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the backend (done automatically by the first call that needs it)."""
        if self._opened:
            return
        await self.backend.open()  # idempotent and safe to race
        self._opened = True

    async def close(self) -> None:
        for w in list(self._workers):
            await w.stop()
        if self._spooler is not None:
            await self._spooler.close()
        # The backend first: it closes the connections of every loop that still runs, the
        # sync facade's too; then the facade ends what is still in flight there.
        await self.backend.close()
        with self._sync_lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()
        self._opened = False

    async def __aenter__(self) -> Conveyor:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def sync(self) -> SyncFacade:
        """The same producer calls for sync code: ``app.sync.enqueue(...)``."""
        with self._sync_lock:  # threads may reach for it at once: one facade, one loop
            if self._sync is None:
                self._sync = SyncFacade(self)
            return self._sync

    def worker(self, **options: Any) -> Worker:
        """A worker for this app (``async with app.worker(concurrency=10): ...``)."""
        from .worker.runtime import Worker

        return Worker(self, **options)

    def _attach_worker(self, w: Worker) -> None:
        self._workers.append(w)

    def _detach_worker(self, w: Worker) -> None:
        if w in self._workers:
            self._workers.remove(w)

    # -- producing ------------------------------------------------------------------------------

    def _task(self, task: str | Task) -> Task:
        return self.catalog.lookup(task)

    _options = staticmethod(check_options)

    def _new_job(
        self,
        t: Task,
        payload: dict[str, Any] | None,
        prio: int | None,
        delay: float,
        idempotency_key: str | None,
        tenant: str | None,
        max_attempts: int | None,
        batch: str | None,
    ) -> NewJob:
        o = t.options
        clean, text = validated_payload(t.spec, payload, self.payload_limits, t.name)
        nj = NewJob(
            new_id(), o.queue, t.name, text,
            o.priority if prio is None else prio,
            o.max_attempts if max_attempts is None else max_attempts,
            o.max_stalls, o.timeout, o.lease, delay, tenant, batch, None, None, idempotency_key,
        )  # fmt: skip
        rules = t.rules
        if rules:
            nj.gates = rules.gates(clean, tenant)
            nj.flow = flow_of(nj.gates)
        return nj

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
    ) -> Job:
        """Validate and store one job. With an ``idempotency_key`` this tenant (or, without
        ``tenant``, a tenant-less job) already used in the task's queue, that job is returned and
        nothing new is stored."""
        t = self._task(task)
        prio, secs = self._options(
            priority, delay, idempotency_key, tenant, max_attempts, time.time()
        )
        nj = self._new_job(t, payload, prio, secs, idempotency_key, tenant, max_attempts, None)
        res, spooled = await self._store([nj], None)
        self._wake_workers()
        if not res.created[0]:
            return await self.get(res.ids[0])
        job = _job_from_new(nj, res.now)
        job.spooled = spooled
        if self._listeners:
            self._emit("enqueued", job)
        return job

    async def enqueue_many(
        self,
        items: Iterable[EnqueueItem],
        *,
        priority: int | str | None = None,
        delay: float | timedelta | datetime | None = None,
        tenant: str | None = None,
    ) -> Batch:
        """Store many jobs atomically (all or none) in one round trip; returns a `Batch` handle.

        Each item is ``(task, payload)`` or a dict with ``task``, ``payload`` and optionally
        ``priority``, ``delay``, ``idempotency_key``, ``tenant``, ``max_attempts``.
        """
        now = time.time()
        batch_id = new_id()
        prio, secs = self._options(priority, delay, None, tenant, None, now)
        jobs: list[NewJob] = []
        tasks: dict[Any, Task] = {}
        new_job = self._new_job
        try:
            numbered = enumerate(items)
        except TypeError:
            raise ValidationError(
                f"items must be an iterable of (task, payload) or dicts, got {type(items).__name__}",
                field="items",
            ) from None
        for i, item in numbered:
            try:
                if type(item) is tuple:
                    name, payload = item
                    t = tasks.get(name) or tasks.setdefault(name, self._task(name))
                    jobs.append(new_job(t, payload, prio, secs, None, tenant, None, batch_id))
                elif isinstance(item, dict):
                    jobs.append(self._item_job(item, prio, secs, tenant, batch_id, now))
                else:
                    raise ValidationError(
                        f"expected (task, payload) or a dict, got {type(item).__name__}"
                    )
            except ValidationError as exc:
                field = f"items[{i}].{exc.field}" if exc.field else f"items[{i}]"
                raise ValidationError(f"items[{i}]: {exc}", field=field) from None
            except (TypeError, ValueError) as exc:
                raise ValidationError(
                    f"items[{i}]: expected (task, payload) or a dict: {str(exc)[:200]}",
                    field=f"items[{i}]",
                ) from None
        if not jobs:
            await self.open()
        res, spooled = await self._store(jobs, batch_id) if jobs else (None, False)
        self._wake_workers()
        ids = res.ids if res else []
        batch = Batch(self, batch_id, ids, res.created if res else [])
        batch.spooled = spooled
        return batch

    async def _store(self, jobs: list[NewJob], group: str | None) -> tuple[EnqueueResult, bool]:
        """Store jobs in the backend, or in the spool (then True) when it is unreachable."""
        limits = self._max_queued or None
        if self._spooler is not None:
            return await self._spooler.store(jobs, group, limits)
        await self.open()
        return await self.backend.enqueue_jobs(jobs, max_queued=limits), False

    def _item_job(
        self, item: dict[str, Any], prio: int | None, secs: float, tenant: str | None,
        batch: str, now: float,
    ) -> NewJob:  # fmt: skip
        unknown = [k for k in item if k not in _ITEM_KEYS]
        if unknown:
            key = unknown[0]
            raise ValidationError(
                f"item has unknown key {brief(key)}",
                field=key if isinstance(key, str) and len(key) <= 64 else None,
            )
        if "task" not in item:
            raise ValidationError("item has no 'task'", field="task")
        t = self._task(item["task"])
        key = item.get("idempotency_key")
        ten = item.get("tenant", tenant)
        attempts = item.get("max_attempts")
        if any(
            k in item for k in ("priority", "delay", "idempotency_key", "tenant", "max_attempts")
        ):
            p, d = self._options(item.get("priority"), item.get("delay"), key, ten, attempts, now)
            prio = prio if "priority" not in item else p
            secs = secs if "delay" not in item else d
        return self._new_job(t, item.get("payload"), prio, secs, key, ten, attempts, batch)

    def _wake_workers(self) -> None:
        for w in tuple(self._workers):  # a copy: producers may run in other threads (app.sync)
            w.notify_work()

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
        if self._listeners:
            self._emit("cancelled", job)
        return job

    async def retry(self, job_id: str, *, tenant: str | None = None) -> Job:
        """Requeue a failed or cancelled job with fresh attempts. Raises JobNotFound (also for
        another tenant's job when ``tenant`` is given) / JobStateError, or `QueueFull` when its
        queue's ``max_queued`` is reached (it adds a waiting job, like an enqueue)."""
        check_lookups(job_id=job_id, tenant=tenant)
        await self.open()
        job = await self.backend.retry_job(
            job_id, tenant=tenant, max_queued=self._max_queued or None
        )
        self._wake_workers()
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

    async def batch(self, batch_id: str) -> Batch:
        """A handle on an existing batch."""
        check_lookups(batch_id=batch_id)
        await self.open()
        return Batch(self, batch_id, [], [])

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        """Per queue: counts by state, live workers and their concurrency, run time, rate, and
        backpressure (``max_queued``, ``full``)."""
        await self.open()
        wanted = list(queues) if queues else None
        out = await self.backend.stats(wanted)
        if wanted is None:
            for q in self.queues():
                if q not in out:
                    out.update(await self.backend.stats([q]))
        for q, st in out.items():  # this app's own setting is the one its producers enforce
            if q in self._max_queued:
                st.max_queued = self._max_queued[q]
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

    # -- in-process listeners ---------------------------------------------------------------------

    def on(self, event: str, fn: Callable[..., Any]) -> Callable[[], None]:
        """Call ``fn(event, job, data)`` when this process sees ``event`` ("*" for all). A failing
        listener is logged and never disturbs a job. Returns a function that unsubscribes."""
        return self._listeners.on(event, fn)

    def _emit(self, event: str, job: Job, data: Any = None) -> None:
        self._listeners.emit(event, job, data)


def _job_from_new(nj: NewJob, now: float) -> Job:
    from .serializers import loads

    scheduled = now + nj.delay if nj.delay > 0 else None
    return Job(
        nj.id, nj.queue, nj.task, loads(nj.payload), nj.priority,
        JobState.SCHEDULED if scheduled else JobState.QUEUED, 0, nj.max_attempts, 0, nj.max_stalls,
        nj.timeout, nj.lease, Progress(), None, None, nj.tenant, nj.batch, nj.workflow, nj.parent,
        nj.idempotency_key, now, scheduled,
    )  # fmt: skip


__all__ = ["Backoff", "Conveyor", "Retention"]
