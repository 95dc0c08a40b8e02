"""The worker: claim jobs into free slots, run them, acknowledge in batches, shut down cleanly.

One *pump* coroutine does all claiming and acknowledging: each round it sends the outcomes that
piled up since the last round and claims as many jobs as there are free slots, together (the
SQLite backend runs both in one transaction). Handlers finishing, producers' wake-ups and timers
only set an `asyncio.Event`; when nothing is ready the pump sleeps until one of them fires or the
earliest scheduled job is due, so an idle worker costs nothing.

Slots are accounted per lane in `slots.py` (the shared pool is one lane; queues with dedicated
slots have one each), including how far a lane prefetches and when a job claimed ahead goes back
to the queue. Side services (lease heartbeat, recovery of expired leases, retention) and the
bounded backend steps of shutdown live in `services.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .. import logs
from ..backends.base import Listener, Outcome, OutcomeKind, WorkerInfo
from ..errors import ConfigurationError
from ..job import Job, new_id
from ..registry import missing_handler
from .context import Context
from .env import WorkerEnv, on_loop
from .executor import log_failed, outcome_for_error, run_handler
from .handover import HandOver
from .services import Services
from .slots import Claim, Held, Lanes, QueueSpec, parse_queue_spec, pool_options
from .stopping import stop_worker
from .suspects import Suspects, is_suspect

if TYPE_CHECKING:
    from ..app import Conveyor
    from ..catalog import Catalog
    from ..hooks import HookBus

log = logging.getLogger("conveyor.worker")
MAX_ROUNDS = 2
_ENDED = {"type": "Cancelled", "message": "the attempt ended after its job was cancelled"}
_EVENT_OF = {
    OutcomeKind.COMPLETED: "completed",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.RETRY: "retrying",
    OutcomeKind.AWAIT: "awaiting",
}
_NOT_FAILED = (OutcomeKind.COMPLETED, OutcomeKind.AWAIT)


class Worker:
    """Runs jobs of ``queues`` with up to ``concurrency`` at a time.

    ``queues`` is a list of queue names sharing the ``concurrency`` slots, or a dict of queue ->
    dedicated slots (``None``: the shared pool), e.g. ``{"critical": 5, "default": None}`` runs
    up to 5 critical jobs on slots of their own plus ``concurrency`` default ones. `capacity` is
    the total. ``prefetch`` (the most jobs claimed ahead of free slots) applies to the shared
    pool only, and only as far as its jobs are short enough to start soon (`slots.py`).

    ``scheduler=False``: do not fire the app's cron and periodic schedules (other processes do).

    Use ``async with app.worker(...)`` to embed it in a running app, or ``await worker.run()``
    (what ``conveyor worker`` does) to run until `stop()` or a signal.
    """

    def __init__(
        self,
        app: Conveyor | WorkerEnv,
        *,
        queues: QueueSpec | None = None,
        concurrency: int = 10,
        name: str | None = None,
        poll_interval: float = 1.0,
        shutdown_grace: float = 30.0,
        maintenance_interval: float = 1.0,
        prefetch: int | None = None,
        scheduler: bool = True,
    ) -> None:
        concurrency, prefetch = pool_options(concurrency, prefetch)
        if poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be > 0, got {poll_interval}")
        env = app if isinstance(app, WorkerEnv) else WorkerEnv.of(app)
        self.env = env
        self.app = None if isinstance(app, WorkerEnv) else app  # what users passed, if an app
        self.backend = env.backend
        self.catalog: Catalog = env.catalog
        self.bus: HookBus = env.bus
        self.tasks = env.catalog.tasks
        names, self.slots = parse_queue_spec(queues) if queues else (env.catalog.queues(), {})
        self.queues = names
        if not self.queues:
            raise ConfigurationError("worker has no queues: register a task or pass queues=[...]")
        self.concurrency = concurrency
        self.prefetch = prefetch
        self._lanes = Lanes(names, self.slots, concurrency, prefetch)
        self.capacity = self._lanes.capacity
        self.id = name or f"{socket.gethostname()}-{os.getpid()}-{new_id()[-8:]}"
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self.run_scheduler = scheduler  # fire the app's schedules (`scheduler.py`)
        self.running: dict[tuple[str, int], Held] = {}
        self._acks: list[Outcome] = []
        self._wake = asyncio.Event()
        self._want_claim = True
        self._wake_gen = 0
        self._rounds: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._next_due: float | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=self.capacity, thread_name_prefix="conveyor-job"
        )
        self._services = Services(self, maintenance_interval)
        self._handover = HandOver(env.catalog, env.payload_limits)
        self._suspects = Suspects(self)
        self._stopped = asyncio.Event()
        self._started_at = time.time()
        self.processed = 0
        self.failed = 0
        self.rate_limited: dict[str, int] = {}  # per queue: flows a rate gate held back
        self.round_trip = 0.0  # a moving average of the pump's backend rounds (seconds)
        self.min_lease = min([t.options.lease for t in self.tasks.values()] + [30.0])

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        env = self.env
        await env.open()
        if env.spooler is not None:  # forward what producers on this host spooled
            env.spooler.start()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._listener = await self.backend.listen(self.queues, self._on_wake, self.id)
        env.attach(self)
        await self.backend.worker_heartbeat(self.info())
        self._pump_task = asyncio.create_task(self._pump(), name=f"conveyor-pump-{self.id}")
        self._services.start()
        if self.bus.start:
            self.bus.worker_started(self)
        log.info("worker %s started: queues=%s slots=%s concurrency=%d capacity=%d", self.id,
                 self.queues, self.slots, self.concurrency, self.capacity)  # fmt: skip

    async def run(self) -> None:
        """Start and run until `stop()` completes."""
        await self.start()
        await self._stopped.wait()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let active jobs finish within ``grace`` seconds, return the rest to the
        queue without charging an attempt, flush acknowledgements and disconnect.

        Always returns, in bounded time, with the services stopped, even if the backend fails
        or hangs: each step is bounded and a failing one is logged. What could not be handed
        back or acknowledged comes back to the queue when its lease expires (`stopping.py`)."""
        await stop_worker(self, self.shutdown_grace if grace is None else grace)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def info(self) -> WorkerInfo:
        return self._services.info()

    # -- wake-ups -------------------------------------------------------------------------------

    def _on_wake(self, kind: str) -> None:
        if kind == "cancel":
            self._services.check_leases_soon()
        else:
            if not self._want_claim and self._listener is not None:
                self._listener.idle(False)
            self._want_claim = True
            self._lanes.want_all()
            self._wake_gen += 1
            self._wake.set()

    def notify_work(self) -> None:
        """In-process wake-up (thread-safe): a job may be ready."""
        on_loop(self._loop, self._on_wake, "work")

    def notify_cancelled(self, job_id: str) -> None:
        """In-process cancel (thread-safe): stop the job if this worker holds it. Its state is
        only ever touched on the worker's own loop; a producer may call from another thread
        (``app.sync``)."""
        on_loop(self._loop, self.drop_job, job_id)

    # -- the pump -------------------------------------------------------------------------------

    async def _pump(self) -> None:
        # Up to MAX_ROUNDS backend rounds in flight, so the database works on the next round
        # while this loop runs the jobs of the previous one. `plan` reserves the slots a round
        # asks for, so the concurrency cap holds.
        lanes = self._lanes
        while not self._stopping:
            self._wake.clear()
            if len(self._rounds) < MAX_ROUNDS:
                # A suspect is held: claim nothing until it ran alone (`suspects.py`).
                claims = lanes.plan(self.id) if self._suspects.held is None else []
                if claims or self._acks:
                    acks, self._acks = self._acks, []
                    t = asyncio.create_task(self._round(acks, claims, self._wake_gen))
                    self._rounds.add(t)
                    continue
            await self._idle_wait()
        if self._rounds:
            await asyncio.wait(list(self._rounds))

    async def _round(self, acks: list[Outcome], claims: list[Claim], gen: int) -> None:
        """One round: the acknowledgements, with the first claim where there is one, then the
        round's other claims; each returned job goes into its lane."""
        backend = self.backend
        began = time.monotonic()
        try:
            if not claims:
                self._report_lost(await backend.finish_jobs(self.id, acks))
                acks = []
            for claim in claims:
                if acks:
                    lost, res = await backend.finish_and_claim(self.id, acks, claim.params)
                    acks = []
                    self._report_lost(lost)
                else:
                    res = await backend.claim_jobs(claim.params)
                self._take(claim, res.jobs, res.next_due, gen)
                for q, n in res.rate_limited.items():
                    self.rate_limited[q] = self.rate_limited.get(q, 0) + n
            self._services.outage.back()
            self._services.forward_soon()
            self.round_trip += (time.monotonic() - began - self.round_trip) / 8
        except asyncio.CancelledError:
            self._acks = acks + self._acks  # for the flush at shutdown
            raise
        except Exception as exc:
            self._services.outage.failed(exc, "claim/acknowledge round")  # retried shortly
            self._acks = acks + self._acks
            await asyncio.sleep(0.5)
        finally:
            for claim in claims:
                claim.release()  # no-op for the claims that returned
            self._rounds.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._wake.set()

    def _take(self, claim: Claim, jobs: list[Job], next_due: float | None, gen: int) -> None:
        # Only conclude "nothing more is ready" if no wake-up arrived since this round began: a
        # job committed after our claim's snapshot has sent one.
        if self._lanes.settle(claim, jobs, gen == self._wake_gen) and self._want_claim:
            self._want_claim = False  # a lane waits for work: listen for wake-ups
            if self._listener is not None:
                self._listener.idle(True)
        self._keep_due(next_due)
        jobs, back = self._suspects.split(jobs)
        if back:  # a suspect starts once they are no longer ours (`suspects.py`)
            t = self._services.give_back([(j.id, j.token) for j in back], "set-aside")
            t.add_done_callback(self._suspects.handed_back)
        for job in jobs:
            self._spawn(job)

    def _keep_due(self, next_due: float | None) -> None:
        """Keep the earliest due time any claim reported, also one that raced a newer wake-up:
        rounds in flight can reach the store out of order, and the round whose acknowledgement
        scheduled a retry may be the only one that saw it. A stale time costs one claim."""
        if next_due is not None and (self._next_due is None or next_due < self._next_due):
            self._next_due = next_due

    async def _idle_wait(self) -> None:
        timeout = None if self._rounds else self.poll_interval
        if self._next_due is not None and timeout is not None:
            timeout = min(timeout, max(0.0, self._next_due - self.backend.now()))
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            self._want_claim = True
            self._lanes.want_all()
            self._next_due = None

    def _report_lost(self, lost: list[str]) -> None:
        if lost:
            log.info(
                "worker %s: %d outcomes ignored (job cancelled or re-claimed)", self.id, len(lost)
            )

    # -- holding jobs ---------------------------------------------------------------------------

    def _spawn(self, job: Job) -> None:
        loop = self._loop
        assert loop is not None
        r = Held(job, Context(job, self, loop))
        self.running[r.key] = r
        if job.lease < self.min_lease:
            self.min_lease = job.lease
            self._services.check_leases_soon()  # renew before this shorter lease runs out
        if job.stalls and is_suspect(job):
            self._suspects.hold(r)  # it runs alone, not in a lane's turn
        elif self._lanes.admit(r, not self._stopping):
            r.task = loop.create_task(self._execute(r))
        elif not self._stopping:
            self._services.watch_buffers()

    def _slot_freed(self, r: Held) -> None:
        assert r.lane is not None and self._loop is not None
        for nxt in r.lane.done(r, self._stopping):
            nxt.task = self._loop.create_task(self._execute(nxt))
        if self._suspects.held is not None:
            self._suspects.ended(r)

    async def _execute(self, r: Held) -> None:
        job = r.job
        bus = self.bus
        if logs.wanted:  # this task's own context: its log records name the job (logs.py)
            logs.current_job.set(job)
        task = self.tasks.get(job.task)
        if bus.event:
            bus.emit("started", job)
        try:
            if task is None:
                raise await missing_handler(self, job)  # Permanent, or Retry for another
            if job.resumes:  # a fan-in parent resumed: its children's results (else none)
                r.ctx._children = await self.backend.read_children(job.id, job.queue)
            if bus.execute:
                result = await bus.around_execute(
                    r.ctx, lambda: run_handler(task, job, r.ctx, self._pool)
                )
            else:
                result = await run_handler(task, job, r.ctx, self._pool)
            outcome = self._handover.result(
                job, result, r.ctx._spawned, r.ctx._fanout
            )  # Next, children
        except asyncio.CancelledError:
            if r.lost or r.released:
                return self._forget(r)
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            if r.lost or r.released:
                return self._forget(r)
            outcome = outcome_for_error(job, exc, task)
            log_failed(job, outcome)
        if r.lost or r.released:
            return self._forget(r)
        if r.ctx._cost:
            outcome.cost = r.ctx._cost
        if bus.outcome and r.since:  # the lane's start time of this attempt (`Held.since`)
            outcome.seconds = time.monotonic() - r.since
        del self.running[r.key]
        self._slot_freed(r)
        self.processed += 1
        self.failed += outcome.kind not in _NOT_FAILED
        self._acks.append(outcome)
        if outcome.then or job.parent is not None:  # hand-overs, a child's settle: forwarded
            self._services.handed_over.add(job.queue)
        if outcome.kind is OutcomeKind.RETRY:
            self._on_wake("work")  # the claim after this ack learns the retry's due time
        self._wake.set()
        if bus.outcome:
            bus.after_outcome(job, outcome)
        if bus.event:
            bus.emit(_EVENT_OF[outcome.kind], job, outcome)

    def _forget(self, r: Held) -> None:
        self.running.pop(r.key, None)
        if r.lost and not r.released:
            self._ended(r)
        self._slot_freed(r)
        self._wake.set()
        if self.bus.outcome and r.task is not None:  # an attempt that ran, and is not ours now
            kind = OutcomeKind.RELEASED if r.released else OutcomeKind.CANCELLED
            self.bus.after_outcome(r.job, Outcome(r.job.id, r.job.token, kind))

    def _ended(self, r: Held) -> None:
        """A lost attempt has really ended: say so, so that a job cancelled while it ran gives
        its concurrency-gate slots back now (the backend ignores it for any other job)."""
        self._acks.append(Outcome(r.job.id, r.job.token, OutcomeKind.FAILED, error=_ENDED))

    def drop_job(self, job_id: str) -> None:
        """Every attempt of ``job_id`` this worker holds is no longer its own (cancelled)."""
        self.drop_lost([k for k in self.running if k[0] == job_id])

    def drop_lost(self, keys: list[tuple[str, int]]) -> None:
        """Attempts we no longer hold (cancelled, or re-claimed after a lost lease): stop them."""
        for key in keys:
            r = self.running.get(key)
            if r is None or r.lost:
                continue
            r.lost = True
            r.ctx._set_cancelled()
            if r.task is None:  # still in a lane's buffer (or a suspect): never started
                self._lanes.drop(r)
                del self.running[key]
                self._suspects.ended(r)
                self._ended(r)
                self._wake.set()
                continue
            task = self.tasks.get(r.job.task)
            # A sync handler keeps its thread until it returns (it sees ctx.cancelled); its slot
            # is freed only then. An async one is cancelled where it awaits.
            if task is None or task.is_async:
                r.task.cancel()
