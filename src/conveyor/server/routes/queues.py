"""``/v1/stats`` and ``/v1/queues``: per-queue figures; pausing and resuming a queue.

Admin keys see each queue as ``app.stats()`` reads it (every tenant, or one with ``?tenant=``).
The backend keeps its counts per queue, not per tenant, so a tenant key gets a redacted view
(`conveyor.server.models_ops`): its own jobs' counts, read by scanning its own jobs newest first
(an index of the tenant's jobs, at most `TENANT_SCAN_CAP` of them: ``complete`` is false when
it has more), and whether the queue is paused; nothing that sums other tenants' work, and only
the queues of the served app's tasks or of its own jobs.

A queue is *known* when a task of the served app is on it, the backend has figures for it (it
has or had jobs), or it is paused; any other name answers 404 (a typo must not pause nothing).
Pause and resume need an admin key that may write."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from ...app import Conveyor
from ...backends.base import QueueStats
from ...job import JobState
from ...options import check_queue_name
from .. import actions
from ..auth import AdminWriter, Principal, Reader
from ..deadline import backend_deadline
from ..errors import not_found
from ..models_ops import QueueOut, QueuesOut, StatsOut
from .jobs import ERRORS, conveyor_of

router = APIRouter(tags=["queues"], responses=ERRORS)

#: The most jobs of one tenant a stats read counts (newest first).
TENANT_SCAN_CAP = 5000
_PAGE = 1000

QueueName = Annotated[str, Path(min_length=1, max_length=200, description="queue name")]
TenantQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=200, description="admin keys: one tenant's counts only"),
]


def queue_out(st: QueueStats, registered: bool, paused: bool) -> dict[str, Any]:
    """The admin view of one queue."""
    queued = st.counts.get(JobState.QUEUED.value, 0)
    wait = None
    if st.avg_run_seconds is not None and st.concurrency > 0:
        wait = queued * st.avg_run_seconds / st.concurrency
    return {
        "queue": st.queue,
        "counts": _all_states(st.counts),
        "waiting": st.waiting,
        "paused": paused,
        "registered": registered,
        "workers": st.workers,
        "active": st.active,
        "concurrency": st.concurrency,
        "avg_run_seconds": st.avg_run_seconds,
        "throughput_per_s": st.throughput_per_s,
        "window": st.window,
        "oldest_seconds": st.oldest_seconds,
        "expected_wait_seconds": wait,
        "limits": list(st.limits),
        "max_queued": st.max_queued,
        "full": st.full,
    }


def _tenant_queue_out(queue: str, counts: dict[str, int], paused: bool,
                      registered: bool) -> dict[str, Any]:  # fmt: skip
    counts = _all_states(counts)
    waiting = counts[JobState.QUEUED.value] + counts[JobState.SCHEDULED.value]
    return {"queue": queue, "counts": counts, "waiting": waiting, "paused": paused,
            "registered": registered}  # fmt: skip


def _all_states(counts: dict[str, int]) -> dict[str, int]:
    return {s.value: int(counts.get(s.value, 0)) for s in JobState}


async def _tenant_counts(
    app: Conveyor, tenant: str, queue: str | None = None
) -> tuple[dict[str, dict[str, int]], bool]:
    """Counts by queue and state of ``tenant``'s newest jobs (at most `TENANT_SCAN_CAP`), and
    whether that was all of them."""
    counts: dict[str, dict[str, int]] = {}
    cursor: str | None = None
    seen = 0
    while True:
        page = await app.list(tenant=tenant, queue=queue, limit=_PAGE, cursor=cursor)
        for job in page.jobs:
            per = counts.setdefault(job.queue, {})
            per[job.status.value] = per.get(job.status.value, 0) + 1
        seen += len(page.jobs)
        cursor = page.next_cursor
        if cursor is None or not page.jobs:
            return counts, True
        if seen >= TENANT_SCAN_CAP:
            return counts, False


async def queue_views(
    app: Conveyor, principal: Principal, asked: str | None, only: str | None = None
) -> tuple[str | None, bool, list[dict[str, Any]]]:
    """(tenant scope, complete, queue views) for this caller; ``only``: that queue alone."""
    registered = set(app.queues())
    tenant = principal.tenant_scope(asked)
    paused = await app.paused_queues()
    if tenant is None:
        stats = await app.stats([only] if only else None)
        if only is None:
            for q in sorted(paused - set(stats)):  # paused before it had any job
                stats.update(await app.stats([q]))
        names = [only] if only else sorted(stats)
        views = [queue_out(stats.get(q) or QueueStats(q, {}), q in registered, q in paused)
                 for q in names]  # fmt: skip
        return None, True, views
    counts, complete = await _tenant_counts(app, tenant, only)
    names = (set(counts) | registered) if only is None else {only}
    views = [_tenant_queue_out(q, counts.get(q, {}), q in paused, q in registered)
             for q in sorted(names)]  # fmt: skip
    return tenant, complete, views


async def known_queue(app: Conveyor, principal: Principal, queue: str) -> bool:
    check_queue_name(queue)
    if queue in app.queues():
        return True
    if principal.admin:
        stats = await app.stats([queue])
        st = stats.get(queue)
        if st is not None and any(st.counts.values()):
            return True
        return queue in await app.paused_queues()
    counts, _ = await _tenant_counts(app, principal.tenant or "", queue)
    return bool(counts)


@router.get("/v1/stats", response_model=StatsOut)
async def stats(request: Request, principal: Reader, tenant: TenantQuery = None) -> dict[str, Any]:
    """Per-queue figures: counts by state, capacity, run time, throughput, backpressure, limits
    (a tenant key: its own jobs' counts only, see the module's documentation)."""
    app = conveyor_of(request)
    async with backend_deadline(request.app.state.settings):
        scope, complete, views = await queue_views(app, principal, tenant)
    return {"tenant": scope, "complete": complete, "queues": {v["queue"]: v for v in views}}


@router.get("/v1/queues", response_model=QueuesOut)
async def list_queues(
    request: Request, principal: Reader, tenant: TenantQuery = None
) -> dict[str, Any]:
    """The known queues, by name, with their figures (as ``/v1/stats``)."""
    app = conveyor_of(request)
    async with backend_deadline(request.app.state.settings):
        scope, complete, views = await queue_views(app, principal, tenant)
    return {"tenant": scope, "complete": complete, "queues": views}


@router.get("/v1/queues/{queue}", response_model=QueueOut)
async def get_queue(
    queue: QueueName, request: Request, principal: Reader, tenant: TenantQuery = None
) -> dict[str, Any]:
    """One queue's figures; 404 for a queue that is not known."""
    return await _one(request, principal, queue, tenant)


