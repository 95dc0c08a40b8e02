"""``/v1/uploads``: submit a job with a file, read an upload's metadata and content.

``POST /v1/uploads`` is ``multipart/form-data`` with the fields ``file`` (the bytes), ``task``
(the task name) and optionally ``options`` (a JSON object: `UploadOptions`). The file is
streamed to ``<upload_dir>/<tenant folder>/<generated id>`` (`conveyor.server.upload_stream`),
fsynced, described by a JSON sidecar (`conveyor.files.UploadMeta`), and the job is enqueued
with the reference ``{"$upload": id, "tenant": ...}`` in its payload field ``file_field``
(default ``file``). A tenant-less ``conveyor.upload_cleanup`` job, delayed by the server's
``upload_ttl``, is enqueued first: it deletes the upload ``upload_ttl`` after its job ended
(`conveyor.file_cleanup`). Whatever goes wrong before the answer deletes the file.

Reads are the owner tenant's only: another tenant's upload answers 404 like a missing one.
The content is served as ``application/octet-stream``, as an attachment, with ``nosniff``:
never rendered by a browser on the API's origin whatever the uploader declared.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import IO, Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from ...app import Conveyor
from ...file_cleanup import CLEANUP_TASK, cleanup_payload
from ...files import REF_KEY, UploadMeta, UploadStore, new_upload_id, upload_ref
from ...job import Job, JobState
from ...options import check_key
from ..auth import Principal, Reader, Writer
from ..deadline import backend_deadline
from ..errors import ApiError, not_found
from ..estimate import estimator_of, for_caller
from ..models import Estimate, JobOut
from ..settings import ServerSettings
from ..upload_stream import BODY_OVERHEAD, Received, UploadReceiver, boundary_of, commit
from .jobs import ERRORS, conveyor_of, job_out, submit_tenant

log = logging.getLogger("conveyor.server")
router = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses={
    **ERRORS, 415: {"model": ERRORS[400]["model"]}})  # fmt: skip

READ_CHUNK = 256 * 1024


class UploadOptions(BaseModel):
    """The ``options`` form field: the job's options, as for ``POST /v1/jobs``, and where the
    file reference goes in its payload."""

    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int | str | None = None
    delay: float | None = Field(None, description="seconds from now")
    idempotency_key: str | None = Field(
        None, description="also accepted as the Idempotency-Key header"
    )
    max_attempts: int | None = None
    tenant: str | None = Field(None, description="admin keys only; a tenant key's own tenant")
    meta: dict[str, Any] | None = None
    file_field: str = Field(
        "file", min_length=1, max_length=200,
        description="the payload field that receives the file reference",
    )  # fmt: skip


class UploadOut(BaseModel):
    id: str
    tenant: str | None = None
    size: int = Field(description="bytes")
    sha256: str = Field(description="hex digest of the content")
    content_type: str = Field(description="as the client declared it")
    filename: str | None = Field(None, description="the client's file name (metadata only)")
    created: float = Field(description="epoch seconds")
    job: str | None = Field(None, description="the job it was submitted with")
    ref: dict[str, Any] = Field(description="the reference a job payload carries to this upload")


class UploadSubmitted(BaseModel):
    job: JobOut
    created: bool = Field(description="false when the idempotency key matched an existing job")
    estimate: Estimate | None = None
    upload: UploadOut | None = Field(
        None,
        description="the stored upload; with created=false, the existing job's (null if gone)",
    )


_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "task"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "task": {"type": "string", "minLength": 1, "maxLength": 200},
                        "options": {
                            "type": "string",
                            "description": "a JSON object: UploadOptions",
                        },
                    },
                }
            }
        },
    }
}


def upload_out(meta: UploadMeta) -> dict[str, Any]:
    return {**meta.to_dict(), "ref": upload_ref(meta.id, meta.tenant)}


def store_of(request: Request) -> UploadStore:
    store: UploadStore | None = conveyor_of(request).uploads
    assert store is not None  # create_app sets it
    return store


def _options(raw: str | None) -> UploadOptions:
    if raw is None or not raw.strip():
        return UploadOptions()
    try:
        return UploadOptions.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise ApiError(400, "malformed_json", "the form field 'options' is not valid JSON",
                       extra={"field": "options"}) from None  # fmt: skip
    except PydanticValidationError as exc:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"options{'.' + loc if loc else ''}: {e.get('msg', 'invalid')}")
        raise ApiError(422, "invalid", "; ".join(parts), extra={"field": "options"}) from None


def _declared_too_large(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length")
    try:
        return declared is not None and int(declared) > limit + BODY_OVERHEAD
    except ValueError:
        raise ApiError(400, "bad_request", "the Content-Length header is not a number") from None


@router.post("", status_code=202, response_model=UploadSubmitted, openapi_extra=_FORM)
async def submit_upload(
    request: Request,
    response: Response,
    principal: Writer,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Store a file and enqueue a job that refers to it. Answers 202 with the job and the
    upload (413 beyond the size limit, 415 for a content type not allowed)."""
    settings: ServerSettings = request.app.state.settings
    app, store = conveyor_of(request), store_of(request)
    boundary = boundary_of(request.headers.get("content-type"))
    if _declared_too_large(request, settings.max_upload_bytes):
        raise ApiError(413, "too_large", f"the uploaded file is larger than "
                       f"{settings.max_upload_bytes} bytes")  # fmt: skip
    # The tenant folder is needed before the options field arrives (it may follow the file):
    # a tenant key's uploads go to its tenant; an admin's are moved if its options name one.
    upload_id = new_upload_id()
    receiver = UploadReceiver(store, principal.tenant, upload_id, settings.max_upload_bytes,
                              settings.upload_types)  # fmt: skip
    received = await receiver.receive(boundary, request.stream())
    calls: list[asyncio.Task[Job]] = []
    try:
        return await _enqueue(request, response, principal, app, store, upload_id, received,
                              idempotency_key, calls)  # fmt: skip
    except BaseException:
        await _discard(store, upload_id, principal.tenant, calls)
        raise


