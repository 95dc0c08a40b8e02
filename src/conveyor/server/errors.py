"""Every error the API answers is JSON ``{"error": {"code", "message"}}`` with the status that
says what happened; conveyor's exceptions map to statuses here, once. No input may produce a 500:
the catch-all handler exists so that a bug is still a JSON answer, logged with its traceback."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BackendError,
    BatchClosed,
    BatchNotFound,
    ConveyorError,
    EventsTrimmed,
    JobNotFound,
    JobStateError,
    QueueFull,
    UnknownTask,
    ValidationError,
)
from .responses import Json

log = logging.getLogger("conveyor.server")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media",
          422: "invalid", 429: "rate_limited", 503: "unavailable"}  # fmt: skip


class ApiError(Exception):
    """An answer other than success, raised anywhere in a request."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra or {}


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident!r} not found")


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Json:
    return Json(
        {"error": {"code": code, "message": message, **(extra or {})}},
        status_code=status,
        headers=headers,
    )


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def api_error_of(exc: Exception) -> ApiError | None:
    """The API answer for one of conveyor's exceptions (None: not one of them)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownTask):
        return ApiError(422, "unknown_task", str(exc), extra={"field": "task"})
    if isinstance(exc, ValidationError):
        return ApiError(422, "invalid", str(exc), extra={"field": exc.field})
    if isinstance(exc, JobNotFound | BatchNotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, BatchClosed):
        return ApiError(409, "batch_closed", str(exc))
    if isinstance(exc, JobStateError):
        return ApiError(409, "conflict", str(exc), extra={"state": exc.state})
    if isinstance(exc, QueueFull):
        return ApiError(429, "queue_full", str(exc), headers=_retry_after(1),
                        extra={"queue": exc.queue, "limit": exc.limit})  # fmt: skip
    if isinstance(exc, EventsTrimmed):
        return ApiError(409, "events_trimmed", str(exc), extra={"resume": exc.resume})
    if isinstance(exc, BackendError | TimeoutError | ConnectionError):
        return ApiError(503, "backend_unavailable",
                        "the job store is unreachable or too slow right now; try again",
                        headers=_retry_after(1))  # fmt: skip
    return None


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed_json", "the request body is not valid JSON"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return 422, "invalid", "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Json:
        status, code, message = _validation_message(exc)
        return error_response(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Json:
        code = _CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(ApiError)
    @app.exception_handler(ConveyorError)
    @app.exception_handler(TimeoutError)
    @app.exception_handler(ConnectionError)
    async def _known(request: Request, exc: Exception) -> Json:
        err = api_error_of(exc)
        if err is None:  # a ConveyorError without an HTTP meaning (a bug to map here)
            return _internal(request, exc)
        if err.status == 503:
            log.warning("backend unavailable on %s %s: %r", request.method, request.url.path, exc)
        return error_response(err.status, err.code, err.message, err.headers, err.extra)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> Json:
        return _internal(request, exc)


def _internal(request: Request, exc: Exception) -> Json:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error")
