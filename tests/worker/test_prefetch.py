"""Prefetch without hoarding: a worker claims jobs ahead of its free slots only while its jobs are
short enough to start soon, and hands back a job claimed ahead that no slot takes in time, so
long jobs spread over every worker's slots. On every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic

import pytest

from conveyor import Conveyor, Job, JobState
from conveyor.worker.slots import HORIZON, STALE, Held, Lane, Lanes
from tests.conftest import events_of, eventually


class Board:
    """Which jobs started and finished, across the workers of one test (one process)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.gate = asyncio.Event()


def with_tasks(app: Conveyor, board: Board) -> Conveyor:
    """``long`` runs until the board's gate opens; ``quick`` returns at once."""

    @app.task(name="long", retries=0)
    async def long(ctx, i: int) -> None:  # type: ignore[no-untyped-def]
        board.started.append(ctx.job.id)
        await board.gate.wait()
        board.finished.append(ctx.job.id)

    @app.task(name="quick")
    async def quick(i: int) -> int:
        return i

    return app


# -- the rule -----------------------------------------------------------------------------------


def test_a_lane_prefetches_only_what_its_slots_start_within_the_horizon() -> None:
    # Given a pool of 10 slots that may prefetch up to 4
    lane = Lane(["default"], slots=10, prefetch=4)
    # Then before any job finished it claims no more than its free slots
    assert lane.ahead() == 0 and lane.free() == 10
    # And with jobs far shorter than the horizon it prefetches all 4
    lane.run_time = HORIZON / 100
    assert lane.ahead() == 4 and lane.free() == 14
    # And with 20 ms jobs, only what 10 slots start within 5 ms on average (10 * 5 / 20)
    lane.run_time = 0.020
    assert lane.ahead() == 2
    # And with jobs of a minute, none
    lane.run_time = 60.0
    assert lane.ahead() == 0


def held(lane: Lane, n: int, waited: float) -> list[Held]:
    """``n`` jobs buffered in ``lane`` (its slots busy) ``waited`` seconds ago."""
    out = []
    for i in range(n):
        r = Held(Job(f"j{i}", "default", "long", {}, 5, JobState.ACTIVE, token=1), None)  # type: ignore[arg-type]
        assert not lane.admit(r, start=False)
        r.since -= waited
        out.append(r)
    return out


def test_a_job_claimed_ahead_goes_back_after_waiting_too_long_for_a_slot() -> None:
    # Given a pool whose 2 slots are busy, with 2 jobs claimed ahead 30 ms ago
    lanes = Lanes(["default"], {}, concurrency=2, prefetch=2)
    lane = lanes.all[0]
    lane.running, lane.run_time = 2, 0.001
    jobs = held(lane, 2, waited=0.030)
    # When the check runs on time
    stale, due = lanes.stale(due_at=monotonic())
    # Then both go back, nothing is left to check, and the lane stops prefetching
    assert stale == jobs and due is None
    assert lane.ahead() == 0


def test_a_late_check_hands_back_nothing_the_loop_was_busy() -> None:
    # Given the same 2 jobs claimed ahead 30 ms ago
    lanes = Lanes(["default"], {}, concurrency=2, prefetch=2)
    lane = lanes.all[0]
    lane.running, lane.run_time = 2, 0.001
    held(lane, 2, waited=0.030)
    # When the check runs 30 ms late (the event loop was busy: slots may have freed without the
    # loop having run their jobs' ends yet)
    stale, due = lanes.stale(due_at=monotonic() - 0.030)
    # Then it hands back nothing and looks again a full STALE later
    assert stale == [] and due == pytest.approx(STALE, abs=0.005)
    assert lane.ahead() == 2


# -- real workers -------------------------------------------------------------------------------


