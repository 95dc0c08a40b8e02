"""The submit estimate's formula (`conveyor.server.estimate`): pure arithmetic on QueueStats."""

from __future__ import annotations

import pytest

from conveyor.backends.records import QueueStats
from conveyor.server.estimate import estimate, rate_of


def _stats(queued: int, run: float | None, concurrency: int, workers: int = 1) -> QueueStats:
    return QueueStats("q", {"queued": queued, "scheduled": 7}, concurrency=concurrency,
                      workers=workers, avg_run_seconds=run)  # fmt: skip


def test_a_job_starts_after_the_queued_jobs_drain_at_the_live_capacity() -> None:
    # Given 10 queued jobs of 2 s each and 4 slots (scheduled jobs are not ahead)
    rate = rate_of(_stats(10, 2.0, 4))
    # When a job is estimated at t=100
    est = estimate(rate, 100.0)
    # Then it starts after 10 * 2 / 4 = 5 s and finishes one run later
    assert est == {"start_at": 105.0, "finish_at": 107.0, "ahead": 10, "run_seconds": 2.0,
                   "capacity": 4}  # fmt: skip


def test_a_batch_finishes_when_its_last_job_does() -> None:
    # Given an empty queue of 1 s jobs and 2 slots, when 6 jobs are estimated
    est = estimate(rate_of(_stats(0, 1.0, 2)), 0.0, jobs=6)
    # Then the first starts now and the last finishes after 5 / 2 + 1 s
    assert est is not None and est["start_at"] == 0.0 and est["finish_at"] == pytest.approx(3.5)


def test_a_delayed_job_starts_no_earlier_than_its_due_time() -> None:
    est = estimate(rate_of(_stats(0, 1.0, 1)), 0.0, not_before=60.0)
    assert est is not None and (est["start_at"], est["finish_at"]) == (60.0, 61.0)


def test_the_queues_concurrency_limit_caps_the_capacity() -> None:
    rate = rate_of(_stats(8, 1.0, 10), concurrency_cap=2)
    assert rate is not None and rate.capacity == 2 and rate.start_after() == 4.0


@pytest.mark.parametrize(
    "stats",
    [_stats(3, None, 4), _stats(3, 1.0, 0, workers=0), _stats(3, 1.0, 4, workers=0)],
    ids=["nothing measured", "no capacity", "no live worker"],
)
def test_no_estimate_without_a_measured_run_time_or_a_live_worker(stats: QueueStats) -> None:
    assert rate_of(stats) is None and estimate(rate_of(stats), 0.0) is None
