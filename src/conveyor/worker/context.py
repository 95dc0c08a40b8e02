"""`Context`: what a handler sees of its job and the worker running it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import re
from collections.abc import Awaitable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import ConfigurationError, ValidationError
from ..fanin import ChildResult, FanOut, Policy, check_policy
from ..inputs import brief, json_problem
from ..job import Job
from ..limits import RateLimit

if TYPE_CHECKING:
    from ..backends.base import NewJob
    from ..files import UploadMeta
    from .runtime import Worker

_UNIT = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,31}")


class _Limiter:
    """``async with ctx.limit(...)``: reserve a start on a backend-wide rate gate, then wait."""

    __slots__ = ("_burst", "_ctx", "_interval", "_name")

    def __init__(self, ctx: Context, name: str, rate: str, burst: int) -> None:
        spec = RateLimit(rate, burst=burst, name=name)  # validates all three
        self._ctx = ctx
        self._name = f"rate:ctx:{name}"
        self._interval = spec.interval
        self._burst = burst

    async def __aenter__(self) -> None:
        backend = self._ctx._worker.backend
        wait = await backend.reserve_rate(self._name, self._interval, self._burst)
        if wait > 0:
            await asyncio.sleep(wait)

    async def __aexit__(self, *exc: object) -> None:
        return None


class Context:
    """Passed as the first argument to handlers that ask for it (named ``ctx`` or annotated
    ``Context``). Usable from async handlers (``await ctx.progress(...)``) and from sync handlers
    running in the thread pool (``ctx.progress(...)`` without await; it is fire-and-forget)."""

    __slots__ = ("_cancelled", "_children", "_cost", "_fanout", "_loop", "_spawned", "_worker",
                 "job")  # fmt: skip

    def __init__(self, job: Job, worker: Worker, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self._worker = worker
        self._loop = loop
        # A plain attribute, not a threading.Event: set once, read by handler threads; a bool
        # store/load is atomic under the GIL and a context is created per job on the hot path.
        self._cancelled = False
        self._cost: dict[str, float] | None = None
        self._spawned: list[NewJob] | None = None
        self._fanout: FanOut | None = None
        self._children: list[ChildResult] = []

    @property
    def log(self) -> logging.Logger:
        """A logger named after the task (``conveyor.task.<name>``)."""
        return logging.getLogger(f"conveyor.task.{self.job.task}")

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def resumed(self) -> bool:
        """True when the job was resumed after an `AwaitInput` (``app.resume``, or a timeout
        with ``on_timeout="resume"``): this run continues it with `input`."""
        return self.job.resumes > 0

    @property
    def input(self) -> Any:
        """The decision of the job's last resume (the ``data`` passed to ``app.resume``); None
        before any resume."""
        return self.job.input

    @property
    def prompt(self) -> Any:
        """The prompt of the job's last `AwaitInput` (what the decision answered); None if it
        never awaited."""
        return self.job.prompt

    @property
    def children(self) -> list[ChildResult]:
        """After a fan-in resume: the children of the job's last ``spawn_many`` round in spawn
        order (status, result or error each); empty otherwise."""
        return self._children

    def spawn_many(
        self, items: Any, *, policy: Policy = "fail_parent", cancel_siblings: bool = True
    ) -> list[str]:
        """Buffer children to create when the handler returns `conveyor.AwaitChildren` (in the
        same atomic step as the job's park); returns their ids. ``items`` as ``enqueue_many``'s:
        ``(task, payload)`` or dicts with ``task``, ``payload`` and options. Each child gets
        ``parent`` = this job, its tenant and workflow. ``policy`` says what a failed or
        cancelled child does (``fail_parent``, ``ignore``, ``continue``: `conveyor.fanin`);
        every call of one attempt must use the same policy. Validated here: raises
        `ValidationError` / `UnknownTask` naming the item, and nothing is buffered then."""
        check_policy(policy, cancel_siblings)
        fanout = FanOut(policy, cancel_siblings)
        if self._fanout is not None and self._fanout != fanout:
            raise ValidationError(
                f"every spawn of one attempt must use the same policy: {self._fanout.policy}, "
                f"cancel_siblings={self._fanout.cancel_siblings} so far",
                field="policy",
            )
        spawned = self._spawned or []
        jobs = self._worker._handover.children(self.job, items, len(spawned))
        self._spawned = spawned + jobs
        self._fanout = fanout
        return [nj.id for nj in jobs]

    def spawn(
        self, task: str, payload: dict[str, Any] | None = None, *, policy: Policy = "fail_parent",
        cancel_siblings: bool = True, **options: Any,
    ) -> str:  # fmt: skip
        """One child (see `spawn_many`); ``options`` as an ``enqueue_many`` dict item's
        (``priority``, ``delay``, ``idempotency_key``, ``max_attempts``, ``meta``)."""
        item = {"task": task, "payload": payload, **options}
        return self.spawn_many([item], policy=policy, cancel_siblings=cancel_siblings)[0]

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, timed out, or the worker is shutting down hard.
        Sync handlers should check it between steps and return early."""
        return self._cancelled

    def progress(
        self,
        percent: float | None = None,
        message: str | None = None,
        *,
        stage: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Awaitable[None] | concurrent.futures.Future[None]:
        """Record progress (persisted and emitted as a ``progress`` event).

        ``percent`` is 0-100. From an async handler, await the result; from a sync handler just
        call it (it returns a concurrent future you may ignore).
        """
        if percent is not None:
            if isinstance(percent, bool) or not isinstance(percent, int | float):
                raise ValidationError("progress percent must be a number 0-100", field="percent")
            if not 0 <= percent <= 100:
                raise ValidationError(
                    f"progress percent {percent} is outside 0-100", field="percent"
                )
        data: dict[str, Any] = {
            "percent": percent,
            "message": message,
            "stage": stage,
            "meta": meta,
        }
        if message is not None or stage is not None or meta is not None:
            # Stored as JSON: refused here, in the handler, rather than changed (NaN as null)
            # or failing inside the backend.
            problem = json_problem(data, "progress")
            if problem is not None:
                raise problem
        coro = self._report(data)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return coro
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def limit(self, name: str, rate: str, *, burst: int = 1) -> _Limiter:
        """A rate limit shared by every process of the backend, for code inside a handler:
        ``async with ctx.limit("openai", "500/m"): ...`` waits for the next permitted start
        (GCRA; evenly spaced unless ``burst`` > 1). Unlike a task's ``rate_limit`` the job
        already holds its slot while it waits, so prefer task limits for whole jobs."""
        return _Limiter(self, name, rate, burst)

    def cost(self, amount: float, unit: str = "usd") -> None:
        """Report what this attempt cost (an API bill, tokens...): added up per unit over the
        attempt and stored with the job when the attempt ends (also when it fails), and summed
        per task in ``stats()`` (`QueueStats.cost`). Admin-only data: never part of what an
        end user (a tenant) is shown. ``amount``: a finite number >= 0; ``unit``: a short
        identifier (``usd``, ``tokens``, ``gpu_s``). Callable from sync handlers too."""
        try:
            value = float(amount) if type(amount) in (int, float) else math.nan
        except OverflowError:  # an int beyond a float
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValidationError(
                f"cost amount must be a finite number >= 0, got {brief(amount)}", field="amount"
            )
        if not isinstance(unit, str) or not _UNIT.fullmatch(unit):
            raise ValidationError(
                f"cost unit must be a short identifier (letters, digits, _ . -; up to 32, "
                f"starting with a letter), got {brief(unit)}",
                field="unit",
            )
        cost = self._cost
        if cost is None:
            cost = self._cost = {}
        total = cost.get(unit, 0.0) + value
        if not math.isfinite(total):  # each amount finite, their sum too large for a float
            raise ValidationError(
                f"cost amount {brief(amount)} makes this attempt's {unit} total overflow",
                field="amount",
            )
        cost[unit] = total

    def file(self, ref: object) -> IO[bytes]:
        """Open the uploaded file ``ref`` names for reading, in binary:
        ``with ctx.file(payload["file"]) as f: ...``. ``ref`` is the reference ``POST
        /v1/uploads`` put in the payload (``{"$upload": id, "tenant": ...}``) or a bare upload
        id. Raises `UploadNotFound` when the upload is gone, unknown, or belongs to another
        tenant than this job's (the same answer), `ValidationError` for a malformed reference.
        Blocking, like ``open``: fine in sync handlers; async handlers reading large files may
        prefer ``asyncio.to_thread``."""
        return self.file_path(ref).open("rb")

    def file_path(self, ref: object) -> Path:
        """The path of the uploaded file ``ref`` names (checked like `file`), for code that
        wants a path (a subprocess, a library that opens files itself). Do not move or delete
        it: the cleanup job does, some time after this job ended."""
        return self._upload(ref)[1]

    def upload(self, ref: object) -> UploadMeta:
        """The metadata of the uploaded file ``ref`` names (size, sha256, content type, the
        client's file name), checked like `file`."""
        return self._upload(ref)[0]

    def _upload(self, ref: object) -> tuple[UploadMeta, Path]:
        store = self._worker.env.uploads
        if store is None:
            raise ConfigurationError(
                "this worker has no upload directory: create the app with "
                "Conveyor(upload_dir=...) or set CONVEYOR_UPLOAD_DIR"
            )
        return store.readable(ref, self.job.tenant)

    async def _report(self, data: dict[str, Any]) -> None:
        worker, job = self._worker, self.job
        if await worker.backend.set_progress(job.id, job.token, worker.id, data):
            job.progress.percent = data["percent"]
            job.progress.message = data["message"]
            job.progress.stage = data["stage"]
            job.progress.meta = data["meta"]
            bus = worker.bus
            if bus.event:
                bus.emit("progress", job, data)

    def _set_cancelled(self) -> None:
        self._cancelled = True
