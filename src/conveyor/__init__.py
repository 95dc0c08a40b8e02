"""conveyor: a Python job queue, embedded on SQLite by default."""

from .app import Conveyor
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
from .errors import (
    BackendCorrupt,
    BackendError,
    BackendLocked,
    BackendUnavailable,
    ConfigurationError,
    ConveyorError,
    EventsTrimmed,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobStateError,
    Permanent,
    QueueFull,
    Retry,
    UnknownTask,
    UploadNotFound,
    ValidationError,
)
from .hooks import Enqueuing, Hooks
from .job import Job, JobState, Progress
from .limits import CircuitBreaker, Concurrency, RateLimit
from .retry import Backoff
from .task import Task
from .worker.context import Context
from .worker.runtime import Worker

__version__ = "0.1.0"

__all__ = [
    "BackendCorrupt",
    "BackendError",
    "BackendLocked",
    "BackendUnavailable",
    "Backoff",
    "Batch",
    "BatchStatus",
    "CircuitBreaker",
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
    "Outcome",
    "OutcomeKind",
    "Permanent",
    "Progress",
    "QueueFull",
    "QueueStats",
    "RateLimit",
    "Retention",
    "Retry",
    "Task",
    "UnknownTask",
    "UploadNotFound",
    "ValidationError",
    "Worker",
]
