"""The backend operations of cron and periodic schedules (`ScheduleStore`, part of `Backend`),
and their records.

Exactly one job per tick, however many schedulers run and without a leader: each schedule has a
stored *last claimed tick* per (queue, schedule), and `ScheduleStore.claim_tick` moves it forward
with a conditional update ("last < tick") **in the same atomic step** as the tick's job is
enqueued. A scheduler that loses the race learns it (`TickResult.TAKEN`); a crash cannot split
the claim from the job, so a tick is neither lost nor fired twice. The job also carries the
idempotency key ``cron:<schedule>:<tick>`` (`conveyor.schedule.idempotency_key`): the tick
stays visible on the job, and a second insert of the same tick would match it.

Ticks are integer epoch milliseconds; the state lives with the queue (on Redis in the queue's
Cluster slot, next to the jobs the overlap check reads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .base import NewJob


@dataclass(slots=True)
class TickClaim:
    """Claim tick ``tick`` (ms) of schedule ``schedule``, whose state is kept with ``queue``.

    ``job``: the tick's job (its queue is ``queue``), or None to claim the tick without one
    (ticks a catch-up policy does not fire). ``skip_overlap``: enqueue nothing (the tick is
    still claimed) while the schedule's previous job is not final."""

    schedule: str
    queue: str
    tick: int
    job: NewJob | None = None
    skip_overlap: bool = False


class TickResult(StrEnum):
    FIRED = "fired"  # claimed, and the job stored
    CLAIMED = "claimed"  # claimed without a job (the claim had none)
    BUSY = "busy"  # claimed, no job: the previous job is not final (skip_overlap)
    TAKEN = "taken"  # not claimed: this tick or a later one was claimed already


@dataclass(slots=True)
class TickOutcome:
    """What `claim_tick` did; ``job_id`` is the stored job (FIRED) or the running previous
    one (BUSY); ``last`` the schedule's last claimed tick after the call."""

    result: TickResult
    last: int
    job_id: str | None = None


@dataclass(slots=True)
class ScheduleState:
    """The stored state of one schedule: the last tick claimed (fired or not), the last tick
    that fired a job and that job's id (None: never)."""

    last_tick: int
    last_fire: int | None = None
    last_job: str | None = None


class ScheduleStore(Protocol):
    """Schedule state. Each operation is atomic and safe from many processes at once."""

    async def init_schedule(self, schedule: str, queue: str, tick: int) -> int:
        """Set the schedule's last claimed tick to ``tick`` if it has no state yet (its ticks
        up to ``tick`` are never fired); return the stored last tick. Idempotent."""

    async def claim_tick(self, claim: TickClaim) -> TickOutcome:
        """Claim one tick: if the stored last tick is below ``claim.tick`` (a schedule without
        state counts as below), set it to the tick and, in the same atomic step, enqueue the
        tick's job (unless ``skip_overlap`` and the previous job of the schedule is neither
        final nor deleted: BUSY). Otherwise TAKEN, and nothing changes. The job is enqueued as
        `Backend.enqueue_jobs` would (events, wake-ups, flow gates), never refused by the
        queue's ``max_queued``: a tick is not dropped because the queue is full."""

    async def schedule_states(self, items: Sequence[tuple[str, str]]) -> dict[str, ScheduleState]:
        """The state of each ``(schedule, queue)`` of ``items`` that has one, by schedule
        name."""


__all__ = ["ScheduleState", "ScheduleStore", "TickClaim", "TickOutcome", "TickResult"]
