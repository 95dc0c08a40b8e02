"""``/v1/jobs``: submit, read, list, cancel, retry single jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from ...app import Conveyor
from ...job import Job
from ..auth import Principal, Reader, Writer
from ..deadline import backend_deadline
from ..errors import ApiError
from ..models import ErrorOut, JobOut, SubmitJob, Submitted

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
    return {"job": job_out(job), "created": job.created is not False, "estimate": None}


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: str, request: Request, principal: Reader) -> dict[str, Any]:
    """One job (404 for a job of another tenant: indistinguishable from none)."""
    app = conveyor_of(request)
    async with backend_deadline(request.app.state.settings):
        job = await app.get(job_id, tenant=principal.tenant_scope())
    return job_out(job)
