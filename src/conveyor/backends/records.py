"""The records a backend reads back: events and their pages, queue figures, batch counts, the
worker and task registry entries, retention rules, what recovery did and stored API keys. Split from
`conveyor.backends.base` (which re-exports every name) to keep the protocol module short."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..job import JobState


class EventType(StrEnum):
    """Event names (a contract: the HTTP API, SSE and dashboards depend on them)."""

    ENQUEUED = "enqueued"
    SCHEDULED = "scheduled"
    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    STALLED = "stalled"
    AWAITING = "awaiting"
    RESUMED = "resumed"
    RATE_LIMITED = "rate_limited"
    BREAKER_OPENED = "breaker_opened"
    BREAKER_CLOSED = "breaker_closed"
    # A queue's pause flag changed (`Backend.set_queue_paused`); job_id is None, queue is set.
    QUEUE_PAUSED = "queue_paused"
    QUEUE_RESUMED = "queue_resumed"
    # Someone steered jobs or queues through the HTTP API or the dashboard (cancel, retry,
    # resume, bulk cancel/retry, pause/resume): data ``{"action", "key", "via", ...}`` names the
    # acting API key's id (`conveyor.server.actions`). Appended after the action it records.
    AUDIT = "audit"


EVENTS_OLDEST = "oldest"
"""The cursor before the oldest event the log still holds: reading from it never reports a trim.
(``"0"`` is the position before the first event ever: reading from it reports any trim.)"""


@dataclass(slots=True, frozen=True)
class Event:
    """One entry of the durable event log.

    ``cursor`` is the reader's position right after this event: ``read_events(since=cursor)``
    (with the same filters) yields exactly the events committed after it. It is an opaque string
    (SSE sends it as ``id:``): the event's decimal id on SQLite, per-queue stream positions on
    Redis (see docs/architecture.md, "The event cursor").
    """

    cursor: str
    type: EventType
    job_id: str | None
    queue: str | None
    task: str | None
    tenant: str | None
    time: float
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "type": self.type.value,
            "job_id": self.job_id,
            "queue": self.queue,
            "task": self.task,
            "tenant": self.tenant,
            "time": self.time,
            "data": self.data,
        }


@dataclass(slots=True, frozen=True)
class EventFilter:
    """Which events a read returns; ``None`` matches any. SQLite walks an index per filter;
    Redis reads only the queue's stream (``queue``), only the job's queue from the job's
    creation on (``job_id``), and filters ``tenant`` on the server while reading every queue's
    stream from the cursor (no per-tenant index: it would cost a write per event)."""

    queue: str | None = None
    tenant: str | None = None
    job_id: str | None = None

    def __bool__(self) -> bool:
        return self.queue is not None or self.tenant is not None or self.job_id is not None


@dataclass(slots=True)
class EventPage:
    """Events of one read, oldest first, and ``cursor``: the position after everything the read
    examined (at or past the last event's cursor), from which the next read continues. ``more``
    is True when the read stopped before the end of the log (its limit, or a filtered read's
    scan budget): read again at once rather than waiting."""

    events: list[Event]
    cursor: str
    more: bool = False


@dataclass(slots=True)
class QueueStats:
    """Per-queue figures: counts by state, live workers' capacity, recent run time and rate."""

    queue: str
    counts: dict[str, int]
    active: int = 0
    concurrency: int = 0
    workers: int = 0
    avg_run_seconds: float | None = None
    throughput_per_s: float = 0.0  # completed per second over the last ``window`` seconds
    window: float = 60.0
    limits: list[dict[str, Any]] = field(default_factory=list)  # gates: rule and live state
    spooled: int = 0  # jobs in this producer's local spool, not yet forwarded (app.stats())
    # Backpressure: the queue's max_queued (None: unlimited), as the app configures it or, for
    # a reader without that app, as the last producer that enforced one recorded it.
    max_queued: int | None = None
    # Backlog age: seconds since the queue's next job to claim (the head of its line, the best
    # of unlimited jobs and claimable flows) became ready (due time, else enqueue time), on the
    # backend's clock; None when nothing is queued. With one priority that is the oldest job.
    oldest_seconds: float | None = None
    # Admin-only (never part of an end-user view): what ``ctx.cost`` reported, summed per task
    # and unit since the store was created ({task: {unit: total}}); retention does not lower it.
    cost: dict[str, dict[str, float]] = field(default_factory=dict)
    # True while the queue is paused (`Backend.set_queue_paused`): nothing of it is claimed.
    paused: bool = False

    @property
    def waiting(self) -> int:
        """What counts toward ``max_queued``: queued and scheduled jobs."""
        return self.counts.get("queued", 0) + self.counts.get("scheduled", 0)

    @property
    def full(self) -> bool:
        """True when an enqueue of a new job would raise `QueueFull` now."""
        return self.max_queued is not None and self.waiting >= self.max_queued

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "counts": dict(self.counts),
            "active": self.active,
            "concurrency": self.concurrency,
            "workers": self.workers,
            "avg_run_seconds": self.avg_run_seconds,
            "throughput_per_s": self.throughput_per_s,
            "window": self.window,
            "limits": list(self.limits),
            "spooled": self.spooled,
            "max_queued": self.max_queued,
            "full": self.full,
            "oldest_seconds": self.oldest_seconds,
            "paused": self.paused,
        }


