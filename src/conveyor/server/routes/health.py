"""``GET /health`` and ``GET /metrics``.

``/health`` needs no key: it answers ``{"healthy": bool}`` (200, or 503 when unhealthy) to
anyone, so that a load balancer can probe it. An admin key (or ``--no-auth``) also gets what the
verdict rests on: the backend's reachability and latency, counts per queue, and the live workers
with their last heartbeat. Healthy means the backend answered within ``backend_timeout``: a
down backend answers 503 within that time, and the key is not even checked then (checking it
needs the backend). Live workers are reported but not required: an API-only deployment is
healthy without them.

``/metrics`` is the Prometheus exposition (`conveyor.server.metrics.ApiMetrics`), admin keys
only (tenant keys would see every tenant's queues)."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..auth import Admin, Principal, authenticate
from ..deadline import backend_deadline
from ..errors import ApiError, api_error_of
from ..models_ops import HealthOut
from ..responses import Json
from .jobs import ERRORS, conveyor_of

log = logging.getLogger("conveyor.server")
router = APIRouter(tags=["operations"])


async def _caller(request: Request) -> Principal | None:
    """The caller if it presented a valid key, else None (health never answers 401)."""
    if request.app.state.settings.auth and "authorization" not in request.headers:
        return None
    try:
        return await authenticate(request)
    except ApiError as exc:
        if exc.status == 503:  # the key could not be checked: the store is down
            raise
        return None


@router.get(
    "/health",
    response_model=HealthOut,
    response_model_exclude_none=True,
    responses={503: {"model": HealthOut, "description": "unhealthy: the backend is unreachable"}},
)
async def health(request: Request) -> Any:
    """Whether this server can reach its job store. No key needed; an admin key also gets the
    backend's latency, counts per queue and the live workers."""
    app = conveyor_of(request)
    started = time.monotonic()
    try:
        async with backend_deadline(request.app.state.settings):
            caller = await _caller(request)
            if caller is None or not caller.admin:
                # Anyone may ask: one cheap read proves the store answers, no full stats.
                await app.paused_queues()
                return {"healthy": True}
            stats = await app.stats()
            workers = await app.workers()
    except Exception as exc:
        err = api_error_of(exc)
        if err is None or err.status != 503:
            raise
        log.warning("health: the backend is unreachable: %s: %s", type(exc).__name__, exc)
        return Json({"healthy": False}, status_code=503, headers={"Retry-After": "1"})
    latency = (time.monotonic() - started) * 1000
    now = app.backend.now()
    return {
        "healthy": True,
        "backend": {
            "reachable": True,
            "kind": urlsplit(app.url).scheme,
            "latency_ms": round(latency, 2),
        },
        "queues": {q: dict(st.counts) for q, st in stats.items()},
        "workers": [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "queues": list(w.queues),
                "active": w.active,
                "concurrency": w.concurrency,
                "last_seen": w.last_seen,
                "seconds_since_heartbeat": None
                if w.last_seen is None
                else round(max(0.0, now - w.last_seen), 3),
            }
            for w in workers
        ],
    }


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        **ERRORS,
        200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"},
    },
)
async def metrics(request: Request, principal: Admin) -> Response:
    """Prometheus metrics: backend-wide gauges (jobs by queue and state, backlog age, live
    workers, open breakers) and, with ``--with-worker``, this process's job counters. Admin
    keys only."""
    exporter = getattr(request.app.state, "metrics", None)
    if exporter is None:
        raise ApiError(503, "metrics_unavailable",
                       "metrics need prometheus-client: pip install 'conveyor[metrics]'")  # fmt: skip
    await exporter.refresh(conveyor_of(request), request.app.state.settings.backend_timeout)
    return Response(exporter.render(), media_type=exporter.content_type)
