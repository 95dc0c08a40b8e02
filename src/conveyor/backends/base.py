"""The storage seam: one `Backend` protocol of job verbs that every backend implements.

Everything above this module (worker runtime, producer API, CLI, later HTTP API and dashboard) is
written once against `Backend`. Each backend makes every operation atomic its own way (one SQLite
`BEGIN IMMEDIATE` transaction, one Redis Lua script, one PostgreSQL statement) and passes the one
conformance suite in ``tests/conformance``.

Conventions for every operation:
- Times are epoch seconds on the **backend's clock**; callers pass relative delays, never
  absolute times computed on their own clock, so worker clock skew is harmless.
- Jobs in flight are identified by ``(job_id, token)``: every claim gives the job a new token
  (`Job.token`) that is never reused, whatever release, recovery or retry do to ``attempt``.
  An outcome, lease renewal or progress report carrying a token that is not the job's current
  one (the job was cancelled, recovered after a lost lease, or claimed again) is ignored, never
  applied to another attempt.
- Every transition appends its event(s) to the backend's event log in the same atomic step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..job import Job, JobState
from .awaiting import AwaitStore
from .batches import BatchRecord, BatchStore, NewBatch
from .fanin import FanInStore
from .params import ClaimParams, ClaimResult, EnqueueResult, NewJob, Outcome, OutcomeKind
from .records import (
    EVENTS_OLDEST,
    ApiKeyRecord,
    BatchCounts,
    Event,
    EventFilter,
    EventPage,
    EventRetention,
    EventType,
    QueueStats,
    Recovered,
    Retention,
    TaskInfo,
    WorkerInfo,
)
from .schedules import ScheduleState, ScheduleStore, TickClaim, TickOutcome, TickResult
from .workflows import WorkflowStore


@dataclass(slots=True)
class ListParams:
    status: JobState | None = None
    queue: str | None = None
    task: str | None = None
    batch: str | None = None
    tenant: str | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, as flags (never 'backend X only' footnotes in callers)."""

    cross_process: bool = True
    cross_host: bool = False
    blocking_wakeups: bool = True
    # enqueue_jobs / enqueue_batch take ``connection=``: the caller's database connection, the
    # jobs written inside the caller's transaction (PostgreSQL).
    transactional_enqueue: bool = False


WakeCallback = Callable[[str], None]
"""Called by a backend listener when work may be ready (``"work"``) or a job of this worker may
have been cancelled (``"cancel"``). Runs on the event loop thread; must not block."""


class Listener(Protocol):
    def idle(self, idle: bool) -> None:
        """Hint from the worker: True when it has free slots and nothing to claim (it wants
        wake-ups for new work), False while it is busy claiming on its own."""

    async def close(self) -> None: ...


