"""Bulk actions by filter: ``POST /v1/jobs/cancel`` ("clear the queue") and
``POST /v1/jobs/retry`` ("retry all failed").

The filter is the listing's (status, queue, task, batch, tenant); at least one field must be
given, so that acting on every job is always a deliberate ``{"queue": ...}`` or
``{"status": ...}``, never an empty body. A tenant key acts on its own tenant's jobs only (its
listing and each action are confined to it); an admin key on every tenant's, or on the one
``tenant`` it names.

How it runs: on top of the producer API, so it works the same on every backend. The matching
jobs are listed page by page (newest first, `BULK_PAGE` at a time, by cursor: jobs that arrive
meanwhile are newer than the cursor and are left alone), and each listed job gets its own
``cancel`` / ``retry`` call, `BULK_PARALLEL` at a time. Each call is atomic on its own, not the
whole: a job that changed state or was deleted between the listing and its call is skipped
(``matched`` counts it, ``changed`` does not), never an error. The cost is one backend call per
matching job plus one listing per page, so a queue of a million jobs takes minutes in one
request (each call stays under the backend deadline, the request as a whole does not); on
Redis an admin listing without ``tenant`` also scans the queue's state sets per page. A client
that gives up on the request does not stop it; sending it again is harmless (it finds fewer
jobs). A retry that meets a full queue (``max_queued``) stops there and answers 429
``queue_full`` with the counts so far."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request

from ...app import Conveyor
from ...errors import JobNotFound, JobStateError, QueueFull
from ...job import Job, JobState
from .. import actions
from ..auth import Writer
from ..deadline import backend_deadline
from ..errors import ApiError
from ..models_jobs import BulkFilter, BulkResult
from ..settings import ServerSettings
from .jobs import ERRORS, conveyor_of

router = APIRouter(prefix="/v1/jobs", tags=["bulk"], responses=ERRORS)

#: Jobs listed per page of a bulk action.
BULK_PAGE = 500
#: Actions in flight at once (SQLite commits them in groups, Redis pipelines the connections).
BULK_PARALLEL = 32

CANCELLABLE = (JobState.SCHEDULED, JobState.QUEUED, JobState.AWAITING, JobState.ACTIVE)
RETRYABLE = (JobState.FAILED, JobState.CANCELLED)


def check_filter(filt: BulkFilter, allowed: Sequence[JobState], verb: str) -> Sequence[JobState]:
    if not filt.given():
        raise ApiError(422, "invalid", "give at least one filter field (status, queue, task, "
                       f"batch or tenant): {verb} every job must be asked for explicitly",
                       extra={"field": "body"})  # fmt: skip
    if filt.status is None:
        return allowed
    if filt.status not in allowed:
        names = ", ".join(s.value for s in allowed)
        raise ApiError(422, "invalid", f"status {filt.status.value!r} cannot be used to {verb}: "
                       f"use one of {names}", extra={"field": "status"})  # fmt: skip
    return (filt.status,)


async def _act(
    act: Callable[[str], Awaitable[Job]], job_id: str, gate: asyncio.Semaphore,
    settings: ServerSettings,
) -> bool | QueueFull:  # fmt: skip
    """One job's action: True if it changed, False if skipped, the QueueFull that stopped it."""
    async with gate:
        try:
            async with backend_deadline(settings):
                await act(job_id)
        except (JobNotFound, JobStateError):  # it changed meanwhile: skipped, not an error
            return False
        except QueueFull as exc:
            return exc
    return True


async def run_bulk(
    app: Conveyor,
    settings: ServerSettings,
    filt: BulkFilter,
    tenant: str | None,
    statuses: Sequence[JobState],
    act: Callable[[str], Awaitable[Job]],
) -> dict[str, int]:
    """List the jobs of each status matching ``filt`` (within ``tenant``; None: all) page by
    page and apply ``act`` to each; returns ``{"matched", "changed"}``."""
    matched = changed = 0
    gate = asyncio.Semaphore(BULK_PARALLEL)
    for status in statuses:
        cursor: str | None = None
        while True:
            async with backend_deadline(settings):
                page = await app.list(status=status, queue=filt.queue, task=filt.task,
                                      batch=filt.batch, tenant=tenant, limit=BULK_PAGE,
                                      cursor=cursor)  # fmt: skip
            matched += len(page.jobs)
            done = await asyncio.gather(
                *(_act(act, j.id, gate, settings) for j in page.jobs), return_exceptions=True
            )
            failed = next((d for d in done if isinstance(d, ApiError | Exception)
                           and not isinstance(d, QueueFull)), None)  # fmt: skip
            if failed is not None:  # raised once every call of the page has ended
                raise failed
            changed += sum(1 for d in done if d is True)
            full = next((d for d in done if isinstance(d, QueueFull)), None)
            if full is not None:
                raise ApiError(429, "queue_full", f"{full}; stopped after {changed} job(s)",
                               headers={"Retry-After": "1"},
                               extra={"queue": full.queue, "matched": matched,
                                      "changed": changed})  # fmt: skip
            cursor = page.next_cursor
            if cursor is None:
                break
    return {"matched": matched, "changed": changed}


@router.post("/cancel", response_model=BulkResult)
async def bulk_cancel(filt: BulkFilter, request: Request, principal: Writer) -> dict[str, Any]:
    """Cancel every pending or active job matching the filter (of the caller's tenant)."""
    return await actions.bulk(conveyor_of(request), request.app.state.settings, principal,
                              "cancel", filt, "api")  # fmt: skip


@router.post("/retry", response_model=BulkResult)
async def bulk_retry(filt: BulkFilter, request: Request, principal: Writer) -> dict[str, Any]:
    """Requeue every failed or cancelled job matching the filter (of the caller's tenant)."""
    return await actions.bulk(conveyor_of(request), request.app.state.settings, principal,
                              "retry", filt, "api")  # fmt: skip
