"""`History`: the recent figures of each queue, for the queues page's small charts.

The backend keeps rates, not time series: `QueueStats.throughput_per_s` (completions per second
over its window) and the count of failed jobs. Each read of the queues page records one sample
per queue here (at most one per `MIN_GAP` seconds), and the charts draw the last `KEEP` samples:
throughput as the backend measured it, failures per second as the growth of the failed count
between samples. The history lives in this server process: a chart starts when the page is
first viewed on it, and two instances behind a balancer draw their own samples."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from itertools import pairwise

KEEP = 60
MIN_GAP = 2.0


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    throughput: float
    failed_total: int


class History:
    def __init__(self) -> None:
        self._queues: dict[str, deque[Sample]] = {}

    def record(self, queue: str, throughput: float, failed_total: int,
               now: float | None = None) -> None:  # fmt: skip
        now = time.monotonic() if now is None else now
        samples = self._queues.setdefault(queue, deque(maxlen=KEEP))
        if samples and now - samples[-1].at < MIN_GAP:
            return
        if len(self._queues) > 10_000:  # names come and go: forget the oldest ones
            self._queues.pop(next(iter(self._queues)))
        samples.append(Sample(now, throughput, failed_total))

    def throughput(self, queue: str) -> list[float]:
        return [s.throughput for s in self._queues.get(queue, ())]

    def failures(self, queue: str) -> list[float]:
        """Failed jobs per second between consecutive samples (0 when the count fell)."""
        samples = list(self._queues.get(queue, ()))
        return [max(0, b.failed_total - a.failed_total) / max(1e-6, b.at - a.at)
                for a, b in pairwise(samples)]  # fmt: skip


__all__ = ["History", "Sample"]
