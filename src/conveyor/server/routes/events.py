"""``GET /v1/events``: the durable event log as Server-Sent Events, confined to the caller's
tenant, resumable with ``Last-Event-ID``.

Each event is sent as ``id: <cursor>``, ``event: <type>``, ``data: <JSON of the event>``. The
``id`` is the backend's event cursor (`Event.cursor`): a client that reconnects with it in
``Last-Event-ID`` (browsers' EventSource do it by themselves), or passes it as ``?since=``, gets
every later matching event exactly once. The header wins over ``?since=`` (a browser reconnects
to the same URL, adding the header). Without either the stream starts at "now"; ``since=oldest``
starts at the oldest event the log still holds. Resume with the same filters.

Errors before the stream starts are JSON like every other route: a malformed cursor is 422
(``invalid``, field ``since``); a cursor whose events were trimmed by retention is 409
``events_trimmed`` with ``resume``, the cursor that continues past the gap. A failure after the
stream started (backend outage, a trim overtaking a slow reader) is sent as one ``event:
error`` whose data is the same JSON error object, and the stream ends; reconnect with the last
``id`` received.

Cost: streams never poll the backend while idle; one `EventHub` per process watches the log's
head and wakes them (``settings.sse_poll``). An idle stream gets a keep-alive comment every
``settings.sse_keepalive`` seconds. A stream ends at once when the client disconnects or the
server shuts down, and once the caller's key is revoked (an ``unauthorized`` error, within
``key_cache_ttl``). ``?batch=`` filters by the job ids of the batch (events do not carry the
batch), read once when the stream opens: at most `MAX_BATCH_JOBS` jobs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from ...backends.base import Event, EventFilter, EventPage
from ...job import Job
from ..auth import Principal, Reader, still_live
from ..deadline import backend_deadline
from ..errors import ApiError, api_error_of
from ..event_hub import EventHub
from ..settings import ServerSettings
from .jobs import ERRORS, conveyor_of

log = logging.getLogger("conveyor.server")

PAGE = 200  # events per backend read: bounds the memory and the latency of one turn
MAX_BATCH_JOBS = 100_000
MAX_CURSOR = 8192  # a Redis cursor grows by ~40 characters per queue


class EventOut(BaseModel):
    """The ``data`` of one SSE message (``id`` is ``cursor``, ``event`` is ``type``)."""

    cursor: str = Field(description="resume after this event: send it as Last-Event-ID")
    type: str
    job_id: str | None = None
    queue: str | None = None
    task: str | None = None
    tenant: str | None = None
    time: float
    data: dict[str, Any]


_STREAM: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {
        "description": "text/event-stream: `id` = cursor, `event` = type, `data` = EventOut "
        "JSON; `event: error` (data: an ErrorOut) ends the stream",
        "content": {"text/event-stream": {"schema": EventOut.model_json_schema()}},
    },
}
router = APIRouter(prefix="/v1", tags=["events"])

_Name = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("/events", response_class=EventSourceResponse, responses=_STREAM)
async def events(
    request: Request,
    principal: Reader,
    queue: _Name = None,
    job: _Name = None,
    batch: _Name = None,
    tenant: Annotated[
        str | None, Query(min_length=1, max_length=200, description="admin keys only")
    ] = None,
    since: Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR)] = None,
    follow: Annotated[bool, Query(description="false: end after the events so far")] = True,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Follow the event log (Server-Sent Events) from ``Last-Event-ID`` / ``since`` (default:
    now), filtered by queue, job or batch, always within the caller's tenant."""
    app = conveyor_of(request)
    settings: ServerSettings = request.app.state.settings
    hub: EventHub = request.app.state.event_hub
    scope = principal.tenant_scope(tenant)
    if hub.subscribers >= settings.max_streams:  # checked again by no one: a few may overshoot
        raise ApiError(503, "too_many_streams", f"this server already serves its maximum of "
                       f"{settings.max_streams} event streams; try again later",
                       headers={"Retry-After": "5"})  # fmt: skip
    cursor = last_event_id if last_event_id is not None else since
    if cursor is not None and not 0 < len(cursor) <= MAX_CURSOR:
        raise ApiError(422, "invalid", f"the event cursor must be 1-{MAX_CURSOR} characters",
                       extra={"field": "since"})  # fmt: skip
    where = EventFilter(queue=queue, tenant=scope, job_id=job)
    async with backend_deadline(settings):
        if job is not None:
            await _visible_job(request, job, scope)
        only = await batch_jobs(request, batch, scope) if batch is not None else None
        changed = hub.changed()  # before the first read: a later commit wakes the stream
        if cursor is None:
            cursor = await app.backend.last_event_cursor()
        page = await _read(request, cursor, where)
    return EventSourceResponse(
        _stream(request, principal, hub, page, where, only, follow, changed),
        ping=settings.sse_keepalive,
        headers={"Cache-Control": "no-store"},
    )


