"""The backend operations of human in the loop (`AwaitStore`, part of `Backend`).

A handler's `conveyor.AwaitInput` reaches the backend as an `Outcome` of kind ``await`` through
`Backend.finish_jobs` / `finish_and_claim`. In that one atomic step the job becomes
``awaiting``: its lease is dropped (it is in no active set: lease recovery never sees it), its
concurrency-gate slots are given back with no breaker verdict, the prompt, ``on_timeout`` (and
its data) and the deadline (backend clock: now + timeout) are stored on the job, and an
``awaiting`` event ``{"attempt", "deadline", "on_timeout"}`` is appended. The attempt is not
charged as a failure.

Attempts across a resume: the await took one claim (``attempt`` counts it while the job waits);
a resume gives that attempt back (``attempt - 1``, as a release at shutdown does), so the run
after the resume has the same attempt number and the retry budget (``max_attempts``) is spent
only by failures, however many rounds of review a job goes through. Stalls are kept."""

from __future__ import annotations

from typing import Protocol

from ..job import Job
from .records import Recovered

#: The error of a job whose wait timed out with ``on_timeout="fail"``.
AWAIT_TIMEOUT = "AwaitTimeout"


class AwaitStore(Protocol):
    """Awaiting jobs. Each operation is atomic and safe from many processes at once."""

    async def resume_job(
        self, job_id: str, data: str | None = None, *, tenant: str | None = None
    ) -> Job:
        """Move an ``awaiting`` job to ``queued`` with the decision ``data`` (JSON text, None
        for no data) stored as its ``input``; ``resumes`` + 1, the attempt given back, the
        deadline cleared; ``resumed`` event ``{}``; idle workers woken. Never refused by the
        queue's ``max_queued``: the job was admitted when it was enqueued.

        Exactly once: of concurrent resumes (and a timeout sweep) exactly one applies; the
        others raise `JobStateError` naming the state they found. Raises JobNotFound (also for
        another tenant's job when ``tenant`` is given), or JobStateError from any state but
        ``awaiting``."""

    async def expire_awaiting(self) -> list[Recovered]:
        """Apply ``on_timeout`` to every awaiting job (of every queue) whose deadline passed on
        the backend's clock, each once: ``fail`` (``failed``, error type ``AwaitTimeout``,
        event ``failed`` with ``reason: "timeout"``), ``cancel`` (``cancelled`` event with
        ``reason: "timeout"``) or ``resume`` (``queued`` with the stored data as the decision,
        ``resumed`` event with ``reason: "timeout"``). Returns what changed. O(expired jobs)
        per queue: awaiting jobs are indexed by deadline."""


__all__ = ["AWAIT_TIMEOUT", "AwaitStore"]
