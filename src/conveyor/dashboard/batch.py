"""The batch progress page (what an end user watches while a batch of their records runs),
its read-only links, and its cancel button.

``/batches/{id}`` is readable with a session (the key's tenant) or with a batch link's token
(``?token=``: that batch only, read-only, within the tenant of the key that made the link). It
is the one page that may be framed: its CSP ``frame-ancestors`` is
`ServerSettings.frame_ancestors`. It never shows cost, errors or payloads: counts, the running
jobs' own progress messages, an ETA in words, plain sentences. ``?noun=session&verb=enriched``
words them ("3 sessions enriched").

``GET /v1/batches/{id}/link`` (API key) and the page's "share" form make a link."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from ..job import JobState
from ..server import actions
from ..server.auth import Principal, Reader, still_live
from ..server.deadline import backend_deadline
from ..server.errors import ApiError, not_found
from ..server.models_jobs import BulkFilter
from ..server.routes.jobs import ERRORS
from .tokens import BatchGrant
from .web import (
    CSP,
    HtmlRoute,
    Viewer,
    conveyor_of,
    fragment,
    render,
    session_viewer,
    settings_of,
    signer_of,
    writer_form,
)

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)
api_router = APIRouter(tags=["batches"], responses=ERRORS)

RUNNING_SHOWN = 20
WORD = re.compile(r"[A-Za-z][A-Za-z -]{0,29}")


async def batch_viewer(request: Request, batch_id: str) -> Viewer:
    """A batch link's holder (``?token=``, for this batch only) or a logged-in viewer."""
    token = request.query_params.get("token")
    if token:
        grant = await live_grant(request, token)
        if grant is None or grant.batch != batch_id:
            raise ApiError(403, "forbidden", "this batch link is not valid (expired, changed, "
                           "revoked, or for another batch): ask for a new one")  # fmt: skip
        return Viewer(Principal(None, grant.tenant, read_only=True), grant=grant)
    return await session_viewer(request)


async def live_grant(request: Request, token: str | None) -> BatchGrant | None:
    """What a batch link's token allows now: None when it is not valid, or once the key that
    made it was revoked (looked up again, cached ``key_cache_ttl``, like a session's key). A
    link made under ``--no-auth`` stops working once the server has auth."""
    grant = signer_of(request).batch_grant(token)
    if grant is None:
        return None
    if grant.key_id is None:
        return None if settings_of(request).auth else grant
    return grant if await still_live(request, grant.key_id) else None


def _word(request: Request, name: str, default: str) -> str:
    value = request.query_params.get(name)
    return value if value is not None and WORD.fullmatch(value) else default


@router.get("/batches/{batch_id}")
async def batch_page(batch_id: str, request: Request) -> Response:
    viewer = await batch_viewer(request, batch_id)
    app = conveyor_of(request)
    scope = viewer.scope
    async with backend_deadline(settings_of(request)):
        status = await (await app.batch(batch_id, tenant=scope)).status()
        if status.total == 0:
            raise not_found("batch", batch_id)
        running = await app.list(batch=batch_id, status=JobState.ACTIVE, tenant=scope,
                                 limit=RUNNING_SHOWN)  # fmt: skip
    counts = status.counts
    pending = sum(counts.get(s, 0) for s in ("scheduled", "queued", "awaiting"))
    token = request.query_params.get("token")
    words = {"noun": _word(request, "noun", "item"), "verb": _word(request, "verb", "processed")}
    keep = {k: v for k, v in (("token", token), *words.items()) if v}
    response = render(
        request, "batch.html", viewer, block=fragment(request), batch=status,
        completed=counts.get("completed", 0), failed=counts.get("failed", 0),
        cancelled=counts.get("cancelled", 0), processing=counts.get("active", 0),
        pending=pending, running=running.jobs, noun=words["noun"], verb=words["verb"],
        cancellable=viewer.can_write and not status.finished,
        live_url=f"/batches/{quote(batch_id, safe='')}?{urlencode({**keep, 'fragment': '1'})}",
        stream_url=f"/events?{urlencode({'batch': batch_id, **({'token': token} if token else {})})}",
        link=_own_link(request.query_params.get("link"), batch_id),
    )  # fmt: skip
    ancestors = " ".join(settings_of(request).frame_ancestors) or "'none'"
    response.headers["Content-Security-Policy"] = CSP.format(ancestors=ancestors)
    return response


def _own_link(link: str | None, batch_id: str) -> str | None:
    """The link just made (shown after "make a link"): only a path to this batch's page with a
    token, never an arbitrary URL from the query."""
    prefix = f"/batches/{quote(batch_id, safe='')}?" + urlencode({"token": ""})
    return link if link is not None and link.startswith(prefix) and "\n" not in link else None


@router.post("/batches/{batch_id}/cancel")
async def batch_cancel(batch_id: str, request: Request) -> Response:
    viewer, _ = await writer_form(request)
    await actions.bulk(conveyor_of(request), settings_of(request), viewer.principal, "cancel",
                       BulkFilter.model_validate({"batch": batch_id}), "dashboard")  # fmt: skip
    return RedirectResponse(f"/batches/{quote(batch_id, safe='')}", status_code=303)


@router.post("/batches/{batch_id}/link")
async def batch_share(batch_id: str, request: Request) -> Response:
    viewer, _ = await _reader_form(request)
    link = await make_link(request, batch_id, viewer.scope, viewer.principal.key_id)
    return RedirectResponse(
        f"/batches/{quote(batch_id, safe='')}?{urlencode({'link': link})}", status_code=303
    )


async def _reader_form(request: Request) -> tuple[Viewer, Any]:
    """Making a link changes nothing: a read-only session may, with the CSRF token."""
    viewer = await session_viewer(request)
    form = await request.form()
    assert viewer.session is not None
    if not signer_of(request).csrf_ok(viewer.session, form.get("csrf")):
        raise ApiError(403, "csrf", "the form's CSRF token is missing or not this session's")
    return viewer, form


async def make_link(request: Request, batch_id: str, tenant: str | None, key_id: str | None) -> str:
    """The path of a read-only link to ``batch_id`` within ``tenant``, made by the key
    ``key_id`` (it stops working once that key is revoked; 404 when that tenant has no job of
    the batch)."""
    async with backend_deadline(settings_of(request)):
        status = await (await conveyor_of(request).batch(batch_id, tenant=tenant)).status()
    if status.total == 0:
        raise not_found("batch", batch_id)
    token = signer_of(request).batch_token(batch_id, tenant, key_id)
    return f"/batches/{quote(batch_id, safe='')}?{urlencode({'token': token})}"


@api_router.get("/v1/batches/{batch_id}/link")
async def batch_link(
    batch_id: str,
    request: Request,
    principal: Reader,
    noun: Annotated[str | None, Query(pattern=WORD.pattern)] = None,
    verb: Annotated[str | None, Query(pattern=WORD.pattern)] = None,
) -> dict[str, Any]:
    """A read-only link to the batch's progress page for an end user (no login: the token in
    the URL allows reading this batch only, within the caller's tenant), valid for the
    server's ``batch_link_ttl`` and until the caller's key is revoked. ``noun`` / ``verb`` word its sentences. 404 for an unknown
    batch or another tenant's."""
    path = await make_link(request, batch_id, principal.tenant_scope(), principal.key_id)
    extra = urlencode({k: v for k, v in (("noun", noun), ("verb", verb)) if v})
    path = f"{path}&{extra}" if extra else path
    return {"path": path, "url": str(request.base_url).rstrip("/") + path,
            "expires_in": settings_of(request).batch_link_ttl}  # fmt: skip
