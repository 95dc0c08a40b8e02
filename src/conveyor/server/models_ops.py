"""Models of the operations routes: stats and queues, workers, health (``routes/queues.py``,
``routes/workers.py``, ``routes/health.py``).

A tenant key gets a redacted view of a queue (`QueueOut` with only its own jobs' ``counts`` and
``waiting``, and ``paused``): every figure that would sum up other tenants' work (live workers,
run time, throughput, backlog age, limits, fullness) is None for it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class QueueOut(BaseModel):
    queue: str
    counts: dict[str, int] = Field(description="jobs by state (a tenant key: its own jobs only)")
    waiting: int = Field(description="queued + scheduled jobs (what max_queued counts)")
    paused: bool = Field(description="workers claim nothing from a paused queue")
    registered: bool = Field(description="a task of the served app is on this queue")
    workers: int | None = Field(None, description="live workers serving the queue")
    active: int | None = Field(None, description="job slots in use (concurrency used)")
    concurrency: int | None = Field(None, description="job slots of the live workers")
    avg_run_seconds: float | None = Field(
        None, description="average run time of the jobs completed in the last `window` seconds"
    )
    throughput_per_s: float | None = Field(
        None, description="jobs completed per second over the last `window` seconds"
    )
    window: float | None = None
    oldest_seconds: float | None = Field(
        None, description="backlog age: how long the next job to claim has been ready"
    )
    expected_wait_seconds: float | None = Field(
        None,
        description="a new job's expected wait: queued jobs x avg_run_seconds / concurrency "
        "(null until a run time is measured or while no live worker serves the queue)",
    )
    limits: list[dict[str, Any]] | None = Field(
        None, description="rate limits, concurrency caps and breakers with their live state"
    )
    max_queued: int | None = Field(None, description="backpressure limit (null: unlimited)")
    full: bool | None = Field(None, description="an enqueue would be refused now (QueueFull)")


class StatsOut(BaseModel):
    tenant: str | None = Field(
        description="the tenant the counts are confined to (null: every tenant, admin keys)"
    )
    complete: bool = Field(
        description="false when a tenant's counts stopped at the scan cap (the newest jobs)"
    )
    queues: dict[str, QueueOut]


class QueuesOut(BaseModel):
    tenant: str | None
    complete: bool
    queues: list[QueueOut]


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    active: int
    running: list[str] = Field(description="ids of the jobs it holds (running or prefetched)")
    processed: int
    failed: int
    started_at: float
    last_seen: float | None
    ttl: float = Field(description="seconds without a heartbeat before it counts as dead")
    tasks: list[str]


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class HealthWorker(BaseModel):
    id: str
    host: str
    pid: int
    queues: list[str]
    active: int
    concurrency: int
    last_seen: float | None
    seconds_since_heartbeat: float | None


class HealthOut(BaseModel):
    """Without an admin key only ``healthy`` is present."""

    healthy: bool
    backend: dict[str, Any] | None = Field(
        None, description="reachable, latency_ms, kind (admin keys only)"
    )
    queues: dict[str, dict[str, int]] | None = Field(
        None, description="counts by state per queue (admin keys only)"
    )
    workers: list[HealthWorker] | None = Field(None, description="live workers (admin keys only)")