async def _discard(store: UploadStore, upload_id: str, tenant: str | None,
                   calls: list[asyncio.Task[Job]], meta: UploadMeta | None = None) -> None:  # fmt: skip
    """The request failed: delete the upload unless its job may be stored. A job enqueue cut
    off by the deadline (or a disconnect) still runs, shielded: the file is deleted only if it
    fails, and otherwise kept for its job (its sidecar then names the job)."""
    call = calls[0] if calls else None
    if call is None or call.done():
        if call is None or call.cancelled() or call.exception() is not None:
            await asyncio.to_thread(store.remove, upload_id, tenant)
        return
    loop = asyncio.get_running_loop()

    def settled(t: asyncio.Task[Job]) -> None:
        if t.cancelled() or t.exception() is not None:
            loop.run_in_executor(None, store.remove, upload_id, tenant)
        elif meta is not None:
            meta.job = t.result().id
            loop.run_in_executor(None, store.write, meta)
        log.warning("upload %s: its job's enqueue outlived the request (%s); the file is %s",
                    upload_id, "failed" if t.cancelled() or t.exception() else "stored",
                    "deleted" if t.cancelled() or t.exception() else "kept")  # fmt: skip

    call.add_done_callback(settled)


async def _enqueue(
    request: Request, response: Response, principal: Principal, app: Conveyor,
    store: UploadStore, upload_id: str, received: Received, header_key: str | None,
    calls: list[asyncio.Task[Job]],
) -> dict[str, Any]:  # fmt: skip
    settings: ServerSettings = request.app.state.settings
    task = received.fields.get("task")
    if not task:
        raise ApiError(422, "invalid", "the form field 'task' is missing", extra={"field": "task"})
    opts = _options(received.fields.get("options"))
    key = opts.idempotency_key or header_key
    if opts.idempotency_key and header_key and opts.idempotency_key != header_key:
        raise ApiError(422, "invalid", "the Idempotency-Key header and options field differ")
    tenant = submit_tenant(principal, opts.tenant)
    if opts.file_field in opts.payload:
        raise ApiError(422, "invalid", f"the payload already has a field {opts.file_field!r}: "
                       "choose another file_field", extra={"field": "options.file_field"})  # fmt: skip
    app.catalog.lookup(task)  # an unknown task is refused before anything is stored
    if tenant is not None:
        check_key(tenant, "tenant")  # before it names a folder
    meta = UploadMeta(upload_id, tenant, received.size, received.sha256, received.content_type,
                      received.filename, time.time())  # fmt: skip
    try:
        job = await _store_and_enqueue(app, store, settings, received, meta, opts, task, key,
                                       calls)  # fmt: skip
    except BaseException:
        await _discard(store, upload_id, tenant, calls, meta)
        raise
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if job.created is False:  # the key matched an earlier job: this file is not needed
        await asyncio.to_thread(store.remove, upload_id, tenant)
        earlier = await asyncio.to_thread(_earlier_upload, store, job.payload, tenant)
        return {"job": job_out(job), "created": False, "estimate": None,
                "upload": None if earlier is None else upload_out(earlier)}  # fmt: skip
    meta.job = job.id
    try:
        await asyncio.to_thread(store.write, meta)
    except OSError as exc:  # the job is stored: answer it; the cleanup treats it as an orphan
        log.warning("upload %s: its sidecar could not name job %s: %s", upload_id, job.id, exc)
    estimate = None
    if job.status in (JobState.QUEUED, JobState.SCHEDULED):
        estimate = for_caller(await estimator_of(request).for_job(
            job.queue, job.created_at, job.scheduled_for), principal.admin)  # fmt: skip
    return {"job": job_out(job), "created": True, "estimate": estimate,
            "upload": upload_out(meta)}  # fmt: skip


