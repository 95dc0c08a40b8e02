"""The API's routers, one module per resource; `create_app` includes every router listed here."""

from __future__ import annotations

from fastapi import APIRouter

from . import batches, bulk, events, health, jobs, queues, uploads, workers, workflows

# bulk and batches before jobs: their fixed paths (/v1/jobs/cancel, /v1/jobs/batch) must not be
# taken for a job id by a route of jobs.
ROUTERS: list[APIRouter] = [
    bulk.router,
    batches.router,
    jobs.router,
    events.router,
    uploads.router,
    queues.router,
    workers.router,
    workflows.router,
    health.router,
]
