"""`Conveyor`: the application object users see. A small facade over three parts: the task
registry and queue configuration (`conveyor.catalog`), the producer API it inherits
(`conveyor.producer`, with `conveyor.newjobs` and the spool hand-off) and the in-process
hooks (`conveyor.hooks`, with ``app.on`` listeners on it); plus its lifecycle, the sync facade and embedded workers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, overload

from .apikeys import ApiKeys
from .backends import open_backend
from .backends.base import EventRetention, Retention
from .catalog import Catalog, command_handler, declared_handler
from .clock import Clock
from .command import OUTPUT_LIMIT
from .cron import Decorator, ScheduleInfo, schedule_decorator, schedule_infos
from .files import UploadStore, store_from
from .forwarder import Spooler
from .hooks import HookBus, Hooks
from .inputs import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_PAYLOAD_DEPTH, PayloadLimits
from .limits import Concurrency, RateLimit
from .options import check_queue_name
from .producer import Producer
from .retry import Backoff
from .schedule import Schedule
from .sync import SyncFacade
from .task import AnyPayload, Task, make_options

if TYPE_CHECKING:
    from datetime import timedelta

    from .worker.runtime import Worker

DEFAULT_URL = "sqlite:///conveyor.db"


class Conveyor(Producer):
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
        hooks: `conveyor.Hooks` run by this app's producers and workers, first registered
            outermost (see `conveyor.hooks`); more with `add_hook`.
        upload_dir: where uploaded files are (``POST /v1/uploads``; handlers open them with
            ``ctx.file``); default ``$CONVEYOR_UPLOAD_DIR``, else none. With one, the app also
            has the built-in task ``conveyor.upload_cleanup`` (queue ``conveyor``): see
            `conveyor.file_cleanup`.
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
        hooks: Sequence[Hooks] = (),
        upload_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        payload_limits = PayloadLimits(max_payload_bytes, max_payload_depth)
        if url is not None and not url:
            from .errors import ConfigurationError

            raise ConfigurationError("backend URL is empty: pass None for the default")
        self.url = url or os.environ.get("CONVEYOR_URL") or DEFAULT_URL
        catalog = Catalog(retention, event_retention)
        bus = HookBus(hooks)
        super().__init__(open_backend(self.url, clock=clock), catalog, payload_limits, bus)
        self.tasks = catalog.tasks  # the same dict: what users and workers read
        self._sync: SyncFacade | None = None
        self._sync_lock = threading.Lock()
        self._spooler = Spooler(self, spool) if spool is not None else None
        self._api_keys: ApiKeys | None = None
        self.uploads: UploadStore | None = None
        store = store_from(upload_dir)
        if store is not None:
            self.use_uploads(store.root)

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

    def cron(self, expression: str, *, name: str | None = None, tz: str = "UTC",
             **policies: Any) -> Decorator:  # fmt: skip
        """Fire a job of the decorated task at each tick of the cron ``expression`` (5 fields,
        or 6 with seconds last) in time zone ``tz``: ``@app.cron("0 3 * * *",
        tz="Europe/Paris")``. Workers run the scheduler (exactly one job per tick however many
        run; see `conveyor.worker.scheduler`).

        Decorates a function (registered as a task with default options; ``queue`` and
        ``priority`` are then the task's) or a registered `Task` (``@app.cron`` above
        ``@app.task(...)``; ``queue`` and ``priority`` then apply to the schedule's jobs).
        Returns the task. Policies: ``catch_up`` ("skip", "latest" (default), "all": see
        `conveyor.schedule.plan`), ``window`` (how old a missed tick may be and still fire;
        a timedelta or seconds, default 1 day), ``overlap`` ("allow" (default), "skip": no job
        while the previous one is not final), ``payload`` (the jobs' payload, validated now).
        ``name``: the schedule's name (default: the task's; one per schedule). Raises
        `ConfigurationError` naming a bad expression, time zone, policy or payload."""
        return schedule_decorator(
            self, lambda n, t, p: Schedule.cron(n, t, expression, tz=tz, **p), name, policies
        )

    def periodic(self, every: timedelta | float, *, name: str | None = None,
                 **policies: Any) -> Decorator:  # fmt: skip
        """Fire a job of the decorated task every ``every`` (a timedelta or seconds; ticks at
        the multiples of it since the Unix epoch, so every process agrees on them). Same
        targets, policies and errors as `cron`; a period that is not positive (at least 1 ms)
        is a `ConfigurationError`."""
        return schedule_decorator(
            self, lambda n, t, p: Schedule.periodic(n, t, every, **p), name, policies
        )

    async def schedules(self) -> list[ScheduleInfo]:
        """This app's schedules: definition, next tick, last tick fired and its job's status
        (what ``conveyor cron list`` shows)."""
        return await schedule_infos(self)

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

    def use_uploads(self, upload_dir: str | os.PathLike[str]) -> None:
        """Set the upload directory (``conveyor serve --upload-dir`` does, on the app it
        serves) and register the cleanup task if it is not yet."""
        from .file_cleanup import register_cleanup

        self.uploads = UploadStore(upload_dir)
        register_cleanup(self)

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

    # -- pausing queues, API keys ----------------------------------------------------------------

    async def pause_queue(self, name: str) -> bool:
        """Stop every worker (any process, any host) from claiming jobs of queue ``name`` until
        `resume_queue`. Jobs can still be enqueued, listed, cancelled and retried meanwhile,
        and jobs already running finish normally. The flag lives in the backend: it holds for
        workers started later and survives restarts. True if the queue was not paused (then a
        ``queue_paused`` event is logged). Raises `ValidationError` for a bad queue name."""
        check_queue_name(name)
        await self.open()
        return await self.backend.set_queue_paused(name, True)

    async def resume_queue(self, name: str) -> bool:
        """Let workers claim from queue ``name`` again and wake the idle ones. True if it was
        paused (then a ``queue_resumed`` event is logged)."""
        check_queue_name(name)
        await self.open()
        changed = await self.backend.set_queue_paused(name, False)
        self._wake_workers()
        return changed

    async def paused_queues(self) -> set[str]:
        """The names of the queues paused now (`QueueStats.paused` says it per queue too)."""
        await self.open()
        return await self.backend.paused_queues()

    @property
    def api_keys(self) -> ApiKeys:
        """The HTTP API's keys on this app's backend (`conveyor.apikeys.ApiKeys`: create,
        verify, list, revoke); it opens the backend on first use like the producer calls."""
        if self._api_keys is None:
            self._api_keys = ApiKeys(self.backend, opener=self.open)
        return self._api_keys

    # -- lifecycle ------------------------------------------------------------------------------

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

    # -- hooks and in-process listeners -----------------------------------------------------------

    @property
    def hooks(self) -> list[Hooks]:
        """The registered hooks, in order (add with `add_hook`)."""
        return self.bus.hooks

    def add_hook(self, hook: Hooks) -> None:
        """Register a hook after the others (its ``around_execute`` runs inside theirs). Workers
        already running see it from their next job."""
        self.bus.add(hook)

    def on(self, event: str, fn: Callable[..., Any]) -> Callable[[], None]:
        """Call ``fn(event, job, data)`` when this process sees ``event`` ("*" for all). A failing
        listener is logged and never disturbs a job. Returns a function that unsubscribes."""
        return self.bus.listeners.on(event, fn)


__all__ = ["Backoff", "Conveyor", "Retention"]
