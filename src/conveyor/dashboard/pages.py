"""The jobs pages: the list (filters in the URL, cursor pagination), one job's detail, the
jobs awaiting a human decision, and their actions (cancel, retry, approve / reject, bulk).

Reads are confined to the viewer's tenant (`Viewer.scope`; a tenant key naming another tenant
is refused, another tenant's job answers 404); every action goes through
`conveyor.server.actions`, the API's own checks and audit."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from ..backends.base import EVENTS_OLDEST, EventFilter
from ..errors import JobNotFound, WorkflowNotFound
from ..job import FINAL_STATES, Job, JobState
from ..server import actions
from ..server.deadline import backend_deadline
from ..server.errors import ApiError
from ..server.routes.bulk import CANCELLABLE, RETRYABLE
from ..server.routes.jobs import read_tenant
from .filters import FULL_ID, ID_SCAN, JobFilter, count_matching
from .web import (
    HtmlRoute,
    conveyor_of,
    fragment,
    render,
    safe_next,
    session_viewer,
    settings_of,
    writer_form,
)

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

PAGE = 50
TIMELINE = 500  # events of a job read for its page (the newest `TIMELINE_SHOWN` are shown)
TIMELINE_SHOWN = 100
NOTICES = {
    "cancel": "Job cancelled.",
    "retry": "Job queued again.",
    "approve": "Approved: the job is queued again.",
    "reject": "Rejected: the job is queued again with the decision.",
    "bulk_cancel": "{n} job(s) cancelled.",
    "bulk_retry": "{n} job(s) queued again.",
}


def notice(request: Request) -> str | None:
    """The message of an action just done (a known one only: the URL cannot inject text)."""
    done = request.query_params.get("done")
    text = NOTICES.get(done or "")
    if text is None:
        return None
    n = request.query_params.get("n", "")
    return text.format(n=f"{int(n):,}" if n.isdigit() and len(n) < 12 else "some")


@router.get("/jobs")
async def jobs_list(request: Request) -> Response:
    viewer = await session_viewer(request)
    filt = JobFilter.parse(request.query_params)
    cursor = request.query_params.get("cursor") or None
    tenant = read_tenant(viewer.principal, filt.tenant)
    app = conveyor_of(request)
    scanned = None
    async with backend_deadline(settings_of(request)):
        if filt.id is not None and FULL_ID.fullmatch(filt.id):
            try:
                found = [await app.get(filt.id, tenant=tenant)]
            except JobNotFound:
                found = []
            jobs, next_cursor = [j for j in found if _matches(j, filt)], None
        elif filt.id is not None:
            jobs, next_cursor, scanned = await _scan_prefix(app, filt, tenant, cursor)
        else:
            page = await app.list(status=filt.status, queue=filt.queue, task=filt.task,
                                  batch=filt.batch, tenant=tenant, limit=PAGE,
                                  cursor=cursor)  # fmt: skip
            jobs, next_cursor = page.jobs, page.next_cursor
    bulk_ok = viewer.can_write and filt.given() and filt.id is None
    return render(request, "jobs.html", viewer, block=fragment(request), jobs=jobs,
                  filt=filt, next_cursor=next_cursor, first_page=cursor is None,
                  states=list(JobState), scanned=scanned, bulk_ok=bulk_ok,
                  notice=notice(request), back=_back(request),
                  live_url=f"/jobs?{filt.query(cursor=cursor, fragment='1')}")  # fmt: skip


def _matches(job: Job, filt: JobFilter) -> Job | None:
    for name in ("queue", "task", "tenant", "batch"):
        want = getattr(filt, name)
        if want is not None and getattr(job, name) != want:
            return None
    if filt.status is not None and job.status is not filt.status:
        return None
    return job


async def _scan_prefix(
    app: Any, filt: JobFilter, tenant: str | None, cursor: str | None
) -> tuple[list[Job], str | None, int]:
    """Jobs whose id starts with ``filt.id`` among the newest `ID_SCAN` matching the other
    filters (a bounded scan: ids are not indexed by prefix)."""
    out: list[Job] = []
    seen = 0
    while seen < ID_SCAN and len(out) < PAGE:
        page = await app.list(status=filt.status, queue=filt.queue, task=filt.task,
                              batch=filt.batch, tenant=tenant, limit=500, cursor=cursor)  # fmt: skip
        seen += len(page.jobs)
        out.extend(j for j in page.jobs if j.id.startswith(filt.id or ""))
        cursor = page.next_cursor
        if cursor is None:
            break
    return out[:PAGE], cursor if seen < ID_SCAN else None, seen


def _back(request: Request) -> str:
    """This page's URL without the one-shot notice, for the forms to come back to."""
    params = [(k, v) for k, v in request.query_params.multi_items()
              if k not in ("done", "n", "fragment")]  # fmt: skip
    return request.url.path + (f"?{urlencode(params)}" if params else "")


