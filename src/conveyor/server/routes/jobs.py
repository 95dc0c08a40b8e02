"""``/v1/jobs``: submit, read, list, cancel, retry, resume single jobs.

Every read and action is confined to the caller's tenant (`Principal.tenant_scope`): another
tenant's job answers 404 exactly like a missing one, and lists never include it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from ...app import Conveyor
from ...job import Job, JobState
from .. import actions
from ..auth import Principal, Reader, Writer
from ..deadline import backend_deadline
from ..errors import ApiError
from ..estimate import estimator_of, for_caller
from ..models import ErrorOut, JobOut, ResumeJob, SubmitJob, Submitted
from ..models_jobs import JobPageOut

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)


def conveyor_of(request: Request) -> Conveyor:
    return request.app.state.conveyor  # type: ignore[no-any-return]


def job_out(job: Job) -> dict[str, Any]:
    return job.to_dict()


def submit_tenant(principal: Principal, asked: str | None) -> str | None:
    """The tenant a new job belongs to: a tenant key's own (asking for another is refused)."""
    if principal.admin:
        return asked
    if asked is not None and asked != principal.tenant:
        raise ApiError(403, "forbidden", "a tenant API key can only submit jobs of its own tenant")
    return principal.tenant


def read_tenant(principal: Principal, asked: str | None) -> str | None:
    """The tenant a read or bulk action is confined to: a tenant key's own (asking for another
    is refused); for an admin the one asked for, None meaning every tenant."""
    if not principal.admin and asked is not None and asked != principal.tenant:
        raise ApiError(403, "forbidden", "a tenant API key can only see jobs of its own tenant")
    return principal.tenant_scope(asked)


@router.post("", status_code=202, response_model=Submitted)
async def submit(
    body: SubmitJob,
    request: Request,
    response: Response,
    principal: Writer,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Enqueue one job. Answers 202 with the job and an estimate of its start and finish."""
    key = body.idempotency_key or idempotency_key
    if body.idempotency_key and idempotency_key and body.idempotency_key != idempotency_key:
        raise ApiError(422, "invalid", "the Idempotency-Key header and body field differ")
    app = conveyor_of(request)
    async with backend_deadline(request.app.state.settings):
        job = await app.enqueue(
            body.task,
            body.payload,
            priority=body.priority,
            delay=body.delay,
            idempotency_key=key,
            tenant=submit_tenant(principal, body.tenant),
            max_attempts=body.max_attempts,
            meta=body.meta,
        )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    estimate = None
    if job.status in (JobState.QUEUED, JobState.SCHEDULED):
        estimate = for_caller(await estimator_of(request).for_job(
            job.queue, job.created_at, job.scheduled_for), principal.admin)  # fmt: skip
    return {"job": job_out(job), "created": job.created is not False, "estimate": estimate}


Name = Annotated[str | None, Query(min_length=1, max_length=512)]
_ADMIN = "admin keys only (a tenant key: its own tenant)"
_CURSOR = "`next_cursor` of the previous page"


@router.get("", response_model=JobPageOut)
async def list_jobs(
    request: Request,
    principal: Reader,
    status: Annotated[JobState | None, Query()] = None,
    queue: Name = None,
    task: Name = None,
    batch: Name = None,
    tenant: Annotated[str | None, Query(min_length=1, max_length=512, description=_ADMIN)] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200, description=_CURSOR)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Jobs newest first, filtered; follow ``next_cursor`` for the next page. A tenant key
    lists its own tenant's jobs only."""
    app = conveyor_of(request)
    scope = read_tenant(principal, tenant)
    async with backend_deadline(request.app.state.settings):
        page = await app.list(status=status, queue=queue, task=task, batch=batch, tenant=scope,
                              limit=limit, cursor=cursor)  # fmt: skip
    return {"jobs": [job_out(j) for j in page.jobs], "next_cursor": page.next_cursor}


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: str, request: Request, principal: Reader) -> dict[str, Any]:
    """One job (404 for a job of another tenant: indistinguishable from none)."""
    app = conveyor_of(request)
    async with backend_deadline(request.app.state.settings):
        job = await app.get(job_id, tenant=principal.tenant_scope())
    return job_out(job)


@router.delete("/{job_id}", response_model=JobOut)
async def cancel_job(job_id: str, request: Request, principal: Writer) -> dict[str, Any]:
    """Cancel a pending or active job; answers it. Idempotent on a cancelled job; 409 for a
    completed or failed one; 404 for another tenant's."""
    job = await actions.cancel(conveyor_of(request), request.app.state.settings, principal,
                            job_id, "api")  # fmt: skip
    return job_out(job)


@router.post("/{job_id}/retry", response_model=JobOut)
async def retry_job(job_id: str, request: Request, principal: Writer) -> dict[str, Any]:
    """Requeue a failed or cancelled job with fresh attempts; 409 from any other state, 429
    ``queue_full`` when its queue is at its ``max_queued``; 404 for another tenant's."""
    job = await actions.retry(conveyor_of(request), request.app.state.settings, principal,
                            job_id, "api")  # fmt: skip
    return job_out(job)


@router.post("/{job_id}/resume", response_model=JobOut)
async def resume_job(
    job_id: str, request: Request, principal: Writer, body: ResumeJob | None = None
) -> dict[str, Any]:
    """Continue an awaiting job (its handler returned ``AwaitInput``) with the decision
    ``data``: it is queued again and its handler runs with ``ctx.input``. Exactly once: 409
    ``conflict`` (with ``state``) when it is not awaiting, a second resume included; 404 for
    another tenant's; 422 for a decision larger than 64 KiB."""
    data = None if body is None else body.data
    job = await actions.resume(conveyor_of(request), request.app.state.settings, principal,
                               job_id, data, "api")  # fmt: skip
    return job_out(job)
