"""The exceptions `conveyor.Client` raises for the server's error answers: the inverse of
`conveyor.server.errors.api_error_of`, so remote code catches what embedded code catches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .errors import (
    AuthError,
    BackendUnavailable,
    ConveyorError,
    EventsTrimmed,
    JobNotFound,
    JobStateError,
    QueueFull,
    RemoteError,
    UnknownTask,
    ValidationError,
    WorkflowNotFound,
)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers.get("retry-after", ""))
    except ValueError:
        return None


def error_of(status: int, content: bytes, headers: Mapping[str, str], path: str) -> ConveyorError:
    """The exception for an error answer (``{"error": {"code", "message", ...}}``)."""
    try:
        err: dict[str, Any] = orjson.loads(content)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        err, code = {}, "error"
        message = f"HTTP {status} from {path}: {content[:200].decode('utf-8', 'replace')}"
    ident = path.rstrip("/").rsplit("/", 1)[-1]
    if status in (401, 403):
        return AuthError(message, status=status, code=code)
    if status == 404 and code == "not_found":
        if path.strip("/").startswith("v1/workflows/"):
            return WorkflowNotFound(ident)
        return JobNotFound(_job_id(path) or ident)
    if status == 409 and code == "events_trimmed":
        return EventsTrimmed(str(err.get("cursor", "")), str(err.get("resume", "")))
    if status == 409:
        out = JobStateError(_job_id(path) or ident, str(err.get("state", "")), "change")
        out.args = (message,)
        return out
    if status == 422 and code == "unknown_task":
        return UnknownTask(message.removeprefix("unknown task ").split(";")[0].strip("'\""))
    if status in (400, 422):
        return ValidationError(message, field=err.get("field"))
    if status == 429 and code == "queue_full":
        limit = int(err.get("limit") or 0)
        out_q = QueueFull(str(err.get("queue", "")), limit, limit)
        out_q.args = (message,)
        return out_q
    if status == 503:
        return BackendUnavailable(message)
    return RemoteError(message, status=status, code=code, retry_after=_retry_after(headers))


def _job_id(path: str) -> str | None:
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[:2] == ["v1", "jobs"]:
        from urllib.parse import unquote

        return unquote(parts[2])
    return None


def transport_error(url: str, exc: Exception) -> BackendUnavailable:
    """The server could not be reached or broke the connection."""
    return BackendUnavailable(f"cannot reach the conveyor server at {url}: {exc!r}")
