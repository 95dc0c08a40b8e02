"""The scheduler: fires the ticks of an app's cron and periodic schedules (`conveyor.schedule`).

Every worker runs one by default (``conveyor worker --no-scheduler`` opts out), and any number
may run at once without a leader: each tick is claimed in the backend with its job in one atomic
step (`Backend.claim_tick`), so whichever scheduler comes first fires it and the others learn
it was taken. A pass reads every schedule's state in one call, fires what `schedule.plan`
says, then the scheduler sleeps until the earliest next tick (no polling), re-reading the
state at least every `MAX_SLEEP` seconds (clock changes, schedules fired by others).

Time is the backend's clock (`Backend.now`), in integer epoch milliseconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..backends.base import NewJob, TickClaim, TickResult
from ..inputs import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_PAYLOAD_DEPTH, PayloadLimits
from ..limits import FlowRules, flow_of
from ..newjobs import JobBuilder
from ..outage import Outage
from ..schedule import Overlap, Schedule, idempotency_key, plan

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..catalog import Catalog

log = logging.getLogger("conveyor.scheduler")

MAX_SLEEP = 30.0
"""The longest a scheduler sleeps between passes (seconds)."""
RETRY_AFTER = 1.0
"""Seconds before a pass that failed is tried again."""
LATE = 0.002
"""Wake this long after a tick is due, so the backend's clock shows it due."""


def millis(t: float) -> int:
    return int(t * 1000)


class Scheduler:
    """Fires the due ticks of ``catalog``'s schedules on ``backend``.

    Args:
        on_fired: called after a pass that stored jobs (a worker of this process wakes).
        who: the subject of its log lines.
    """

    def __init__(
        self,
        backend: Backend,
        catalog: Catalog,
        *,
        on_fired: Callable[[], None] | None = None,
        who: str = "scheduler",
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self._on_fired = on_fired
        self._builder = JobBuilder(
            catalog, PayloadLimits(DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_PAYLOAD_DEPTH)
        )
        self.outage = Outage(log, who)

    def queue_of(self, s: Schedule) -> str:
        """The queue a schedule's jobs go to (where its state is kept too)."""
        return s.queue or self.catalog.lookup(s.task).options.queue

    async def run(self, closing: Callable[[], bool] = lambda: False) -> None:
        """Run passes until cancelled (or ``closing()``); a failing pass is logged (an outage
        once) and retried."""
        while not closing():
            try:
                delay = await self.run_once()
            except Exception as exc:
                self.outage.failed(exc, "scheduling")
                delay = RETRY_AFTER
            else:
                self.outage.back()
            await asyncio.sleep(delay)

    async def run_once(self) -> float:
        """One pass: fire every due tick of every schedule. Returns the seconds until the next
        tick is due (at most `MAX_SLEEP`)."""
        schedules = list(self.catalog.schedules.values())
        if not schedules:
            return MAX_SLEEP
        items = [(s.name, self.queue_of(s)) for s in schedules]
        states = await self.backend.schedule_states(items)
        fired = 0
        nexts: list[int] = []
        for s, (_, queue) in zip(schedules, items, strict=True):
            state = states.get(s.name)
            now = millis(self.backend.now())
            if state is None:  # a new schedule: its ticks from now on
                last = await self.backend.init_schedule(s.name, queue, s.latest_at_or_before(now))
            else:
                last = state.last_tick
            fired += await self._fire(s, queue, last, now)
            # The next tick after the time this pass decided on, not after the clock at its end:
            # a tick that fell due while the pass stored jobs is due now, not in a period.
            nexts.append(s.next_after(now))
        if fired and self._on_fired is not None:
            self._on_fired()
        now = millis(self.backend.now())
        return min(MAX_SLEEP, max(0.0, (min(nexts) - now) / 1000 + LATE))

    async def _fire(self, s: Schedule, queue: str, last: int, now: int) -> int:
        """Claim the ticks `plan` gives for ``s``; returns how many jobs this call stored."""
        p = plan(s, last, now)
        if p.skip_to is not None:
            out = await self.backend.claim_tick(TickClaim(s.name, queue, p.skip_to))
            if out.result is TickResult.CLAIMED:
                log.info("schedule %s: missed ticks up to %s not fired (catch_up=%s)",
                         s.name, idempotency_key(s.name, p.skip_to), s.catch_up.value)  # fmt: skip
        fired = 0
        for tick in p.fire:
            job = self._job(s, queue, tick)
            claim = TickClaim(s.name, queue, tick, job, s.overlap is Overlap.SKIP)
            out = await self.backend.claim_tick(claim)
            if out.result is TickResult.FIRED:
                fired += 1
                log.info("schedule %s: fired job %s (%s)", s.name, out.job_id,
                         job.idempotency_key)  # fmt: skip
            elif out.result is TickResult.BUSY:
                log.info("schedule %s: tick %s not fired: job %s of the previous tick still "
                         "runs (overlap=skip)", s.name, job.idempotency_key, out.job_id)  # fmt: skip
            elif out.last >= p.fire[-1]:
                break  # another scheduler is ahead of this one: nothing left to do
        return fired

    def _job(self, s: Schedule, queue: str, tick: int) -> NewJob:
        """The job of one tick: the schedule's payload and options, keyed by the tick."""
        task = self.catalog.lookup(s.task)
        key = idempotency_key(s.name, tick)
        nj = self._builder.new_job(task, s.payload, s.priority, 0.0, key, None, None, None)
        if queue != nj.queue:  # the schedule's own queue: that queue's limits apply
            nj.queue = queue
            o = task.options
            rules = FlowRules(task.name, (*o.rate_limit, *o.concurrency),
                              self.catalog.queue_limits(queue), o.breaker)  # fmt: skip
            nj.gates = rules.gates(s.payload, None) if rules else ()
            nj.flow = flow_of(nj.gates) if rules else None
        return nj
