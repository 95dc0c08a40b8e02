"""The operations pages: queues (counts, charts, times, capacity, limits, pause / resume),
workers (admin keys only) and cost per task (admin keys only).

The queues page reads what ``GET /v1/queues`` answers (`conveyor.server.routes.queues`): the
backend's O(1) per-queue figures for an admin, a tenant key's own jobs' counts for a tenant."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from ..server import actions
from ..server.auth import require_admin
from ..server.deadline import backend_deadline
from ..server.errors import not_found
from ..server.routes.queues import known_queue, queue_views
from .history import History
from .web import HtmlRoute, conveyor_of, fragment, render, session_viewer, settings_of
from .web import writer_form as _writer_form

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)


@router.get("/queues")
async def queues(request: Request) -> Response:
    viewer = await session_viewer(request)
    app = conveyor_of(request)
    async with backend_deadline(settings_of(request)):
        _, complete, views = await queue_views(app, viewer.principal, None)
    history: History = request.app.state.dashboard_history
    charts: dict[str, dict[str, list[float]]] = {}
    if viewer.admin:
        for v in views:
            history.record(v["queue"], v["throughput_per_s"], v["counts"]["failed"])
            charts[v["queue"]] = {"throughput": history.throughput(v["queue"]),
                                  "failures": history.failures(v["queue"])}  # fmt: skip
    return render(request, "queues.html", viewer, block=fragment(request), queues=views,
                  complete=complete, charts=charts, live_url="/queues?fragment=1")  # fmt: skip


@router.post("/queues/{queue}/{action}")
async def pause_resume(queue: str, action: str, request: Request) -> Response:
    viewer, _ = await _writer_form(request)
    if action not in ("pause", "resume"):
        raise not_found("action", action[:40])
    require_admin(viewer.principal)
    app = conveyor_of(request)
    async with backend_deadline(settings_of(request)):
        if not await known_queue(app, viewer.principal, queue):
            raise not_found("queue", queue)
    await actions.set_paused(app, settings_of(request), viewer.principal, queue,
                             action == "pause", "dashboard")  # fmt: skip
    return RedirectResponse("/queues", status_code=303)


@router.get("/workers")
async def workers(request: Request) -> Response:
    viewer = await session_viewer(request)
    require_admin(viewer.principal)
    app = conveyor_of(request)
    async with backend_deadline(settings_of(request)):
        found = await app.workers()
    now = app.backend.now()
    rows = [{"w": w, "alive": w.last_seen is not None and now - w.last_seen <= w.ttl,
             "since": None if w.last_seen is None else max(0.0, now - w.last_seen)}
            for w in found]  # fmt: skip
    return render(request, "workers.html", viewer, block=fragment(request), rows=rows,
                  live_url="/workers?fragment=1")  # fmt: skip


@router.get("/costs")
async def costs(request: Request) -> Response:
    viewer = await session_viewer(request)
    require_admin(viewer.principal)
    async with backend_deadline(settings_of(request)):
        stats = await conveyor_of(request).stats()
    totals: dict[str, dict[str, float]] = {}
    for st in stats.values():
        for task, units in st.cost.items():
            per = totals.setdefault(task, {})
            for unit, amount in units.items():
                per[unit] = per.get(unit, 0.0) + amount
    names = sorted({u for per in totals.values() for u in per})
    rows: list[dict[str, Any]] = [{"task": t, "units": totals[t]} for t in sorted(totals)]
    return render(request, "costs.html", viewer, block=fragment(request), rows=rows,
                  units=names, live_url="/costs?fragment=1")  # fmt: skip
