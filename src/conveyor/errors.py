"""Conveyor's one exception tree, and the control-flow signals handlers raise.

```
ConveyorError
├── ConfigurationError        bad URL, bad task or worker options          (also ValueError)
├── ValidationError           bad enqueue input: payload, priority, delay   (also ValueError)
│   └── UnknownTask           a task name no handler is registered for
├── JobNotFound               no job with that id                           (also KeyError)
│   └── WorkflowNotFound      no workflow with that id
├── UploadNotFound            no upload with that id readable by this job   (also KeyError)
├── BatchNotFound             no batch record with that id (for this tenant)  (also KeyError)
├── JobStateError             the transition is not allowed from the job's state
├── BatchClosed               members added to a batch whose callbacks already fired
├── QueueFull                 the queue holds max_queued waiting jobs: nothing was stored
├── JobFailed                 wait(): the job ended failed
├── JobCancelled              wait(): the job ended cancelled
├── EventsTrimmed             events(): retention deleted events after the reader's cursor
├── AuthError                 conveyor.Client: the server refused the API key (401/403)
│                             (also PermissionError)
├── RemoteError               conveyor.Client: any other error answer of the server
└── BackendError              storage trouble, translated from the driver at the boundary
    ├── BackendUnavailable    cannot reach or open the backend
    ├── BackendLocked         another process holds the lock for longer than busy_timeout
    └── BackendCorrupt        the file/database is not a conveyor store or is damaged
```

`Retry` and `Permanent` are *signals*, not failures of conveyor: a handler raises them to steer
what happens next (retry after a given delay; fail now without retries). `wait()` raises the
builtin `TimeoutError` when its own timeout passes.
"""

from __future__ import annotations

import reprlib
from datetime import timedelta
from typing import Any


class ConveyorError(Exception):
    """Base of every error conveyor raises."""


class ConfigurationError(ConveyorError, ValueError):
    """Invalid configuration: a malformed backend URL, an impossible task or worker option."""


class ValidationError(ConveyorError, ValueError):
    """Invalid input to a producer call; nothing was stored.

    Attributes:
        field: the name of the offending field (``payload.session_id``, ``priority``, ``delay``...).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownTask(ValidationError):
    """The task name is not registered on this app."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f"; registered tasks: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown task {reprlib.repr(name)}{hint}", field="task")
        self.name = name