async def test_thirty_long_jobs_run_on_the_thirty_slots_of_three_workers(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given three workers of 10 slots each (and the default prefetch), each with its own
    # Conveyor on one store, as three processes would be
    board = Board()
    producer = with_tasks(make_app(), board)
    workers = [with_tasks(make_app(), board).worker(concurrency=10) for _ in range(3)]
    for w in workers:
        await w.start()
    try:
        # When 30 long jobs are enqueued one at a time
        for i in range(30):
            await producer.enqueue("long", {"i": i})
        # Then all 30 run at once, none having finished: no worker keeps a claimed job waiting
        # behind its busy slots while another worker has free ones
        await eventually(lambda: len(board.started) == 30, timeout=10.0,
                         what="30 jobs started")  # fmt: skip
        assert board.finished == []
        assert sorted(len(w.running) for w in workers) == [10, 10, 10]
        # And when they may end, every one completes once
        board.gate.set()
        await eventually(lambda: len(board.finished) == 30, what="30 jobs finished")
    finally:
        board.gate.set()
        for w in workers:
            await w.stop()
    st = (await producer.stats(["default"]))["default"]
    assert st.counts["completed"] == 30


async def test_a_job_claimed_ahead_goes_back_uncharged_when_no_slot_frees(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given a worker of 4 slots that may prefetch 2, whose jobs so far were quick (so it
    # prefetches them all: they start within the horizon)
    board = Board()
    producer = with_tasks(make_app(), board)
    first = with_tasks(make_app(), board).worker(concurrency=4, prefetch=2)
    second = with_tasks(make_app(), board).worker(concurrency=2, prefetch=0)
    await first.start()
    try:
        batch = await producer.enqueue_many([("quick", {"i": i}) for i in range(50)])
        await batch.wait(timeout=10)
        assert first._lanes.all[0].ahead() == 2, first._lanes.all[0]
        # When 6 long jobs arrive at once: 4 take the slots, and 2 are claimed ahead
        jobs = await producer.enqueue_many([("long", {"i": i}) for i in range(6)])
        await eventually(lambda: len(board.started) == 4, what="4 long jobs started")

        # Then the worker does not keep the other 2: they are back in the queue, their attempt
        # not charged, nothing of the claim left on them
        async def back_in_queue() -> list[str]:
            got = [await producer.get(i) for i in jobs.ids]
            return [j.id for j in got if j.status is JobState.QUEUED]

        async def both_back() -> list[str] | None:
            got = await back_in_queue()
            return got if len(got) == 2 and len(first.running) == 4 else None

        # (each goes back once it waited too long: claimed by different claims, not together)
        waiting = await eventually(both_back, what="2 jobs handed back")
        for job_id in waiting:
            job = await producer.get(job_id)
            assert (job.attempt, job.stalls, job.worker) == (0, 0, None)
            assert job.progress.percent is None and job.started_at is None
            # (they had been claimed: the claim logged "started")
            kinds = [e.type.value for e in await events_of(producer, job_id)]
            assert kinds == ["enqueued", "started"]
        # And a second worker with free slots runs them while the first one's still run
        await second.start()
        await eventually(lambda: len(board.started) == 6, what="6 long jobs started")
        assert sorted(board.started[4:]) == sorted(waiting) and board.finished == []
        board.gate.set()
        await eventually(lambda: len(board.finished) == 6, what="6 jobs finished")
    finally:
        board.gate.set()
        await first.stop()
        await second.stop()
    for job_id in jobs.ids:
        assert (await producer.get(job_id)).attempt == 1


@pytest.mark.parametrize("prefetch", [0, 4])
async def test_quick_jobs_still_drain_with_or_without_prefetch(
    app: Conveyor, prefetch: int
) -> None:
    # Given 500 quick jobs
    board = Board()
    with_tasks(app, board)
    batch = await app.enqueue_many([("quick", {"i": i}) for i in range(500)])
    # When one worker drains them
    async with app.worker(concurrency=8, prefetch=prefetch) as w:
        st = await batch.wait(timeout=20)
        # Then all complete, and prefetch (when allowed) kicked in once jobs were measured
        assert st.counts == {"completed": 500}
        lane = w._lanes.all[0]
        assert lane.run_time is not None
        assert lane.ahead() == prefetch
