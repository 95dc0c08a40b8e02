"""``conveyor.upload_cleanup``: the built-in task that deletes an upload some time after the job
it was submitted with has ended.

Registered on every app that has an upload directory (``Conveyor(upload_dir=...)``,
``$CONVEYOR_UPLOAD_DIR``, or the server's ``--upload-dir``), in the queue ``conveyor``, so a
worker of such an app started with its default queues (and ``conveyor serve --with-worker``)
serves it; a worker given an explicit queue list must include ``conveyor``.

The upload route enqueues one cleanup job per upload, tenant-less, delayed by the ttl, *before*
the upload's own job (so no upload is ever left without one). When it runs it reads the
upload's sidecar and the job named there:

- upload already gone: nothing to do;
- the sidecar names no job (its enqueue failed or never happened): delete once
  ``created + max(ttl, 5 min)`` has passed;
- job gone (retention removed it): delete now;
- job not final yet: check again later (``ttl``, clamped to 1 s .. 1 h);
- job final: delete once ``finished_at + ttl`` has passed, else check again then.

Checking again is a new delayed job of this task (jobs have no snooze), so a worker crash
costs at most one repeated check; deleting is idempotent. The task refuses to run for a job
that has a tenant: only the server (and admins) enqueue it, a tenant cannot use it to delete
anything.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .errors import JobNotFound, Permanent
from .files import UploadStore, is_upload_id

if TYPE_CHECKING:
    from .app import Conveyor
    from .job import Job

CLEANUP_TASK = "conveyor.upload_cleanup"
CLEANUP_QUEUE = "conveyor"
#: Bounds of the wait between two checks of a job that has not ended yet.
MIN_RECHECK = 1.0
MAX_RECHECK = 3600.0
#: An upload whose sidecar names no job is deleted this long after it was made at the
#: earliest (its job's enqueue failed, or the server died before naming it; the grace covers
#: a slow enqueue that is still to name it).
ORPHAN_GRACE = 300.0


def cleanup_payload(upload_id: str, tenant: str | None, ttl: float) -> dict[str, Any]:
    return {"upload": upload_id, "tenant": tenant, "ttl": ttl}


def due_at(created: float, job: Job | None, job_id: str | None, ttl: float, now: float) -> float:
    """When the upload may be deleted (<= now: now), given its job (None: gone or none)."""
    if job_id is None:
        return created + max(ttl, ORPHAN_GRACE)
    if job is None:
        return now
    if not job.status.is_final:
        return now + min(max(ttl, MIN_RECHECK), MAX_RECHECK)
    return (job.finished_at or now) + ttl


def register_cleanup(app: Conveyor) -> None:
    """Register `CLEANUP_TASK` on ``app`` (once; its upload directory is read when it runs)."""
    if CLEANUP_TASK in app.tasks:
        return

    async def upload_cleanup(ctx: Any, upload: str, tenant: str | None = None,
                             ttl: float = 24 * 3600.0) -> str:  # fmt: skip
        if ctx.job.tenant is not None:
            raise Permanent(f"{CLEANUP_TASK} is internal: it cannot run for a tenant's job")
        store: UploadStore | None = app.uploads
        if store is None:
            raise Permanent("this worker's app has no upload directory (see CONVEYOR_UPLOAD_DIR)")
        if not is_upload_id(upload) or not isinstance(ttl, int | float) or ttl < 0:
            raise Permanent("malformed upload cleanup payload")
        meta = await asyncio.to_thread(store.read, upload, tenant)
        if meta is None:
            await asyncio.to_thread(store.remove, upload, tenant)  # a stray part, if any
            return "gone"
        job = None
        if meta.job is not None:
            try:
                job = await app.get(meta.job)
            except JobNotFound:
                job = None
        now = time.time()
        due = due_at(meta.created, job, meta.job, float(ttl), now)
        if due <= now:
            await asyncio.to_thread(store.remove, upload, tenant)
            return "deleted"
        await app.enqueue(CLEANUP_TASK, cleanup_payload(upload, tenant, ttl), delay=due - now)
        return "rescheduled"

    app.task(name=CLEANUP_TASK, queue=CLEANUP_QUEUE, retries=5)(upload_cleanup)
