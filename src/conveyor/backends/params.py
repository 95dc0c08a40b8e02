"""The parameters and results of the job verbs of `Backend` (enqueue, claim, finish), split out
of `base.py` (which re-exports them: import them from either)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..awaiting import AwaitInput
from ..fanin import FanOut
from ..job import Job
from ..limits import Gate


@dataclass(slots=True)
class NewJob:
    """A job to store. ``payload`` is already validated and JSON-encoded by the producer."""

    id: str
    queue: str
    task: str
    payload: str
    priority: int
    max_attempts: int
    max_stalls: int
    timeout: float | None
    lease: float
    delay: float = 0.0  # seconds from the backend's now; 0 = ready now
    tenant: str | None = None
    batch: str | None = None
    workflow: str | None = None
    parent: str | None = None
    idempotency_key: str | None = None
    # Flow control: the JSON array of gate names the job must pass (None: unlimited) and the
    # gates' rules, which the backend stores (upserts) with the job.
    flow: str | None = None
    gates: Sequence[Gate] = ()
    meta: str | None = None  # the job's meta, JSON-encoded (`conveyor.meta`); None: none
    step: str | None = None  # chains: the step label (None: the task's name)
    steps: int | None = None  # chains: the number of steps the workflow declares


@dataclass(slots=True)
class EnqueueResult:
    """Per input job, in input order: the stored id (the existing job's id when the idempotency
    key matched) and whether this call created it. ``now`` is the backend's time of the insert."""

    ids: list[str]
    created: list[bool]
    now: float


@dataclass(slots=True)
class ClaimParams:
    queues: Sequence[str]
    limit: int
    worker: str
    # Per-queue caps for this claim (a worker's dedicated slots per queue); None: only ``limit``.
    queue_limits: Mapping[str, int] | None = None


@dataclass(slots=True)
class ClaimResult:
    """Claimed jobs in claim order (priority, then FIFO), and the earliest time more work may
    become claimable in the claimed queues: a scheduled job's due time or a rate-limited flow's
    next permitted start (None if neither), so idle workers sleep exactly until then."""

    jobs: list[Job]
    next_due: float | None
    # Per queue: flows a rate gate held back in this claim (each also a `rate_limited` event);
    # what the worker's metrics count as ``conveyor_rate_limited_total``.
    rate_limited: dict[str, int] = field(default_factory=dict)


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # final failure
    RETRY = "retry"  # failed attempt; rescheduled after ``retry_in``
    AWAIT = "await"  # the handler returned `AwaitInput` (``wait``): the job becomes awaiting
    # Only what `Hooks.after_outcome` sees, never sent to the backend: the attempt ended because
    # its job was cancelled or its lease lost (CANCELLED), or it was handed back uncharged at
    # shutdown (RELEASED).
    CANCELLED = "cancelled"
    RELEASED = "released"


@dataclass(slots=True)
class Outcome:
    """How one attempt of one job ended, as decided by the worker. ``token`` is the claim token
    of the attempt (`Job.token`)."""

    job_id: str
    token: int
    kind: OutcomeKind
    result: Any = None
    error: dict[str, Any] | None = None
    retry_in: float = 0.0
    # What the attempt reported through ``ctx.cost``: unit -> amount (None: nothing).
    cost: dict[str, float] | None = None
    # For hooks only (never sent to the backend): how long the attempt ran in the worker, in
    # seconds from its start to its outcome; set when a hook listens to outcomes.
    seconds: float | None = None
    # Jobs created in the same atomic step as this outcome, only if it applies (the hand-over
    # seam: a chain's next step). Their ids are fixed before the outcome is sent, so a resent
    # outcome never creates a second job. Never refused by ``max_queued``.
    then: Sequence[NewJob] = ()
    # AWAIT only: the prompt, timeout and timeout policy the handler returned.
    wait: AwaitInput | None = None
    # AWAIT for children (`conveyor.AwaitChildren`): the failure policy; ``then`` holds the
    # children in spawn order, created with the park (docs/architecture.md "Fan-out and fan-in").
    fanout: FanOut | None = None


__all__ = ["ClaimParams", "ClaimResult", "EnqueueResult", "NewJob", "Outcome", "OutcomeKind"]
