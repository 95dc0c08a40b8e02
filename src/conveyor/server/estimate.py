"""The estimate a submit answers with: when the job (or the last job of a batch) should start
and finish.

The formula, per queue, from figures the backend already keeps (`QueueStats`):

- ``ahead`` = the queue's **queued** count. The backends keep counts by state only, not by
  priority, so a job is estimated behind every waiting job of its queue, whatever their
  priorities (pessimistic for a high-priority job). Scheduled jobs are not counted: they are
  not ready yet.
- ``run`` = ``QueueStats.avg_run_seconds``, the mean run time of the jobs of the queue that
  completed in the stats window (the last minute).
- ``capacity`` = ``QueueStats.concurrency``, the job slots of the live workers serving the
  queue, capped by the queue's own unkeyed concurrency limit (``app.queue(concurrency=N)``).
- ``start_at`` = ``now + ahead * run / capacity`` (the queue drains ``capacity / run`` jobs a
  second), and no earlier than the job's due time when it was submitted with a delay.
- ``finish_at`` = ``start_at + run`` for one job; for a batch of ``n`` jobs of the queue
  ``now + (ahead + n - 1) * run / capacity + run`` (its last job starts after the others).

The estimate is None when nothing completed in the queue recently (no ``run``) or no live
worker serves it (no ``capacity``): a guess without a measure would only mislead.

Cost: the stats of a queue are cached for ``ServerSettings.estimate_ttl`` seconds (1 s), and
concurrent submits wait for one read, so that submitting costs at most one extra backend read
per second per queue however many requests arrive. A stats read that fails or is slow gives no
estimate, never a failed submit: the job is already stored."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backends.records import QueueStats
from ..limits import Concurrency

if TYPE_CHECKING:
    from fastapi import Request

    from ..app import Conveyor

log = logging.getLogger("conveyor.server")

#: The longest a stats read for an estimate may take before the submit answers without one.
STATS_TIMEOUT = 0.5


@dataclass(frozen=True, slots=True)
class QueueRate:
    """What the estimate of one queue needs: jobs ahead, mean run time, job slots."""

    ahead: int
    run_seconds: float
    capacity: int

    def start_after(self) -> float:
        return self.ahead * self.run_seconds / self.capacity

    def finish_after(self, jobs: int = 1) -> float:
        return (self.ahead + max(1, jobs) - 1) * self.run_seconds / self.capacity + (
            self.run_seconds
        )


def rate_of(stats: QueueStats, concurrency_cap: int | None = None) -> QueueRate | None:
    """The queue's figures for an estimate, or None when it cannot be estimated."""
    run = stats.avg_run_seconds
    capacity = stats.concurrency if stats.workers > 0 else 0
    if concurrency_cap is not None:
        capacity = min(capacity, concurrency_cap)
    if run is None or not run >= 0 or capacity <= 0:
        return None
    return QueueRate(stats.counts.get("queued", 0), run, capacity)


def estimate(
    rate: QueueRate | None, now: float, jobs: int = 1, not_before: float | None = None
) -> dict[str, Any] | None:
    """The ``Estimate`` body for ``jobs`` jobs submitted at ``now`` (backend epoch seconds)."""
    if rate is None:
        return None
    start = now + rate.start_after()
    finish = now + rate.finish_after(jobs)
    if not_before is not None and not_before > start:
        finish += not_before - start
        start = not_before
    return {"start_at": start, "finish_at": finish, "ahead": rate.ahead,
            "run_seconds": rate.run_seconds, "capacity": rate.capacity}  # fmt: skip


def for_caller(est: dict[str, Any] | None, admin: bool) -> dict[str, Any] | None:
    """The estimate as a caller may see it: a tenant key gets the times only, not the figures
    (depth, run time, capacity) that sum up other tenants' work."""
    if est is None or admin:
        return est
    return {"start_at": est["start_at"], "finish_at": est["finish_at"]}


class Estimator:
    """Per-queue stats for estimates, each read at most once per ``ttl`` seconds."""

    def __init__(self, conveyor: Conveyor, ttl: float = 1.0) -> None:
        self.conveyor = conveyor
        self.ttl = ttl
        self._cache: dict[str, tuple[float, QueueRate | None]] = {}
        self._reading: dict[str, asyncio.Future[QueueRate | None]] = {}

    def _cap(self, queue: str) -> int | None:
        caps = [
            lim.limit
            for lim in self.conveyor.queue_limits(queue)
            if isinstance(lim, Concurrency) and lim.key is None
        ]
        return min(caps) if caps else None

    async def rate(self, queue: str) -> QueueRate | None:
        """The queue's figures (None: no estimate), from the cache when fresh enough."""
        hit = self._cache.get(queue)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._reading.get(queue)
        if pending is not None:  # another request is reading them: share its answer
            return await asyncio.shield(pending)
        fut: asyncio.Future[QueueRate | None] = asyncio.get_running_loop().create_future()
        self._reading[queue] = fut
        rate: QueueRate | None = None
        try:
            async with asyncio.timeout(STATS_TIMEOUT):
                stats = await self.conveyor.backend.stats([queue])
            st = stats.get(queue)
            rate = None if st is None else rate_of(st, self._cap(queue))
        except Exception as exc:  # no estimate rather than a failed submit
            log.warning("no estimate for queue %r: stats unavailable (%r)", queue, exc)
        finally:
            if len(self._cache) > 10_000:  # queue names come from tasks: bounded, but be safe
                self._cache.clear()
            self._cache[queue] = (time.monotonic() + self.ttl, rate)
            del self._reading[queue]
            fut.set_result(rate)
        return rate

    async def for_job(self, queue: str, now: float, not_before: float | None = None) -> Any:
        return estimate(await self.rate(queue), now, 1, not_before)

    async def for_batch(
        self, queues: Iterable[str], now: float, not_before: float | None = None
    ) -> dict[str, Any] | None:
        """The estimate of a batch whose jobs go to ``queues`` (one entry per job): it starts
        when its first job does and finishes with the latest queue's last job; None when any of
        its queues cannot be estimated."""
        per_queue: dict[str, int] = {}
        for q in queues:
            per_queue[q] = per_queue.get(q, 0) + 1
        # Read every queue's figures at once: a batch over N slow queues waits for one read.
        rates = await asyncio.gather(*(self.rate(q) for q in per_queue))
        best: dict[str, Any] | None = None
        start: float | None = None
        for (_, n), rate in zip(per_queue.items(), rates, strict=True):
            one = estimate(rate, now, n, not_before)
            if one is None:
                return None
            start = one["start_at"] if start is None else min(start, one["start_at"])
            if best is None or one["finish_at"] > best["finish_at"]:
                best = one
        if best is None or start is None:
            return None
        return {**best, "start_at": start}


def estimator_of(request: Request) -> Estimator:
    """The app's `Estimator`, made on first use (one per server)."""
    state = request.app.state
    est: Estimator | None = getattr(state, "estimator", None)
    if est is None:
        est = state.estimator = Estimator(state.conveyor, state.settings.estimate_ttl)
    return est