@router.get("/jobs/bulk")
async def bulk_confirm(request: Request) -> Response:
    viewer = await session_viewer(request)
    action = request.query_params.get("action")
    if action not in ("cancel", "retry"):
        raise ApiError(422, "invalid", "action must be cancel or retry")
    if not viewer.can_write:
        raise ApiError(403, "forbidden", "this API key is read-only")
    filt = JobFilter.parse(request.query_params)
    bulk = filt.bulk()
    if not bulk.given():
        raise ApiError(422, "invalid", "give at least one filter: acting on every job must be "
                       "asked for explicitly")  # fmt: skip
    allowed = CANCELLABLE if action == "cancel" else RETRYABLE
    if filt.status is not None and filt.status not in allowed:
        raise ApiError(422, "invalid", f"jobs that are {filt.status.value} cannot be {action}ed")
    statuses = (filt.status,) if filt.status is not None else tuple(allowed)
    tenant = read_tenant(viewer.principal, filt.tenant)
    async with backend_deadline(settings_of(request)):
        count, exact = await count_matching(conveyor_of(request), viewer, filt, statuses, tenant)
    return render(request, "bulk.html", viewer, action=action, filt=filt, count=count,
                  exact=exact, statuses=[s.value for s in statuses])  # fmt: skip


@router.post("/jobs/bulk")
async def bulk_run(request: Request) -> Response:
    viewer, form = await writer_form(request)
    asked = form.get("action")
    if asked not in ("cancel", "retry"):
        raise ApiError(422, "invalid", "action must be cancel or retry")
    action: Literal["cancel", "retry"] = "cancel" if asked == "cancel" else "retry"
    filt = JobFilter.parse(form)
    counts = await actions.bulk(conveyor_of(request), settings_of(request), viewer.principal,
                                action, filt.bulk(), "dashboard")  # fmt: skip
    target = f"/jobs?{filt.query(done=f'bulk_{action}', n=str(counts['changed']))}"
    return RedirectResponse(target, status_code=303)


@router.get("/jobs/{job_id}")
async def job_detail(job_id: str, request: Request) -> Response:
    viewer = await session_viewer(request)
    app = conveyor_of(request)
    scope = viewer.scope
    async with backend_deadline(settings_of(request)):
        job = await app.get(job_id, tenant=scope)
        page = await app.backend.read_events(
            EVENTS_OLDEST, TIMELINE, EventFilter(queue=job.queue, tenant=scope, job_id=job.id)
        )
        workflow = None
        if job.workflow is not None:
            try:
                workflow = await app.workflow(job.workflow, tenant=scope)
            except WorkflowNotFound:
                workflow = None
    events = page.events[-TIMELINE_SHOWN:]
    return render(request, "job.html", viewer, block=fragment(request), job=job,
                  events=events, hidden=len(page.events) - len(events), more=page.more,
                  workflow=workflow, final=job.status in FINAL_STATES,
                  retryable=job.status in RETRYABLE, notice=notice(request),
                  back=f"/jobs/{job.id}", live_url=f"/jobs/{job.id}?fragment=1")  # fmt: skip


@router.get("/awaiting")
async def awaiting(request: Request) -> Response:
    viewer = await session_viewer(request)
    cursor = request.query_params.get("cursor") or None
    async with backend_deadline(settings_of(request)):
        page = await conveyor_of(request).list(status=JobState.AWAITING, tenant=viewer.scope,
                                               limit=PAGE, cursor=cursor)  # fmt: skip
    return render(request, "awaiting.html", viewer, block=fragment(request), jobs=page.jobs,
                  next_cursor=page.next_cursor, notice=notice(request), back="/awaiting",
                  live_url="/awaiting?" + urlencode({"fragment": "1", "cursor": cursor or ""}))  # fmt: skip


@router.post("/jobs/{job_id}/{action}")
async def job_action(job_id: str, action: str, request: Request) -> Response:
    viewer, form = await writer_form(request)
    app, settings = conveyor_of(request), settings_of(request)
    back = form.get("back")
    target = safe_next(back if isinstance(back, str) else None)
    if action == "cancel":
        await actions.cancel(app, settings, viewer.principal, job_id, "dashboard")
        done = "cancel"
    elif action == "retry":
        await actions.retry(app, settings, viewer.principal, job_id, "dashboard")
        done = "retry"
    elif action == "resume":
        decision = form.get("decision")
        if decision not in ("approve", "reject"):
            raise ApiError(422, "invalid", "decision must be approve or reject")
        data = _decision(decision == "approve", form.get("data"), viewer.principal.key_id)
        await actions.resume(app, settings, viewer.principal, job_id, data, "dashboard")
        done = str(decision)
    else:
        raise ApiError(404, "not_found", f"no action {action[:40]!r}")
    sep = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{sep}done={done}", status_code=303)


def _decision(approved: bool, raw: object, key_id: str | None) -> dict[str, Any]:
    """The resume data of an approve / reject form: ``{"approved", "by"}``, with the fields of
    a JSON object typed in the data box, or its text as ``note``."""
    out: dict[str, Any] = {}
    text = raw.strip() if isinstance(raw, str) else ""
    if text:
        try:
            extra = orjson.loads(text)
        except orjson.JSONDecodeError:
            extra = None
        if isinstance(extra, dict):
            out.update(extra)
        else:
            out["note"] = text
    out["approved"] = approved
    out["by"] = key_id or "dashboard"
    return out
