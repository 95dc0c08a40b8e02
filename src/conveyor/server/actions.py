"""What a caller may do to jobs and queues, once for the HTTP API and the dashboard: the
authorization decision (`require_writer`, the tenant scope), the backend call under the
server's deadline, and the audit event naming the acting key.

Routes of both translate their input to these calls, so the dashboard can never be a way
around the API's checks: a read-only key is refused here, a tenant key's action is confined to
its tenant here (another tenant's job answers 404 exactly like a missing one).

**Audit.** Every action that changed something appends one ``audit`` event (`EventType.AUDIT`)
after it: ``job_id``, ``queue``, ``task`` and ``tenant`` of the job (of the filter for bulk
actions, of the queue for pause/resume) and data ``{"action", "key", "via"}`` plus what the
action was given (bulk: the filter and the counts; resume: whether data was given, never the
data). ``key`` is the acting key's public id (None under ``--no-auth``). A failure to append it
is logged, not raised: the action itself happened and the caller must be told so."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Literal

from ..backends.base import EventType
from ..job import Job
from .auth import Principal, require_admin, require_writer
from .deadline import backend_deadline
from .models_jobs import BulkFilter
from .settings import ServerSettings

if TYPE_CHECKING:
    from ..app import Conveyor

log = logging.getLogger("conveyor.server")

Via = Literal["api", "dashboard"]


async def audit(
    app: Conveyor,
    principal: Principal,
    action: str,
    via: Via,
    *,
    job: Job | None = None,
    queue: str | None = None,
    tenant: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Append the ``audit`` event of one action (logged, never raised, when it fails)."""
    body = {"action": action, "key": principal.key_id, "via": via, **(data or {})}
    try:
        await app.backend.append_event(
            EventType.AUDIT,
            job_id=None if job is None else job.id,
            queue=queue if job is None else job.queue,
            task=None if job is None else job.task,
            tenant=tenant if job is None else job.tenant,
            data=body,
        )
    except Exception as exc:  # the action happened: tell the caller so, keep the trace in logs
        log.warning("audit event of %s by key %s not stored: %r", action, principal.key_id, exc)


async def cancel(
    app: Conveyor, settings: ServerSettings, principal: Principal, job_id: str, via: Via
) -> Job:
    """Cancel one job of the caller's tenant (`Conveyor.cancel`)."""
    require_writer(principal)
    async with backend_deadline(settings):
        job = await app.cancel(job_id, tenant=principal.tenant_scope())
    await audit(app, principal, "cancel", via, job=job)
    return job


async def retry(
    app: Conveyor, settings: ServerSettings, principal: Principal, job_id: str, via: Via
) -> Job:
    """Requeue one failed or cancelled job of the caller's tenant (`Conveyor.retry`)."""
    require_writer(principal)
    async with backend_deadline(settings):
        job = await app.retry(job_id, tenant=principal.tenant_scope())
    await audit(app, principal, "retry", via, job=job)
    return job


async def resume(
    app: Conveyor,
    settings: ServerSettings,
    principal: Principal,
    job_id: str,
    data: Any,
    via: Via,
) -> Job:
    """Resume one awaiting job of the caller's tenant with ``data`` (`Conveyor.resume`)."""
    require_writer(principal)
    async with backend_deadline(settings):
        job = await app.resume(job_id, data, tenant=principal.tenant_scope())
    await audit(app, principal, "resume", via, job=job, data={"with_data": data is not None})
    return job


async def bulk(
    app: Conveyor,
    settings: ServerSettings,
    principal: Principal,
    action: Literal["cancel", "retry"],
    filt: BulkFilter,
    via: Via,
) -> dict[str, int]:
    """Cancel or retry every job matching ``filt`` within the caller's tenant
    (`conveyor.server.routes.bulk.run_bulk`); ``{"matched", "changed"}``."""
    from .routes.bulk import CANCELLABLE, RETRYABLE, check_filter, run_bulk
    from .routes.jobs import read_tenant

    require_writer(principal)
    statuses = check_filter(filt, CANCELLABLE if action == "cancel" else RETRYABLE, action)
    tenant = read_tenant(principal, filt.tenant)

    def act(job_id: str) -> Awaitable[Job]:
        if action == "cancel":
            return app.cancel(job_id, tenant=tenant)
        return app.retry(job_id, tenant=tenant)

    counts = await run_bulk(app, settings, filt, tenant, statuses, act)
    if counts["changed"]:
        shown = filt.model_dump(exclude_none=True, mode="json")
        await audit(app, principal, f"bulk_{action}", via, queue=filt.queue, tenant=tenant,
                    data={"filter": shown, **counts})  # fmt: skip
    return counts


async def set_paused(
    app: Conveyor, settings: ServerSettings, principal: Principal, queue: str, paused: bool,
    via: Via,
) -> bool:  # fmt: skip
    """Pause or resume claiming from ``queue`` (admin writers only); True if it changed. The
    caller checks that the queue is known."""
    require_writer(require_admin(principal))
    async with backend_deadline(settings):
        changed = await (app.pause_queue(queue) if paused else app.resume_queue(queue))
    if changed:
        await audit(app, principal, "pause" if paused else "resume_queue", via, queue=queue)
    return changed


__all__ = ["Via", "audit", "bulk", "cancel", "resume", "retry", "set_paused"]
