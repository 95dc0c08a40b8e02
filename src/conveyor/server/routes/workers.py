"""``GET /v1/workers``: the live workers of the backend (any host, any process).

Admin keys only: a worker runs every tenant's jobs and lists their ids, so a tenant key gets
403 rather than a view from which other tenants' activity could be read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ...backends.base import WorkerInfo
from ..auth import Admin
from ..deadline import backend_deadline
from ..models_ops import WorkersOut
from .jobs import ERRORS, conveyor_of

router = APIRouter(prefix="/v1/workers", tags=["workers"], responses=ERRORS)


def worker_out(w: WorkerInfo) -> dict[str, Any]:
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "queues": list(w.queues),
        "concurrency": w.concurrency,
        "active": w.active,
        "running": list(w.running),
        "processed": w.processed,
        "failed": w.failed,
        "started_at": w.started_at,
        "last_seen": w.last_seen,
        "ttl": w.ttl,
        "tasks": [t.name for t in w.tasks],
    }


@router.get("", response_model=WorkersOut)
async def list_workers(request: Request, principal: Admin) -> dict[str, Any]:
    """Live workers (heartbeat within their ttl): id, host, pid, queues, slots in use, running
    job ids, attempts processed and failed, last heartbeat. Admin keys only."""
    app = conveyor_of(request)
    async with backend_deadline(request.app.state.settings):
        found = await app.workers()
    return {"workers": [worker_out(w) for w in found]}