@dataclass(slots=True)
class BatchCounts:
    batch: str
    counts: dict[str, int]
    total: int
    first_started_at: float | None  # with a record: when the batch was created
    last_finished_at: float | None
    now: float
    record: Any = None  # `conveyor.backends.batches.BatchRecord` of a batch with callbacks


@dataclass(slots=True)
class TaskInfo:
    """A task as a live worker publishes it: enough for a producer without the app (the CLI,
    the HTTP API) to route a job (``queue``) and check its payload (``schema``, a JSON Schema;
    None: any JSON object)."""

    name: str
    queue: str
    schema: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "queue": self.queue, "schema": self.schema}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskInfo:
        return cls(d["name"], d["queue"], d.get("schema"))


@dataclass(slots=True)
class WorkerInfo:
    """A worker as it reports itself with each registry heartbeat. ``last_seen`` (the backend's
    time of its last heartbeat) is filled in by `Backend.list_workers`."""

    id: str
    queues: Sequence[str]
    concurrency: int
    active: int
    pid: int
    host: str
    started_at: float
    ttl: float = 15.0  # considered dead when not seen for this long
    running: Sequence[str] = ()  # ids of the jobs it holds (running, or prefetched)
    processed: int = 0  # attempts it finished: completed, retried or failed
    failed: int = 0  # of those, attempts that failed (retried or failed for good)
    tasks: Sequence[TaskInfo] = ()  # what it can run
    last_seen: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "active": self.active,
            "running": list(self.running),
            "processed": self.processed,
            "failed": self.failed,
            "started_at": self.started_at,
            "last_seen": self.last_seen,
            "ttl": self.ttl,
            "tasks": [t.to_dict() for t in self.tasks],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerInfo:
        return cls(
            d["id"], d["queues"], d["concurrency"], d["active"], d["pid"], d["host"],
            d["started_at"], d["ttl"], d.get("running", ()), d.get("processed", 0),
            d.get("failed", 0), [TaskInfo.from_dict(t) for t in d.get("tasks", ())],
            d.get("last_seen"),
        )  # fmt: skip


@dataclass(slots=True)
class Retention:
    """Keep finished jobs by count and/or age; ``None`` means no limit on that axis."""

    completed_max_age: float | None = 24 * 3600.0
    completed_max_count: int | None = None
    failed_max_age: float | None = 7 * 24 * 3600.0
    failed_max_count: int | None = None
    cancelled_max_age: float | None = 7 * 24 * 3600.0
    cancelled_max_count: int | None = None


@dataclass(slots=True)
class EventRetention:
    max_count: int | None = 100_000
    max_age: float | None = 24 * 3600.0


@dataclass(slots=True)
class Recovered:
    """A job whose lease expired: requeued (stall counted) or failed (stalls used up)."""

    job_id: str
    queue: str
    state: JobState


@dataclass(slots=True)
class ApiKeyRecord:
    """A stored API key (`conveyor.apikeys.ApiKeys` makes and checks them).

    The full key a client presents is ``cvk_<id>_<secret>``; only ``secret_hash`` (hex sha256 of
    the secret part) is stored, never the secret. ``tenant`` is None only for admin keys, which
    see every tenant. ``created_at`` and ``revoked_at`` are on the backend's clock; a key with
    ``revoked_at`` set is dead for good.
    """

    id: str  # public key id, e.g. "k_3f9a1c2b7d4e" (12 hex chars after k_)
    secret_hash: str  # hex sha256 of the secret part; never the secret
    tenant: str | None  # None only for admin keys that see all tenants
    admin: bool = False
    read_only: bool = False
    name: str | None = None
    created_at: float = 0.0
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_dict(self) -> dict[str, Any]:
        """The record without its hash: what listings (CLI, HTTP) may show."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "admin": self.admin,
            "read_only": self.read_only,
            "name": self.name,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }
