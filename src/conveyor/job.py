"""The job record, its closed set of states, priorities and job ids."""

from __future__ import annotations

import itertools
import os
import reprlib
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from .errors import ValidationError


class JobState(StrEnum):
    """Every state a job can be in. A closed set: no free strings anywhere."""

    SCHEDULED = "scheduled"  # delayed, or waiting out a retry backoff
    QUEUED = "queued"  # ready to be claimed
    ACTIVE = "active"  # claimed under a lease
    AWAITING = "awaiting"  # parked for a human decision or children
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
PENDING_STATES = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.AWAITING})

#: Allowed transitions (from -> to). Backends enforce these in their atomic operations.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.SCHEDULED: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.QUEUED: frozenset({JobState.ACTIVE, JobState.CANCELLED}),
    JobState.ACTIVE: frozenset(
        {
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.SCHEDULED,  # retry with backoff
            JobState.QUEUED,  # stalled / released at shutdown
            JobState.CANCELLED,
            JobState.AWAITING,
        }
    ),
    JobState.AWAITING: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),  # manual retry
    JobState.CANCELLED: frozenset({JobState.QUEUED}),  # manual retry
}

PRIORITY_NAMES: dict[str, int] = {"critical": 20, "urgent": 20, "high": 10, "normal": 5, "low": 1}
DEFAULT_PRIORITY = 5
MAX_PRIORITY = 100
#: A due time further away than this is a unit mistake (milliseconds for seconds), not a plan;
#: it also keeps every backend's time arithmetic exact.
MAX_DELAY_YEARS = 100
MAX_DELAY = MAX_DELAY_YEARS * 365.25 * 86400


def parse_priority(value: int | str | None, *, field_name: str = "priority") -> int:
    """Turn a priority name or integer into the stored integer (0-100, higher runs first)."""
    if value is None:
        return DEFAULT_PRIORITY
    if isinstance(value, bool):
        raise ValidationError(
            f"{field_name} must be a name or an integer, not a bool", field=field_name
        )
    if isinstance(value, str):
        try:
            return PRIORITY_NAMES[value.lower()]
        except KeyError:
            names = ", ".join(PRIORITY_NAMES)
            raise ValidationError(
                f"unknown {field_name} {reprlib.repr(value)}: use one of {names} or an integer "
                f"0-{MAX_PRIORITY}",
                field=field_name,
            ) from None
    if isinstance(value, int):
        if not 0 <= value <= MAX_PRIORITY:
            shown = value if value.bit_length() <= 64 else f"of {value.bit_length():,} bits"
            raise ValidationError(
                f"{field_name} {shown} is out of range 0-{MAX_PRIORITY}", field=field_name
            )
        return int(value)  # an IntEnum member is stored as its number
    raise ValidationError(
        f"{field_name} must be a name or an integer, got {type(value).__name__}", field=field_name
    )


def parse_delay(
    delay: float | timedelta | datetime | None, now: float, *, field_name: str = "delay"
) -> float | None:
    """Return the absolute due time (epoch seconds) for a delay, or None for 'now'.

    Accepts seconds, a timedelta, or an aware/naive (taken as local time) datetime.
    """
    if delay is None:
        return None
    if isinstance(delay, datetime):
        try:
            due = delay.timestamp()
        except (OverflowError, ValueError, OSError):  # beyond what the platform's clock holds
            due = float("-inf") if delay.year < 1970 else float("inf")
        if due - now > MAX_DELAY:
            raise ValidationError(
                f"{field_name} {delay.isoformat()} is more than {MAX_DELAY_YEARS} years away",
                field=field_name,
            )
        return due if due > now else None
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, bool) or not isinstance(delay, int | float):
        raise ValidationError(
            f"{field_name} must be seconds, a timedelta or a datetime, got {type(delay).__name__}",
            field=field_name,
        )
    else:
        try:
            seconds = float(delay)
        except OverflowError:  # an int beyond any float
            seconds = float("inf") if delay > 0 else float("-inf")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValidationError(f"{field_name} must be a finite number of seconds", field=field_name)
    if seconds < 0:
        raise ValidationError(f"{field_name} must be >= 0 seconds, got {seconds}", field=field_name)
    if seconds > MAX_DELAY:
        raise ValidationError(
            f"{field_name} of {seconds:g} seconds is more than {MAX_DELAY_YEARS} years",
            field=field_name,
        )
    return now + seconds if seconds > 0 else None