async def _one(
    request: Request, principal: Principal, queue: str, tenant: str | None = None
) -> dict[str, Any]:
    app = conveyor_of(request)
    principal.tenant_scope(tenant)  # a tenant key naming another tenant: 403 before anything
    async with backend_deadline(request.app.state.settings):
        if not await known_queue(app, principal, queue):
            raise not_found("queue", queue)
        _, _, views = await queue_views(app, principal, tenant, only=queue)
    return views[0]


@router.post("/v1/queues/{queue}/pause", response_model=QueueOut)
async def pause_queue(queue: QueueName, request: Request, principal: AdminWriter) -> dict[str, Any]:
    """Stop every worker from claiming jobs of this queue (enqueueing goes on; running jobs
    finish). Idempotent. Answers the queue, ``paused`` true."""
    return await _set_paused(request, principal, queue, True)


@router.post("/v1/queues/{queue}/resume", response_model=QueueOut)
async def resume_queue(
    queue: QueueName, request: Request, principal: AdminWriter
) -> dict[str, Any]:
    """Let workers claim from this queue again. Idempotent. Answers the queue."""
    return await _set_paused(request, principal, queue, False)


async def _set_paused(
    request: Request, principal: Principal, queue: str, paused: bool
) -> dict[str, Any]:
    app = conveyor_of(request)
    async with backend_deadline(request.app.state.settings):
        if not await known_queue(app, principal, queue):
            raise not_found("queue", queue)
    await actions.set_paused(app, request.app.state.settings, principal, queue, paused, "api")
    return await _one(request, principal, queue)