async def _store_and_enqueue(
    app: Conveyor, store: UploadStore, settings: ServerSettings, received: Received,
    meta: UploadMeta, opts: UploadOptions, task: str, key: str | None,
    calls: list[asyncio.Task[Job]],
) -> Job:  # fmt: skip
    """Make the file durable under its final name with its sidecar, then enqueue its cleanup
    job and its job (in that order: no stored upload is ever without its cleanup job). The
    job's enqueue runs as a shielded task put in ``calls``: when the deadline or a disconnect
    cuts the request off, the backend may still store the job, and `_discard` waits for it."""
    final = store.folder(meta.tenant, create=True) / meta.id
    try:
        await asyncio.to_thread(commit, received, final)
        await asyncio.to_thread(store.write, meta)
    except OSError as exc:
        raise ApiError(503, "storage_unavailable",
                       f"the upload could not be stored: {os.strerror(exc.errno or 0)}",
                       headers={"Retry-After": "1"}) from None  # fmt: skip
    async with backend_deadline(settings):
        await app.enqueue(CLEANUP_TASK, cleanup_payload(meta.id, meta.tenant,
                          settings.upload_ttl), delay=settings.upload_ttl)  # fmt: skip
        calls.append(asyncio.ensure_future(app.enqueue(
            task, {**opts.payload, opts.file_field: upload_ref(meta.id, meta.tenant)},
            priority=opts.priority, delay=opts.delay, idempotency_key=key, tenant=meta.tenant,
            max_attempts=opts.max_attempts, meta=opts.meta,
        )))  # fmt: skip
        return await asyncio.shield(calls[0])


def _earlier_upload(store: UploadStore, payload: dict[str, Any], tenant: str | None) -> Any:
    for value in payload.values():
        if isinstance(value, dict) and isinstance(value.get(REF_KEY), str):
            meta = store.read(value[REF_KEY], tenant)
            if meta is not None:
                return meta
    return None


def _lookup(store: UploadStore, principal: Principal, upload_id: str,
            tenant: str | None) -> UploadMeta:  # fmt: skip
    if principal.admin:
        meta = store.find(upload_id) if tenant is None else store.read(upload_id, tenant)
    else:
        meta = store.read(upload_id, principal.tenant_scope(tenant))
    if meta is None:
        raise not_found("upload", upload_id[:100])
    return meta


@router.get("/{upload_id}", response_model=UploadOut)
async def get_upload(
    upload_id: str,
    request: Request,
    principal: Reader,
    tenant: Annotated[str | None, Query(description="admin keys: the upload's tenant")] = None,
) -> dict[str, Any]:
    """One upload's metadata (404 for another tenant's: indistinguishable from none)."""
    store = store_of(request)
    meta = await asyncio.to_thread(_lookup, store, principal, upload_id, tenant)
    return upload_out(meta)


def _open(store: UploadStore, meta: UploadMeta) -> tuple[IO[bytes], int]:
    try:
        f = store.path(meta.id, meta.tenant).open("rb")
    except FileNotFoundError:
        raise not_found("upload", meta.id) from None
    return f, os.fstat(f.fileno()).st_size


async def _chunks(f: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
            yield chunk
    finally:
        f.close()


@router.get(
    "/{upload_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the bytes"}},
)
async def get_upload_content(
    upload_id: str,
    request: Request,
    principal: Reader,
    tenant: Annotated[str | None, Query(description="admin keys: the upload's tenant")] = None,
) -> StreamingResponse:
    """The uploaded bytes, as an attachment (owner tenant only; 404 otherwise)."""
    store = store_of(request)
    meta = await asyncio.to_thread(_lookup, store, principal, upload_id, tenant)
    f, size = await asyncio.to_thread(_open, store, meta)
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{meta.id}"',
        "X-Content-Type-Options": "nosniff",
        "ETag": f'"{meta.sha256}"',
    }
    return StreamingResponse(_chunks(f), media_type="application/octet-stream", headers=headers)
