"""``POST /v1/jobs/batch`` (submit many jobs, all or none; optionally with callbacks),
``POST /v1/batches/{id}/jobs`` (add jobs to an open batch with callbacks) and
``GET /v1/batches/{id}`` (counts, ETA, the record and its callbacks).

**Idempotency of a batch.** An ``Idempotency-Key: K`` header keys every item: item ``i`` is
stored with the idempotency key ``K:i`` (in its task's queue and the batch's tenant, like any
job's key). Sending the same request again with the same key stores nothing and answers the
first request's batch id and job ids, with ``created: 0``. Reuse a key only for the same
request: items are matched by position, so a longer list stores its extra items as a new batch,
and a reordered one answers the jobs stored first at each position. An item may carry its own
``idempotency_key`` instead, but not together with the header.

**Tenancy.** A batch belongs to the tenant of its jobs: a tenant key's batch is all of its own
tenant (items carry no tenant), and an admin key's batch is of the one ``tenant`` it names.
``GET /v1/batches/{id}`` answers a tenant key only for a batch that has jobs of its tenant
(404 otherwise, exactly like a missing batch), and counts those jobs only: a batch made by the
library's ``enqueue_many`` may hold jobs of several tenants."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from ...errors import ValidationError
from ...options import MAX_KEY_LEN, check_key
from ..auth import Reader, Writer
from ..deadline import backend_deadline
from ..errors import ApiError, not_found
from ..estimate import estimator_of, for_caller
from ..models_jobs import AddToBatch, BatchOut, BatchSubmitted, SubmitBatch
from .jobs import ERRORS, conveyor_of, submit_tenant

router = APIRouter(tags=["batches"], responses=ERRORS)


def _items(body: SubmitBatch, key: str | None) -> list[dict[str, Any]]:
    """The ``enqueue_many`` items of the request, keyed ``<key>:<index>`` under a header key."""
    items = [item.model_dump(exclude_unset=True) for item in body.jobs]
    if key is None:
        return items
    check_key(key, "Idempotency-Key")
    longest = len(key) + 1 + len(str(len(items) - 1))
    if longest > MAX_KEY_LEN:
        raise ApiError(422, "invalid", f"the Idempotency-Key header is too long for a batch: "
                       f"keys '<key>:<index>' must stay within {MAX_KEY_LEN} characters",
                       extra={"field": "Idempotency-Key"})  # fmt: skip
    for i, item in enumerate(items):
        if "idempotency_key" in item:
            raise ApiError(422, "invalid", f"jobs[{i}]: an item's idempotency_key cannot be "
                           "combined with the Idempotency-Key header, which keys every item",
                           extra={"field": f"jobs[{i}].idempotency_key"})  # fmt: skip
        item["idempotency_key"] = f"{key}:{i}"
    return items


def _as_jobs(text: str | None) -> str | None:
    return "jobs" + text[5:] if text is not None and text.startswith("items[") else text


@router.post("/v1/jobs/batch", status_code=202, response_model=BatchSubmitted)
async def submit_batch(
    body: SubmitBatch,
    request: Request,
    response: Response,
    principal: Writer,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Enqueue many jobs atomically (all or none: one bad item refuses the request, naming it).
    Answers 202 with the batch, the job ids in item order and an estimate of the batch."""
    app = conveyor_of(request)
    items = _items(body, idempotency_key)
    tenant = submit_tenant(principal, body.tenant)
    now = time.time()
    callbacks = {
        name: (spec.model_dump(exclude_unset=True) if not isinstance(spec, str) else spec)
        for name, spec in (("on_complete", body.on_complete), ("on_success", body.on_success))
        if spec is not None
    }
    if body.batch_ttl is not None:
        callbacks["batch_ttl"] = body.batch_ttl
    async with backend_deadline(request.app.state.settings):
        try:
            batch = await app.enqueue_many(
                items, priority=body.priority, delay=body.delay, tenant=tenant, **callbacks
            )
        except ValidationError as exc:  # the producer names items[i]: the API's field is jobs
            raise ApiError(422, "invalid", _as_jobs(str(exc)) or "invalid batch",
                           extra={"field": _as_jobs(exc.field)}) from None  # fmt: skip
        created = sum(batch.created)
        batch_id = batch.id
        if batch.ids and not batch.created[0]:  # a replay: answer the batch stored first
            first = await app.get(batch.ids[0], tenant=principal.tenant_scope())
            batch_id = first.batch or batch_id
    response.headers["Location"] = f"/v1/batches/{batch_id}"
    queues = [app.catalog.lookup(item["task"]).options.queue for item in items]
    not_before = now + body.delay if body.delay else None
    estimate = (
        for_caller(await estimator_of(request).for_batch(queues, now, not_before), principal.admin)
        if created
        else None
    )
    return {"batch": {"id": batch_id, "total": len(batch.ids), "created": created},
            "jobs": batch.ids, "estimate": estimate}  # fmt: skip


@router.post("/v1/batches/{batch_id}/jobs", status_code=202, response_model=BatchSubmitted)
async def add_to_batch(
    batch_id: str, body: AddToBatch, request: Request, principal: Writer
) -> dict[str, Any]:
    """Add jobs to an open batch with callbacks (all or none). 404 for an unknown batch, one
    without callbacks or another tenant's; 409 ``batch_closed`` once its callbacks fired."""
    app = conveyor_of(request)
    items = [item.model_dump(exclude_unset=True) for item in body.jobs]
    tenant = submit_tenant(principal, body.tenant)
    async with backend_deadline(request.app.state.settings):
        try:
            batch = await app.enqueue_many(
                items, priority=body.priority, delay=body.delay, tenant=tenant, batch=batch_id
            )
        except ValidationError as exc:
            raise ApiError(422, "invalid", _as_jobs(str(exc)) or "invalid batch",
                           extra={"field": _as_jobs(exc.field)}) from None  # fmt: skip
    return {"batch": {"id": batch_id, "total": len(batch.ids), "created": sum(batch.created)},
            "jobs": batch.ids, "estimate": None}  # fmt: skip


@router.get("/v1/batches/{batch_id}", response_model=BatchOut)
async def get_batch(batch_id: str, request: Request, principal: Reader) -> dict[str, Any]:
    """Counts by state of the batch's jobs, how many are done, percent and ETA (seconds, from
    the rate its jobs finished so far). 404 for an unknown batch or another tenant's."""
    app = conveyor_of(request)
    async with backend_deadline(request.app.state.settings):
        # A tenant key counts its own jobs of the batch only: `enqueue_many` items may name
        # tenants, and another tenant's jobs must not show, even as counts.
        batch = await app.batch(batch_id, tenant=principal.tenant_scope())
        status = await batch.status()
    if status.total == 0:
        raise not_found("batch", batch_id)
    return status.to_dict()