class JobNotFound(ConveyorError, KeyError):
    """No job has this id (never existed, or removed by retention)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"job {self.job_id!r} not found"


class WorkflowNotFound(JobNotFound):
    """No workflow has this id (no job of that id, or another tenant's)."""

    def __str__(self) -> str:
        return f"workflow {self.job_id!r} not found"


class UploadNotFound(ConveyorError, KeyError):
    """No upload with this id is readable here (`conveyor.files`): it never existed, was cleaned
    up, or belongs to another tenant than the job's (indistinguishable on purpose)."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id

    def __str__(self) -> str:
        shown = self.upload_id if len(self.upload_id) <= 64 else self.upload_id[:64] + "..."
        return f"upload {shown!r} not found"


class BatchNotFound(ConveyorError, KeyError):
    """No batch record has this id (never created with callbacks, expired, or another
    tenant's)."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(batch_id)
        self.batch_id = batch_id

    def __str__(self) -> str:
        return f"batch {self.batch_id!r} not found"


class BatchClosed(ConveyorError):
    """Members cannot be added: the batch's callbacks fired already (nothing was stored)."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(
            f"batch {batch_id!r} is closed: its callbacks fired already, so it takes no new "
            "members (enqueue them in a new batch)"
        )
        self.batch_id = batch_id


class JobStateError(ConveyorError):
    """The requested transition is not allowed from the job's current state."""

    def __init__(self, job_id: str, state: str, action: str) -> None:
        super().__init__(f"cannot {action} job {job_id!r}: it is {state}")
        self.job_id = job_id
        self.state = state
        self.action = action


class QueueFull(ConveyorError):
    """Backpressure: the queue already holds ``limit`` (its ``max_queued``) or more waiting
    jobs (queued or scheduled), or the call's new jobs would take it past that. Nothing of the
    call was stored (an `enqueue_many` is refused as a whole). The HTTP API maps it to 429.

    Attributes:
        queue: the queue that is full.
        limit: its ``max_queued``.
        count: the waiting jobs it held when the call was refused.
        needed: the new jobs the call wanted to add to that queue.
    """

    def __init__(self, queue: str, limit: int, count: int, needed: int = 1) -> None:
        more = f" (this call adds {needed})" if needed != 1 else ""
        super().__init__(
            f"queue {queue!r} is full: {count} waiting jobs, max_queued={limit}{more}; "
            "nothing was stored, try again later"
        )
        self.queue = queue
        self.limit = limit
        self.count = count
        self.needed = needed


class JobFailed(ConveyorError):
    """Raised by ``wait()`` when the job ended ``failed``; ``error`` holds its stored error."""

    def __init__(self, job_id: str, error: dict[str, Any] | None) -> None:
        err = error or {}
        super().__init__(
            f"job {job_id!r} failed: {err.get('type', 'Error')}: {err.get('message', '')}"
        )
        self.job_id = job_id
        self.error = err


class JobCancelled(ConveyorError):
    """Raised by ``wait()`` when the job ended ``cancelled``."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} was cancelled")
        self.job_id = job_id


class EventsTrimmed(ConveyorError):
    """Retention deleted events the reader had not read yet: its cursor is too old.

    Never a silent gap: the reader decides. ``resume`` is the cursor right before the oldest
    event still kept; reading from it continues past the gap (for instance after reloading the
    state that the lost events would have updated).

    Attributes:
        cursor: the cursor that was read from.
        resume: where reading can continue, accepting the gap.
    """

    def __init__(self, cursor: str, resume: str, detail: str = "") -> None:
        super().__init__(
            f"events after cursor {cursor!r} were trimmed by retention{detail}; "
            f"continue from {resume!r} to accept the gap"
        )
        self.cursor = cursor
        self.resume = resume


class AuthError(ConveyorError, PermissionError):
    """`conveyor.Client`: the server refused the call for its API key: missing, unknown or
    revoked (``status`` 401), or not allowed to do this (403: a read-only or a tenant key).

    Attributes:
        status: the HTTP status (401 or 403).
        code: the server's error code (``unauthorized``, ``forbidden``).
    """

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class RemoteError(ConveyorError):
    """`conveyor.Client`: an error answer of the server with no more specific exception (a
    request rate limit, a body too large, a server fault).

    Attributes:
        status: the HTTP status.
        code: the server's error code (``rate_limited``, ``too_large``, ``internal``...).
        retry_after: seconds the server asked to wait (its ``Retry-After``), if any.
    """

    def __init__(
        self, message: str, *, status: int, code: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class BackendError(ConveyorError):
    """A storage operation failed; the driver's exception is chained as ``__cause__``."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached or opened."""


class BackendLocked(BackendError):
    """The store stayed locked by another process for longer than the busy timeout."""


class BackendCorrupt(BackendError):
    """The store is not a conveyor database or is damaged."""


class Retry(Exception):
    """Signal: retry this job after ``after`` seconds (e.g. an API's Retry-After).

    Counts as a failed attempt; when attempts are used up the job fails.
    """

    def __init__(self, after: float | timedelta | None = None, reason: str = "") -> None:
        seconds = after.total_seconds() if isinstance(after, timedelta) else after
        if seconds is not None and seconds < 0:
            raise ValueError(f"Retry(after=...) must be >= 0, got {seconds}")
        super().__init__(reason or "retry requested")
        self.after = seconds
        self.reason = reason


class Permanent(Exception):
    """Signal: fail this job now, without further retries."""


__all__ = [
    "AuthError",
    "BackendCorrupt",
    "BackendError",
    "BackendLocked",
    "BackendUnavailable",
    "BatchClosed",
    "BatchNotFound",
    "ConfigurationError",
    "ConveyorError",
    "EventsTrimmed",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobStateError",
    "Permanent",
    "QueueFull",
    "RemoteError",
    "Retry",
    "UnknownTask",
    "UploadNotFound",
    "ValidationError",
    "WorkflowNotFound",
]