class _IdGenerator:
    """Time-sortable unique ids: 12 hex digits of ms time, 8 of per-process node, 6 of counter.

    Sortable by creation time across processes (to the millisecond) and strictly increasing
    within a process. The node is re-drawn in forked children so they never collide.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._node = f"{int.from_bytes(os.urandom(4), 'big'):08x}"
        # itertools.count is atomic under the GIL: no lock on the enqueue hot path.
        self._counter = itertools.count(int.from_bytes(os.urandom(2), "big"))

    def __call__(self) -> str:
        return f"{time.time_ns() // 1_000_000:012x}{self._node}{next(self._counter) & 0xFFFFFF:06x}"


new_id = _IdGenerator()


@dataclass(slots=True)
class Progress:
    """A job's last reported progress."""

    percent: float | None = None
    message: str | None = None
    stage: str | None = None
    meta: dict[str, Any] | None = None
    updated_at: float | None = None


@dataclass(slots=True)
class Job:
    """A job as stored. Times are epoch seconds on the backend's clock."""

    id: str
    queue: str
    task: str
    payload: dict[str, Any]
    priority: int
    status: JobState
    attempt: int = 0
    max_attempts: int = 1
    stalls: int = 0
    max_stalls: int = 3
    timeout: float | None = None
    lease: float = 30.0
    progress: Progress = field(default_factory=Progress)
    result: Any = None
    error: dict[str, Any] | None = None
    tenant: str | None = None
    batch: str | None = None
    workflow: str | None = None
    parent: str | None = None
    idempotency_key: str | None = None
    created_at: float = 0.0
    scheduled_for: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    lease_expires_at: float | None = None
    worker: str | None = None
    # The claim token: which claim of this job the holder's attempt is (1 for the first). It only
    # grows (release, recovery and retry never lower it), so it names one attempt for good.
    token: int = 0
    # True while the job waits in this producer's local spool (the backend was unreachable):
    # a forwarder stores it, with this id, when the backend is back (see `conveyor.spool`).
    spooled: bool = False
    # Small JSON object of cross-cutting context (trace context...): `conveyor.meta`.
    meta: dict[str, Any] = field(default_factory=dict)
    # Admin-only: what the attempts reported through ``ctx.cost``, unit -> total.
    cost: dict[str, float] | None = None
    # On the Job an ``enqueue`` returned: whether that call stored it (False: its idempotency key
    # matched an existing job, which is what was returned). None on jobs read back. The
    # backends build jobs positionally up to ``cost``, and by keyword after it.
    created: bool | None = None
    # Chains (`conveyor.chains`): the step label this job runs under (None: its task's name),
    # the number of steps its workflow declared (None: not declared), and the ids of the jobs
    # created in the same atomic step as its outcome (a handler's `Next`).
    step: str | None = None
    steps: int | None = None
    next_jobs: tuple[str, ...] = ()
    # Human in the loop (`conveyor.AwaitInput`, docs/architecture.md "Human in the loop"): the
    # prompt of the job's last await (kept after it resumed), the deadline while it is
    # ``awaiting`` (None: none, or not awaiting) and what happens then (``on_timeout``); the
    # decision the last resume gave (``input``, what ``ctx.input`` reads) and how many times it
    # was resumed (``resumes``; ``ctx.resumed`` is ``resumes > 0``).
    prompt: Any = None
    await_deadline: float | None = None
    on_timeout: str | None = None
    input: Any = None
    resumes: int = 0
    # Fan-in (`conveyor.AwaitChildren`): on a parent that spawned children, ``{"policy",
    # "cancel_siblings", "total", "settled", "failed", "waiting"}`` of its last round of
    # children (``waiting``: still parked for them); None on other jobs.
    fanin: dict[str, Any] | None = None

    @property
    def eta(self) -> float | None:
        """Seconds until the job is expected to finish, from its progress rate; None if unknown."""
        pct = self.progress.percent
        if self.status is not JobState.ACTIVE or not pct or not self.started_at:
            return None
        now = self.progress.updated_at or time.time()
        elapsed = max(0.0, now - self.started_at)
        return elapsed * (100.0 - pct) / pct if pct < 100 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape the CLI's --json and the HTTP API print)."""
        data = asdict(self)
        data["status"] = self.status.value
        data["eta"] = self.eta
        data["next_jobs"] = list(self.next_jobs)
        return data


__all__ = [
    "DEFAULT_PRIORITY",
    "FINAL_STATES",
    "PRIORITY_NAMES",
    "TRANSITIONS",
    "Job",
    "JobState",
    "Progress",
    "new_id",
    "parse_delay",
    "parse_priority",
]
