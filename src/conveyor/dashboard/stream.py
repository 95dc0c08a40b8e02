"""``/events``: the dashboard's live updates, Server-Sent Events authenticated by the session
cookie or a batch link's token (a browser's EventSource cannot send an Authorization header).

The stream does not forward events one by one: each turn of the server's `EventHub` (every
``sse_poll`` seconds while something changed) reads the new events within the viewer's tenant
(and batch or job, when asked) and sends one ``event: tick`` whose data is
``{"n": how many, "jobs": [up to 50 job ids]}``. The page then fetches its live part again
(`static/dash.js`), so a browser costs the same whether 1 or 5,000 jobs finished meanwhile.

A batch link's stream of a batch larger than `MAX_BATCH_JOBS` (whose job ids are not read
when it opens) cannot tell its batch's events from the rest of its tenant's: its ticks say only
that something changed, ``{"n": null, "jobs": []}``, never another job's id or the tenant's
event count."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..backends.base import EventFilter
from ..server.auth import still_live
from ..server.deadline import backend_deadline
from ..server.errors import ApiError
from ..server.event_hub import EventHub
from ..server.routes.events import MAX_BATCH_JOBS, batch_jobs
from .batch import batch_viewer, live_grant
from .tokens import SESSION_COOKIE
from .web import HtmlRoute, Viewer, conveyor_of, session_viewer, settings_of, signer_of

log = logging.getLogger("conveyor.server")
router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

READ = 1000  # events per backend read
SHOWN_IDS = 50


@router.get("/events")
async def stream(request: Request) -> Any:
    batch = request.query_params.get("batch") or None
    job = request.query_params.get("job") or None
    for name, value in (("batch", batch), ("job", job)):
        if value is not None and len(value) > 512:
            raise ApiError(422, "invalid", f"{name} is longer than 512 characters")
    if batch is not None:
        viewer = await batch_viewer(request, batch)
    else:
        viewer = await session_viewer(request)
    if viewer.grant is not None and job is not None:
        # A batch link reads its batch only: following (or probing for) any other job of
        # its tenant, or of every tenant for an admin's link, is not part of it.
        raise ApiError(403, "forbidden", "a batch link follows its batch only, not one job")
    settings = settings_of(request)
    hub: EventHub = request.app.state.event_hub
    if hub.subscribers >= settings.max_streams:
        raise ApiError(503, "too_many_streams", "too many live pages open; try again later",
                       headers={"Retry-After": "5"})  # fmt: skip
    app = conveyor_of(request)
    where = EventFilter(tenant=viewer.scope, job_id=job)
    only: frozenset[str] | None = None
    async with backend_deadline(settings):
        if job is not None:
            await app.get(job, tenant=viewer.scope)  # 404 for another tenant's job
        if batch is not None:
            try:
                only = await batch_jobs(request, batch, viewer.scope)
            except ApiError as exc:
                if exc.status != 422:  # larger than MAX_BATCH_JOBS: every tenant event ticks
                    raise
        changed = hub.changed()
        cursor = await app.backend.last_event_cursor()
    return EventSourceResponse(
        _ticks(request, viewer, hub, cursor, where, only, changed),
        ping=settings.sse_keepalive,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _still_allowed(request: Request, viewer: Viewer) -> bool:
    """Whether the stream's viewer may still read: its batch link or session not expired, its
    key not revoked (read again, cached ``key_cache_ttl``). Not `session_viewer`: a tick is
    not a request of the key's rate."""
    signer = signer_of(request)
    if viewer.grant is not None:
        return await live_grant(request, request.query_params.get("token")) is not None
    session = signer.session(request.cookies.get(SESSION_COOKIE))
    return session is not None and await still_live(request, session.key_id)


async def _ticks(
    request: Request,
    viewer: Viewer,
    hub: EventHub,
    cursor: str,
    where: EventFilter,
    only: frozenset[str] | None,
    changed: Any,
) -> AsyncIterator[ServerSentEvent]:
    settings = settings_of(request)
    backend = conveyor_of(request).backend
    # A batch link without its batch's ids (too big to read): nothing of the tenant beyond "some
    # change", which is all its page needs.
    blind = viewer.grant is not None and only is None
    hub.subscribe()
    try:
        yield ServerSentEvent(event="ready", data="{}", retry=1000)
        while True:
            await changed.wait()
            if hub.closed.is_set():
                return
            changed = hub.changed()
            ids: list[str] = []
            n = 0
            try:
                while True:
                    async with backend_deadline(settings):
                        page = await backend.read_events(cursor, READ, where)
                    cursor = page.cursor
                    for ev in page.events:
                        if only is not None and ev.job_id not in only:
                            continue
                        n += 1
                        if blind:
                            continue
                        if ev.job_id and len(ids) < SHOWN_IDS and ev.job_id not in ids:
                            ids.append(ev.job_id)
                    if not page.more:
                        break
                # Checked after the reads, not before: a key revoked while they ran must not
                # get a tick for what was written after its revocation.
                async with backend_deadline(settings):
                    if not await _still_allowed(request, viewer):
                        return  # revoked or expired since the stream opened: no more ticks
            except Exception as exc:  # a trim overtook us, an outage: the page reconnects
                log.warning("dashboard stream ended: %r", exc)
                return
            if n:
                tick = {"n": None if blind else n, "jobs": ids}
                yield ServerSentEvent(event="tick", data=orjson.dumps(tick).decode())
    finally:
        hub.unsubscribe()


__all__ = ["MAX_BATCH_JOBS", "router"]
