"""``app.stats()``: counts per state match reality; live workers and their slots."""

from __future__ import annotations

import asyncio

from conveyor import Conveyor, JobState
from tests.conftest import eventually


async def _listed(app: Conveyor, state: JobState) -> int:
    return len((await app.list(status=state, queue="mix", limit=1000)).jobs)


async def test_counts_per_state_match_a_mixed_scenario(app: Conveyor) -> None:
    # Given a one-slot worker on queue 'mix' and jobs that end every possible way
    release = asyncio.Event()

    @app.task(queue="mix", retries=0)
    async def job(kind: str) -> str:
        if kind == "fail":
            raise RuntimeError("failed on purpose")
        if kind == "block":
            await release.wait()
        return kind

    async with app.worker(concurrency=1, queues=["mix"]):
        ok = [await job.enqueue(kind="ok") for _ in range(2)]
        bad = await job.enqueue(kind="fail")
        for j in [*ok, bad]:
            await eventually(lambda j=j: _final(app, j.id), what="first jobs to end")
        cancelled = await app.enqueue("job", {"kind": "ok"}, delay=60)
        await app.cancel(cancelled.id)
        await app.enqueue("job", {"kind": "ok"}, delay=60)  # stays scheduled
        blocker = await job.enqueue(kind="block")
        await eventually(lambda: _is(app, blocker.id, JobState.ACTIVE), what="blocker active")
        await job.enqueue(kind="ok")  # stays queued: the only slot is taken
        # When stats are read
        stats = (await app.stats())["mix"]
        # Then each state's count is exact, and agrees with a listing by state
        expected = {"queued": 1, "scheduled": 1, "active": 1, "completed": 2, "failed": 1,
                    "cancelled": 1}  # fmt: skip
        for state, n in expected.items():
            assert stats.counts[state] == n, state
            assert await _listed(app, JobState(state)) == n, state
        assert stats.active == 1
        # And the running worker is counted with its slots
        assert stats.workers == 1
        assert stats.concurrency == 1
        # When the blocker is released, the counts follow
        release.set()
        await eventually(
            lambda: _count(app, "mix", "completed", 4), what="blocker and queued job to complete"
        )
    stats = (await app.stats())["mix"]
    assert {s: stats.counts[s] for s in expected} == {
        "queued": 0, "scheduled": 1, "active": 0, "completed": 4, "failed": 1, "cancelled": 1,
    }  # fmt: skip


async def test_stats_lists_registered_queues_even_when_empty(app: Conveyor) -> None:
    # Given tasks on two queues and no jobs
    @app.task(queue="a")
    async def ta() -> None:
        return None

    @app.task(queue="b")
    async def tb() -> None:
        return None

    # When stats are read
    stats = await app.stats()
    # Then both queues appear with zero counts for every state
    assert {"a", "b"} <= set(stats)
    for q in ("a", "b"):
        assert set(stats[q].counts) >= {s.value for s in JobState}
        assert sum(stats[q].counts.values()) == 0
        assert stats[q].workers == 0


async def test_workers_and_concurrency_reflect_running_workers(app: Conveyor) -> None:
    # Given a task on queue 'q'
    @app.task(queue="q")
    async def t() -> None:
        return None

    # When two workers with 3 and 5 slots run
    async with app.worker(concurrency=3, queues=["q"]), app.worker(concurrency=5, queues=["q"]):
        stats = (await app.stats(["q"]))["q"]
        # Then stats count both and their slots
        assert stats.workers == 2
        assert stats.concurrency == 8
    # And once they stopped they are gone
    stats = (await app.stats(["q"]))["q"]
    assert (stats.workers, stats.concurrency) == (0, 0)


async def test_completed_jobs_feed_throughput_and_run_time(app: Conveyor) -> None:
    # Given a task that takes a little time
    @app.task
    async def work() -> None:
        await asyncio.sleep(0.02)

    # When a few jobs complete
    batch = await app.enqueue_many([("work", {}) for _ in range(5)])
    async with app.worker(concurrency=5):
        await batch.wait(timeout=5)
    # Then stats show a positive rate and a plausible average run time
    stats = (await app.stats())["default"]
    assert stats.throughput_per_s > 0
    assert stats.avg_run_seconds is not None and 0.02 - 1e-3 <= stats.avg_run_seconds < 2


async def _final(app: Conveyor, job_id: str) -> bool:
    return (await app.get(job_id)).status.is_final


async def _is(app: Conveyor, job_id: str, state: JobState) -> bool:
    return (await app.get(job_id)).status is state


async def _count(app: Conveyor, queue: str, state: str, n: int) -> bool:
    return (await app.stats([queue]))[queue].counts[state] == n
