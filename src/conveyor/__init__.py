"""conveyor: a Python job queue, embedded on SQLite by default."""

from .app import Conveyor
from .awaiting import AwaitInput
from .backends.base import (
    Event,
    EventRetention,
    EventType,
    Outcome,
    OutcomeKind,
    QueueStats,
    Retention,
)
from .batch import Batch, BatchStatus
from .chains import Next
from .cron import ScheduleInfo
from .errors import (
    AuthError,
    BackendCorrupt,
    BackendError,
    BackendLocked,
    BackendUnavailable,
    BatchClosed,
    BatchNotFound,
    ConfigurationError,
    ConveyorError,
    EventsTrimmed,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobStateError,
    Permanent,
    QueueFull,
    RemoteError,
    Retry,
    UnknownTask,
    UploadNotFound,
    ValidationError,
    WorkflowNotFound,
)
from .fanin import AwaitChildren, ChildResult
from .hooks import Enqueuing, Hooks
from .job import Job, JobState, Progress
from .limits import CircuitBreaker, Concurrency, RateLimit
from .retry import Backoff
from .task import Task
from .worker.context import Context
from .worker.runtime import Worker
from .workflows import WorkflowInfo, WorkflowState, WorkflowStep

__version__ = "0.1.0"

#: Exported names imported on first use: they need an optional dependency (`conveyor.Client`:
#: httpx, the ``conveyor[client]`` extra), so ``import conveyor`` works without it.
_LAZY = {"Client": "conveyor.client"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AuthError",
    "AwaitChildren",
    "AwaitInput",
    "BackendCorrupt",
    "BackendError",
    "BackendLocked",
    "BackendUnavailable",
    "Backoff",
    "Batch",
    "BatchClosed",
    "BatchNotFound",
    "BatchStatus",
    "ChildResult",
    "CircuitBreaker",
    "Client",
    "Concurrency",
    "ConfigurationError",
    "Context",
    "Conveyor",
    "ConveyorError",
    "Enqueuing",
    "Event",
    "EventRetention",
    "EventType",
    "EventsTrimmed",
    "Hooks",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "JobStateError",
    "Next",
    "Outcome",
    "OutcomeKind",
    "Permanent",
    "Progress",
    "QueueFull",
    "QueueStats",
    "RateLimit",
    "RemoteError",
    "Retention",
    "Retry",
    "ScheduleInfo",
    "Task",
    "UnknownTask",
    "UploadNotFound",
    "ValidationError",
    "Worker",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowState",
    "WorkflowStep",
]
