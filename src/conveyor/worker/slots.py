"""A worker's slots, grouped in lanes, and the jobs it holds in them.

Every worker accounts its slots in lanes (`Lane`): one for the *shared pool* (``concurrency`` slots
for every queue without slots of its own) and one per queue with *dedicated* slots,
``app.worker(queues={"critical": 5, "low": 1, "default": None})``: at most 5 ``critical`` and 1
``low`` job at once, on slots no other queue can take, and ``default`` (``None``) on the shared
pool. A flood of ``low`` jobs therefore never holds up ``critical`` ones. A worker given a list
of queues has a single lane, the pool: the same code path, with one claim per round.

A lane counts its jobs in three states: *running* (a task started), *buffered* (claimed,
waiting for a slot of this lane) and *reserved* (asked for by a claim still in flight).
`Lanes.plan` asks, per round, for each lane's free slots only, through
``ClaimParams.queue_limits`` when there are dedicated lanes, so a queue with no free slot is
never claimed from.

**Prefetch without hoarding.** A lane may claim a few jobs beyond its free slots, so a slot that
frees during the next claim's round trip starts a job at once. A buffered job is one that
another worker with a free slot cannot run, so a lane prefetches only what its own slots start
within `HORIZON` on average: ``min(prefetch, slots * HORIZON / run time)``, with the run time
measured on its finished jobs (a moving average). Until one has finished, and for jobs that run
long, nothing is prefetched. Should a buffered job still wait after ``max(STALE, 2 * run
time)`` (slots held by jobs longer than the average so far), the worker hands it back to the
queue uncharged (`Lanes.stale`) and counts the wait in the average, which stops the prefetch.
Dedicated lanes never prefetch: their slots are few and exist for latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import TYPE_CHECKING

from ..backends.base import ClaimParams
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..job import Job
    from .context import Context

log = logging.getLogger("conveyor.worker")
QueueSpec = Sequence[str] | Mapping[str, int | None]
"""What ``Worker(queues=...)`` takes: names (shared pool), or name -> dedicated slots / None."""

HORIZON = 0.005
"""A prefetched job should start within this many seconds on average."""
STALE = 0.020
"""A buffered job not started after ``max(STALE, 2 * run time)`` is handed back to the queue."""
_WEIGHT = 0.125  # of the newest sample in a lane's moving average of run times
_NOTHING: tuple[Held, ...] = ()


def pool_options(concurrency: int, prefetch: int | None) -> tuple[int, int]:
    """Check the shared pool's ``concurrency`` and ``prefetch`` (default: a quarter of the
    slots, at most 32); raises `ConfigurationError`."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if prefetch is None:
        prefetch = min(concurrency // 4, 32)
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ConfigurationError(f"prefetch must be an integer >= 0, got {prefetch!r}")
    return concurrency, prefetch


def parse_queue_spec(queues: QueueSpec) -> tuple[list[str], dict[str, int]]:
    """Split ``queues`` into the queue names (in the given order) and the dedicated slots of
    the queues that have them. Raises `ConfigurationError` naming the queue at fault."""
    if isinstance(queues, str):
        raise ConfigurationError(
            f"queues must be a list of queue names or a dict of queue -> slots, not the string "
            f"{queues!r} (did you mean [{queues!r}]?)"
        )
    if not isinstance(queues, Mapping):
        return list(queues), {}
    slots: dict[str, int] = {}
    for queue, n in queues.items():
        if not isinstance(queue, str):
            raise ConfigurationError(f"queue names must be strings, got {queue!r}")
        if n is None:
            continue
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigurationError(
                f"queue {queue!r}: slots must be an integer >= 1 (or None for the shared "
                f"concurrency pool), got {n!r}"
            )
        slots[queue] = n
    return list(queues), slots


class Held:
    """One claimed attempt, keyed in `Worker.running` by its claim token ``(job id, token)``:
    the same job can be held twice (an old attempt still running after a cancel, retry and
    re-claim), never the same attempt."""

    __slots__ = ("ctx", "job", "key", "lane", "lost", "released", "since", "task")

    def __init__(self, job: Job, ctx: Context) -> None:
        self.job = job
        self.key = (job.id, job.token)
        self.ctx = ctx
        self.task: asyncio.Task[None] | None = None
        self.lane: Lane | None = None  # set by `Lanes.admit`
        self.since = 0.0  # monotonic time it was buffered, then started
        self.lost = False  # cancelled or taken away: report nothing
        self.released = False  # handed back to the queue: report nothing


class Lane:
    """The slots of one dedicated queue, or of every shared queue (the shared pool)."""

    __slots__ = ("budget", "buffer", "claims", "planned", "prefetch", "queues", "reserved",
                 "run_time", "running", "slots", "want")  # fmt: skip

    def __init__(self, queues: list[str], slots: int, prefetch: int) -> None:
        self.queues = queues
        self.slots = slots
        self.prefetch = prefetch
        self.budget = slots * HORIZON  # slot-seconds of prefetch that start within HORIZON
        self.running = 0  # jobs whose task was started and has not ended
        self.buffer: deque[Held] = deque()  # claimed, waiting for a slot of this lane
        self.reserved = 0  # asked for by claims still in flight
        self.want = True  # False once a claim found its queues drained, until a wake-up/poll
        self.claims = 0  # claims of this lane in flight
        self.planned = 0  # claims of this lane ever planned (tells a claim whether others began)
        self.run_time: float | None = None  # moving average of its jobs' run times (seconds)

    def ahead(self) -> int:
        """How many jobs to claim beyond the slots: those that start within HORIZON."""
        t = self.run_time
        if t is None or not self.prefetch:
            return 0
        if t * self.prefetch <= self.budget:
            return self.prefetch
        return int(self.budget / t)

    def free(self) -> int:
        return self.slots + self.ahead() - self.running - len(self.buffer) - self.reserved

    def admit(self, r: Held, start: bool) -> bool:
        """A claimed job of this lane: True if it starts now (it takes a slot), else it waits
        in the buffer."""
        r.lane = self
        r.since = monotonic()
        if start and self.running < self.slots:
            self.running += 1
            return True
        self.buffer.append(r)
        return False

    def done(self, r: Held, stopping: bool) -> Sequence[Held]:
        """A started job ended: its slot frees; returns the buffered jobs that take it now."""
        now = monotonic()
        if not (r.lost or r.released):  # cut short: says nothing of how long jobs run
            t, took = self.run_time, now - r.since
            self.run_time = took if t is None else t + (took - t) * _WEIGHT
        self.running -= 1
        buf = self.buffer
        if not buf or stopping:
            return _NOTHING
        out: list[Held] = []
        while buf and self.running < self.slots:
            nxt = buf.popleft()
            if not nxt.lost:
                nxt.since = now
                self.running += 1
                out.append(nxt)
        return out

    def __repr__(self) -> str:
        return (f"<Lane {','.join(self.queues)} slots={self.slots} running={self.running} "
                f"buffered={len(self.buffer)} reserved={self.reserved} "
                f"run_time={self.run_time}>")  # fmt: skip


@dataclass(slots=True)
class Claim:
    """One backend claim of a round and the slots it reserved, per lane."""

    params: ClaimParams
    grants: list[tuple[Lane, int]] = field(default_factory=list)
    held: bool = True
    # Per granted lane: did another claim of it run at any time during this one? Then a
    # shortfall proves nothing: the other may have held rows this one skipped (PostgreSQL's
    # SKIP LOCKED skips rows another claim locked and did not take), or taken them.
    overlapped: set[int] = field(default_factory=set)  # indexes into grants
    began: list[int] = field(default_factory=list)  # lane.planned when this claim was planned

    def start(self) -> None:
        for i, (lane, n) in enumerate(self.grants):
            lane.reserved += n
            if lane.claims:
                self.overlapped.add(i)
            lane.claims += 1
            lane.planned += 1
            self.began.append(lane.planned)

    def release(self) -> None:
        """The claim returned (or failed): its reservations end (returned jobs occupy slots).
        Idempotent."""
        if self.held:
            self.held = False
            for i, (lane, n) in enumerate(self.grants):
                lane.reserved -= n
                lane.claims -= 1
                if lane.planned != self.began[i]:  # another claim of the lane began meanwhile
                    self.overlapped.add(i)


class Lanes:
    """Every lane of one worker, by queue, and the plan of each claim round."""

    def __init__(
        self, queues: list[str], slots: dict[str, int], concurrency: int, prefetch: int
    ) -> None:
        self.order = queues
        self.by_queue: dict[str, Lane] = {}
        self.dedicated = [Lane([q], n, 0) for q, n in slots.items()]
        for lane in self.dedicated:
            self.by_queue[lane.queues[0]] = lane
        shared = [q for q in queues if q not in slots]
        self.shared: Lane | None = None
        self.all = list(self.dedicated)
        if shared:
            self.shared = pool = Lane(shared, concurrency, prefetch)
            self.all.append(pool)
            for q in shared:
                self.by_queue[q] = pool
        self.capacity = sum(slots.values()) + (concurrency if shared else 0)
        self.overshoot_warned = False

    def want_all(self) -> None:
        for lane in self.all:
            lane.want = True

    def plan(self, worker: str) -> list[Claim]:
        """The claims of one round, for lanes that want work and have free slots, with their
        slots reserved. Without dedicated lanes: one claim for the pool's free slots.
        Dedicated queues go in one claim capped per queue by ``queue_limits``; the shared queues
        join it (capped at the pool's free slots) when there is just one of them, and
        otherwise get a claim of their own, since ``queue_limits`` caps queues one by one and
        cannot cap the pool as a whole."""
        shared = self.shared
        pool = shared.free() if shared is not None and shared.want else 0
        if not self.dedicated:  # the common case: one lane
            if pool <= 0 or shared is None:
                return []
            claim = Claim(ClaimParams(shared.queues, pool, worker), [(shared, pool)])
            claim.start()
            return [claim]
        caps: dict[str, int] = {}
        for lane in self.dedicated:
            if lane.want and (free := lane.free()) > 0:
                caps[lane.queues[0]] = free
        if pool > 0 and shared is not None and len(shared.queues) == 1:
            caps[shared.queues[0]] = pool
            pool = 0
        claims: list[Claim] = []
        if caps:
            queues = [q for q in self.order if q in caps]
            params = ClaimParams(queues, sum(caps.values()), worker, caps)
            claims.append(Claim(params, [(self.by_queue[q], caps[q]) for q in queues]))
        if pool > 0 and shared is not None:
            claims.append(Claim(ClaimParams(shared.queues, pool, worker), [(shared, pool)]))
        for claim in claims:
            claim.start()
        return claims

    # -- accounting of returned claims and held jobs -------------------------------------------

    def settle(self, claim: Claim, jobs: Sequence[Job], conclude: bool) -> bool:
        """A claim returned ``jobs``: end its reservations and, when ``conclude`` (no wake-up
        arrived since it began), mark each lane that got less than its share as drained,
        unless another claim of that lane ran during this one. Returns whether a lane drained.

        A lane that got more jobs than asked (a backend not honouring ``queue_limits``) is
        warned about once: it still never runs more than its slots; the extra jobs wait in its
        buffer until a slot frees, or go back to the queue if none frees soon."""
        claim.release()
        grants = claim.grants
        if len(grants) == 1:  # one lane asked: no need to sort the jobs by lane
            lane, asked = grants[0]
            got = {lane: len(jobs)}
        else:
            got = {}
            for job in jobs:
                lane = self.by_queue[job.queue]
                got[lane] = got.get(lane, 0) + 1
        # Fewer jobs than asked in all: a lane that got less than its share has nothing more
        # ready for now. If the total was met, a lane's shortfall means another lane got more
        # than asked (queue_limits ignored): claim again rather than conclude.
        conclude = conclude and len(jobs) < claim.params.limit
        drained = False
        for i, (lane, asked) in enumerate(grants):
            n = got.get(lane, 0)
            if n > asked and not self.overshoot_warned:
                self.overshoot_warned = True
                log.warning("worker %s: the backend returned %d jobs of %s for %d free slots "
                            "(queue_limits not honoured); holding the extra ones until slots "
                            "free", claim.params.worker, n, ",".join(lane.queues),
                            asked)  # fmt: skip
            elif n < asked and conclude and i not in claim.overlapped:
                lane.want = False
                drained = True
        return drained

    def admit(self, r: Held, start: bool) -> bool:
        """A claimed job: True if it may start now (it takes a slot of its lane), else it waits
        in the lane's buffer."""
        return self.by_queue[r.job.queue].admit(r, start)

    def drop(self, r: Held) -> None:
        """A buffered (never started) job was lost."""
        if r.lane is not None:
            r.lane.buffer.remove(r)

    def stale(self, due_at: float) -> tuple[list[Held], float | None]:
        """Take out the buffered jobs that waited too long for a slot (to be handed back), and
        say in how many seconds the oldest one left would be (None: nothing buffered).

        A lane that let one wait counts the wait, times its running jobs, as a run time: its
        slots free slower than it assumed, so it stops prefetching until its jobs show again
        that they are short. A check that runs over STALE after ``due_at`` (monotonic) hands
        back nothing: the event loop was busy, so slots may have freed without their jobs'
        ends having run yet; the waits start over instead."""
        now = monotonic()
        late = now - due_at > STALE
        out: list[Held] = []
        due: float | None = None
        for lane in self.all:
            buf = lane.buffer
            if not buf:
                continue
            if late:
                for r in buf:
                    r.since = now
            limit = max(STALE, 2 * (lane.run_time or 0.0))
            waited = 0.0
            while buf and (buf[0].lost or now - buf[0].since >= limit):
                r = buf.popleft()
                if not r.lost:
                    waited = max(waited, now - r.since)
                    out.append(r)
            if waited:
                slowest = waited * max(lane.running, 1)
                lane.run_time = max(lane.run_time or 0.0, slowest)
            if buf:
                left = buf[0].since + limit - now
                due = left if due is None else min(due, left)
        return out, due