async def _visible_job(request: Request, job_id: str, scope: str | None) -> Job:
    return await conveyor_of(request).get(job_id, tenant=scope)


async def batch_jobs(request: Request, batch: str, scope: str | None) -> frozenset[str]:
    """The ids of the batch's jobs this caller can see (404 when none: another tenant's batch
    is indistinguishable from a missing one)."""
    app = conveyor_of(request)
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await app.list(batch=batch, tenant=scope, limit=1000, cursor=cursor)
        ids.extend(j.id for j in page.jobs)
        cursor = page.next_cursor
        if cursor is None or len(ids) >= MAX_BATCH_JOBS:
            break
    if not ids:
        raise ApiError(404, "not_found", f"batch {batch!r} not found")
    if cursor is not None:
        raise ApiError(422, "invalid", f"batch {batch!r} has more than {MAX_BATCH_JOBS} jobs: "
                       "follow its queue instead", extra={"field": "batch"})  # fmt: skip
    return frozenset(ids)


async def _read(request: Request, cursor: str, where: EventFilter) -> EventPage:
    try:
        return await conveyor_of(request).backend.read_events(cursor, PAGE, where or None)
    except (OverflowError, ValueError) as exc:  # a number no backend cursor can hold
        err = api_error_of(exc)
        if err is not None:
            raise
        raise ApiError(422, "invalid", f"invalid event cursor {cursor[:100]!r}",
                       extra={"field": "since"}) from None  # fmt: skip


def _message(ev: Event) -> ServerSentEvent:
    return ServerSentEvent(
        data=orjson.dumps(ev.to_dict()).decode(), id=ev.cursor, event=ev.type.value
    )


async def _stream(
    request: Request,
    principal: Principal,
    hub: EventHub,
    page: EventPage,
    where: EventFilter,
    only: frozenset[str] | None,
    follow: bool,
    changed: Any,
) -> AsyncIterator[ServerSentEvent]:
    """The events of ``page`` and of every later read, until the client leaves, the server
    stops, a read fails (sent as ``event: error``), or the caller's key is revoked (sent as an
    ``unauthorized`` error). The key is checked after each read and before its events are sent
    (cached ``key_cache_ttl``): a key checked before a read could be revoked while the read
    ran, and that read's events, written after the revocation, would still go out."""
    settings: ServerSettings = request.app.state.settings
    hub.subscribe()
    try:
        while True:
            try:
                async with backend_deadline(settings):
                    if not await still_live(request, principal.key_id):
                        raise ApiError(401, "unauthorized", "the API key was revoked")
            except Exception as exc:
                yield _error_event(request, exc)
                return
            for ev in page.events:
                if only is None or ev.job_id in only:
                    yield _message(ev)
            if not page.more:
                if not follow:
                    return
                await changed.wait()
                if hub.closed.is_set():
                    return
            changed = hub.changed()
            try:
                async with backend_deadline(settings):
                    page = await _read(request, page.cursor, where)
            except Exception as exc:
                yield _error_event(request, exc)
                return
    finally:
        hub.unsubscribe()


def _error_event(request: Request, exc: Exception) -> ServerSentEvent:
    err = api_error_of(exc)
    if err is None:
        log.error("event stream failed on %s", request.url.path, exc_info=exc)
        err = ApiError(500, "internal", "internal server error")
    elif err.status == 503:
        log.warning("event stream: backend unavailable: %r", exc)
    body = {"error": {"code": err.code, "message": err.message, **err.extra}}
    return ServerSentEvent(data=orjson.dumps(body).decode(), event="error")


__all__ = ["EventOut", "router"]