@runtime_checkable
class Backend(ScheduleStore, BatchStore, WorkflowStore, AwaitStore, FanInStore, Protocol):
    """Storage operations (the schedules' ones in `backends/schedules.py`, the batches' in
    `backends/batches.py`, the workflow reads in `backends/workflows.py`, human in the loop's in
    `backends/awaiting.py`, fan-in's in `backends/fanin.py`). Unless stated otherwise each is
    atomic and safe to run concurrently from many processes; errors are translated to
    `conveyor.errors.BackendError` subclasses."""

    url: str
    capabilities: Capabilities

    async def open(self) -> None:
        """Connect / create the schema. Idempotent. Raises BackendUnavailable/BackendCorrupt."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    def now(self) -> float:
        """The backend clock as last observed (cheap; exact within a few ms)."""

    async def enqueue_jobs(
        self, jobs: Sequence[NewJob], *, max_queued: Mapping[str, int] | None = None
    ) -> EnqueueResult:
        """Store jobs atomically (all or none): ``queued``, or ``scheduled`` when ``delay > 0``.

        Idempotent per idempotency key within a (queue, tenant): a job whose key that tenant
        (or, without a tenant, the tenant-less jobs) already used in that queue is not stored
        again; the existing id is returned with ``created=False``. Another tenant's key never
        matches. Emits ``enqueued``/``scheduled``.

        Backpressure: ``max_queued`` maps queues to their limit of waiting (queued + scheduled)
        jobs. When the jobs this call would create in such a queue (idempotent matches create
        none) would take its waiting count past the limit, nothing of the call is stored and
        `QueueFull` is raised, checked in the same atomic step as the insert so that racing
        producers never store more than the limit. The limit is recorded for `stats`.
        """

    async def claim_jobs(self, params: ClaimParams) -> ClaimResult:
        """Atomically promote due scheduled jobs, then move up to ``limit`` ready jobs of
        ``queues`` to ``active`` under a lease of each job's ``lease`` seconds, highest priority
        first, FIFO within a priority. Increments ``attempt``. Emits ``started``.

        Flow control: a job with a flow is claimed only when every gate of its flow allows it
        (rate: GCRA; concurrency: active < limit; breaker: closed, or half-open with no probe
        out), and claiming charges those gates. A flow a gate refuses is set aside until the
        gate can allow it (``rate_limited`` is emitted for rate gates) without holding up other
        flows or unlimited jobs. Gates of jobs that leave ``active`` (finish, release, cancel,
        lease recovery) get their slots back in the same atomic step."""

    async def finish_jobs(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        """Apply outcomes in one atomic step: completed, failed (final), retry (``scheduled``
        after ``retry_in`` seconds) or await (``awaiting``, see `AwaitStore`). Outcomes whose
        ``token`` is not the job's current claim are ignored; their ids are returned. Emits
        completed/failed/retrying/awaiting.

        One outcome that cannot be stored as given (e.g. a result or error JSON cannot hold)
        fails its own attempt with a readable error; the other outcomes still apply."""

    async def finish_and_claim(
        self, worker: str, outcomes: Sequence[Outcome], params: ClaimParams
    ) -> tuple[list[str], ClaimResult]:
        """`finish_jobs` then `claim_jobs` in one round trip where the backend can (a worker's
        steady state: acknowledge what finished, take the next jobs)."""

    async def release_jobs(self, worker: str, jobs: Sequence[tuple[str, int]]) -> int:
        """Return active attempts ``(job_id, token)`` to ``queued`` without charging the attempt
        (graceful shutdown, or a claimed job that did not start). Returns how many were
        released; attempts no longer held are ignored."""

    async def extend_leases(self, worker: str, jobs: Sequence[tuple[str, int]]) -> list[str]:
        """Renew the leases of active attempts ``(job_id, token)``; returns the ids no longer
        held (cancelled, or recovered and claimed again after a lost lease)."""

    async def set_progress(
        self, job_id: str, token: int, worker: str, progress: dict[str, Any]
    ) -> bool:
        """Store progress of an active attempt and emit ``progress``. False if not held."""

    async def cancel_job(self, job_id: str, *, tenant: str | None = None) -> Job:
        """Cancel a scheduled, queued, awaiting or active job (the worker holding an active one
        learns it at its next lease renewal or wake-up). Idempotent on a cancelled job.
        Raises JobNotFound (also for a job not of ``tenant``, when given), or JobStateError
        for completed/failed jobs."""

    async def retry_job(
        self,
        job_id: str,
        *,
        tenant: str | None = None,
        max_queued: Mapping[str, int] | None = None,
    ) -> Job:
        """Move a failed or cancelled job back to ``queued`` with fresh attempts. Raises
        JobNotFound (also for a job not of ``tenant``, when given), or JobStateError from any
        other state, or `QueueFull` (nothing changed) when ``max_queued`` limits the job's
        queue and it is full, in the same atomic step."""

    async def get_job(
        self, job_id: str, *, tenant: str | None = None, connection: Any = None
    ) -> Job | None:
        """Read one job; None when missing, or when ``tenant`` is given and it is not its.
        ``connection`` (backends with ``transactional_enqueue`` only): read through the
        caller's connection, in its open transaction (a job it enqueued and did not commit
        yet is visible there only)."""

    async def list_jobs(self, params: ListParams) -> JobPage:
        """Newest first, filtered; ``next_cursor`` continues the listing. A listing by tenant
        reads an index of that tenant's jobs, never every job."""

    async def batch_counts(self, batch: str, *, tenant: str | None = None) -> BatchCounts:
        """Counts by state of a batch's jobs (total 0 when unknown); with ``tenant``, of that
        tenant's jobs only (`enqueue_many` items may name tenants: a batch can hold several),
        total 0 when it has none there. A batch with a record (callbacks) reads its total and
        final counts from the record (they survive member retention; frozen once the callbacks
        fired) and ``record`` is set; with ``tenant``, another tenant's record is unknown."""

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        """Per-queue counts by state (O(1) per queue), live workers, recent run time and rate,
        and the ``max_queued`` last recorded by an enqueue that enforced one."""

    async def recover_expired(self) -> list[Recovered]:
        """Atomically requeue jobs whose lease expired (counting a stall, not an attempt), or
        fail them when their stalls are used up. Emits ``stalled`` (and ``failed``)."""

    async def apply_retention(self, queue: str, rule: Retention) -> int:
        """Delete finished jobs of ``queue`` beyond the rule's count/age. Returns the number."""

    async def cleanup(self, older_than: float, states: Sequence[JobState]) -> int:
        """Delete jobs in final ``states`` finished more than ``older_than`` seconds ago."""

    async def trim_events(self, rule: EventRetention) -> int:
        """Delete the oldest events beyond the rule's age and count (per backend log on SQLite,
        per queue stream on Redis) and remember how far the log was trimmed, so that a reader
        whose position was trimmed away is told so (`EventsTrimmed`). Returns the number deleted.
        Atomic per queue on Redis, as a whole on SQLite."""

    async def append_event(
        self,
        type: EventType,
        *,
        job_id: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Append one event outside a job transition (breakers, custom). Atomic."""

    async def read_events(
        self, since: str = EVENTS_OLDEST, limit: int = 1000, where: EventFilter | None = None
    ) -> EventPage:
        """Up to ``limit`` events committed after the cursor ``since`` that match ``where``,
        oldest first: every event exactly once across successive reads that pass on the page's
        cursor, in commit order (on Redis: commit order within a queue; queues are merged by
        stream time). Atomic per backend log (SQLite) or per queue (Redis).

        Raises `EventsTrimmed` when retention deleted events after ``since`` (``"oldest"``
        never raises: it means "from the oldest event kept"), and ValidationError for a cursor
        this backend did not issue. With a filter, a trim is reported if events after ``since``
        that could have matched were trimmed (SQLite: any event)."""

    async def last_event_cursor(self) -> str:
        """The cursor after the newest event committed so far: reading from it yields only
        later events (of every queue, including queues created later)."""

    async def reserve_rate(self, name: str, interval: float, burst: int) -> float:
        """Reserve one start on the global rate gate ``name`` (GCRA, shared by every process):
        returns how many seconds the caller must wait before starting (0 = now). The reservation
        is made either way, so callers waiting in turn are served in order."""

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        """Record a live worker until ``info.ttl`` seconds from now (backend clock), replacing
        what it reported before; forget workers whose heartbeat expired (crashed ones), without
        reading every worker ever seen. Idempotent."""

    async def remove_worker(self, worker: str) -> None:
        """Forget a worker that stopped. Idempotent."""

    async def list_workers(self) -> list[WorkerInfo]:
        """The live workers (heartbeat within their ttl), by id, with ``last_seen`` set. A
        worker that stopped heartbeating is never listed, whether or not it was forgotten yet."""

    async def listen(self, queues: Sequence[str], callback: WakeCallback, worker: str) -> Listener:
        """Arrange for ``callback`` to be called when jobs may be ready in ``queues`` or a job
        of ``worker`` was cancelled, from any process. Best effort: workers also poll slowly."""

    async def set_queue_paused(self, queue: str, paused: bool) -> bool:
        """Pause or resume claiming from ``queue``; True if the flag changed. Atomic; appends a
        ``queue_paused`` / ``queue_resumed`` event (EventType) when it changes; resuming wakes
        idle workers of the queue (same wake path as an enqueue).

        The flag lives in the backend (every process sees it; it survives restarts) and
        `claim_jobs` reads it inside its own atomic step: no job of a paused queue is claimed,
        while enqueue, listing, cancel and retry go on, and active jobs finish normally. Pausing
        a queue that has no jobs yet is allowed (it stays paused when jobs arrive)."""

    async def paused_queues(self) -> set[str]:
        """The names of the queues paused now."""

    async def store_api_key(self, key: ApiKeyRecord) -> None:
        """Insert a key record. Atomic; raises ValidationError if a key with its id exists
        (nothing changes)."""

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The stored record of ``key_id`` (revoked ones too); None when unknown."""

    async def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        """Stored keys, oldest first (revoked ones too); only ``tenant``'s when given, every
        tenant's (and the admin keys) when None."""

    async def revoke_api_key(self, key_id: str) -> bool:
        """Set ``revoked_at`` (backend time) if the key is not revoked yet; True if it changed,
        False when already revoked or unknown. Atomic, idempotent."""


__all__ = [
    "EVENTS_OLDEST",
    "ApiKeyRecord",
    "AwaitStore",
    "Backend",
    "BatchCounts",
    "BatchRecord",
    "BatchStore",
    "Capabilities",
    "ClaimParams",
    "ClaimResult",
    "EnqueueResult",
    "Event",
    "EventFilter",
    "EventPage",
    "EventRetention",
    "EventType",
    "FanInStore",
    "JobPage",
    "ListParams",
    "Listener",
    "NewBatch",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "QueueStats",
    "Recovered",
    "Retention",
    "ScheduleState",
    "ScheduleStore",
    "TaskInfo",
    "TickClaim",
    "TickOutcome",
    "TickResult",
    "WakeCallback",
    "WorkerInfo",
    "WorkflowStore",
]
