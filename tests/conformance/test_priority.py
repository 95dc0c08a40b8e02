"""Claim order: highest priority first, FIFO within a priority; the same rule across the queues
one worker serves."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import Conveyor
from conveyor.backends.base import ClaimParams
from tests.conftest import eventually


def _recorder(app: Conveyor, order: list[str]) -> None:
    @app.task(queue="prio")
    async def record(label: str) -> None:
        order.append(label)


async def test_named_priorities_run_highest_first(app: Conveyor) -> None:
    # Given one job per named priority, enqueued lowest first, before any worker runs
    order: list[str] = []
    _recorder(app, order)
    for label in ["low", "normal", "high", "critical"]:
        await app.enqueue("record", {"label": label}, priority=label)
    # When a worker with a single slot drains the queue
    async with app.worker(concurrency=1, queues=["prio"]):
        await eventually(lambda: len(order) == 4, what="4 jobs to run")
    # Then they ran critical, high, normal, low
    assert order == ["critical", "high", "normal", "low"]


async def test_fifo_within_one_priority(app: Conveyor) -> None:
    # Given five 'normal' jobs and two 'high' ones interleaved with them
    order: list[str] = []
    _recorder(app, order)
    for label in ["n0", "h0", "n1", "n2", "h1", "n3", "n4"]:
        await app.enqueue("record", {"label": label}, priority="high" if label[0] == "h" else None)
    # When one slot drains the queue
    async with app.worker(concurrency=1, queues=["prio"]):
        await eventually(lambda: len(order) == 7, what="7 jobs to run")
    # Then each level ran in enqueue order, higher level first
    assert order == ["h0", "h1", "n0", "n1", "n2", "n3", "n4"]


async def test_integer_priorities_0_to_100(app: Conveyor) -> None:
    # Given jobs with integer priorities across the whole range, in scrambled order
    order: list[str] = []
    _recorder(app, order)
    prios = [7, 0, 100, 50, 99, 1]
    for p in prios:
        job = await app.enqueue("record", {"label": str(p)}, priority=p)
        assert job.priority == p
    # When one slot drains the queue
    async with app.worker(concurrency=1, queues=["prio"]):
        await eventually(lambda: len(order) == len(prios), what="all jobs to run")
    # Then they ran by descending priority
    assert order == [str(p) for p in sorted(prios, reverse=True)]


async def test_urgent_is_an_alias_of_critical(app: Conveyor) -> None:
    # Given an 'urgent' job enqueued before a 'critical' one, after a priority-19 job
    order: list[str] = []
    _recorder(app, order)
    j19 = await app.enqueue("record", {"label": "p19"}, priority=19)
    urgent = await app.enqueue("record", {"label": "urgent"}, priority="urgent")
    critical = await app.enqueue("record", {"label": "critical"}, priority="CRITICAL")
    # Then both are stored as 20
    assert (await app.get(urgent.id)).priority == 20
    assert (await app.get(critical.id)).priority == 20
    assert (await app.get(j19.id)).priority == 19
    # When one slot drains the queue
    async with app.worker(concurrency=1, queues=["prio"]):
        await eventually(lambda: len(order) == 3, what="3 jobs to run")
    # Then the two 20s ran first, FIFO between them
    assert order == ["urgent", "critical", "p19"]


async def test_task_default_priority_and_per_job_override(app: Conveyor) -> None:
    # Given a task whose default priority is 'high'
    @app.task(priority="high")
    async def hi() -> None:
        return None

    # When jobs are enqueued with and without an override
    default = await hi.enqueue()
    low = await hi.enqueue_with(priority="low")
    # Then the default applies unless overridden
    assert (await app.get(default.id)).priority == 10
    assert (await app.get(low.id)).priority == 1


# -- one rule across the queues a worker serves ------------------------------------------------

# (queue, label, priority), in enqueue order: interleaved across queues and priorities.
PLAN = [
    ("qb", "b1", 5), ("qa", "a1", 1), ("qc", "c1", 10), ("qa", "a2", 5), ("qb", "b2", 10),
    ("qc", "c2", 5), ("qa", "a3", 10), ("qb", "b3", 1), ("qc", "c3", 1), ("qb", "b4", 10),
]  # fmt: skip
# Highest priority first across all served queues; within a priority, enqueue order (FIFO)
# across the queues too.
EXPECTED = ["c1", "b2", "a3", "b4", "b1", "a2", "c2", "a1", "b3", "c3"]


def _queue_recorders(app: Conveyor, order: list[str], **options: Any) -> None:
    for q in ("qa", "qb", "qc"):

        @app.task(name=f"rec_{q}", queue=q, **options)
        async def rec(label: str) -> None:
            order.append(label)


async def _enqueue_plan(app: Conveyor) -> dict[str, str]:
    ids = {}
    for q, label, prio in PLAN:
        job = await app.enqueue(f"rec_{q}", {"label": label}, priority=prio)
        ids[job.id] = label
    return ids


async def test_several_queues_run_by_priority_then_fifo_across_queues(app: Conveyor) -> None:
    # Given jobs of three queues, enqueued interleaved with mixed priorities
    order: list[str] = []
    _queue_recorders(app, order)
    ids = await _enqueue_plan(app)
    # When one worker with a single slot serves the three queues (listed in another order)
    async with app.worker(concurrency=1, queues=["qc", "qa", "qb"]):
        await eventually(lambda: len(order) == len(PLAN), what="every job to run")
    # Then they ran by priority across the queues, FIFO within a priority across queues
    assert order == EXPECTED
    # And the event log has their 'started' events in the same order
    started = [ids[e.job_id] async for e in app.events(since="0", follow=False)
               if e.type == "started" and e.job_id in ids]  # fmt: skip
    assert started == EXPECTED


async def test_one_claim_of_several_queues_takes_them_in_the_same_order(app: Conveyor) -> None:
    # Given the same jobs
    order: list[str] = []
    _queue_recorders(app, order)
    await _enqueue_plan(app)
    # When a worker with room for all of them claims them at once
    async with app.worker(concurrency=20, queues=["qc", "qa", "qb"]):
        await eventually(lambda: len(order) == len(PLAN), what="every job to run")
    # Then it started them in the same order (handlers start in claim order)
    assert order == EXPECTED


async def test_a_claim_of_several_queues_honours_priority_over_its_limit(app: Conveyor) -> None:
    # Given the same jobs
    _queue_recorders(app, [])
    ids = await _enqueue_plan(app)
    # When a worker claims 4 of them, then 3, then the rest
    await app.open()
    got: list[str] = []
    for n in (4, 3, 10):
        res = await app.backend.claim_jobs(ClaimParams(["qa", "qb", "qc"], n, "w1"))
        got += [ids[j.id] for j in res.jobs]
    # Then each claim took the best remaining jobs of all three queues, in order
    assert got == EXPECTED


async def test_flow_controlled_queues_join_the_same_order(app: Conveyor) -> None:
    # Given the same jobs, every task under a concurrency cap that never refuses a single slot
    # (a rate limit would: it spaces starts, and a spaced-out queue rightly waits its turn)
    order: list[str] = []
    _queue_recorders(app, order, concurrency=5)
    await _enqueue_plan(app)
    # When one worker with a single slot serves the three queues
    async with app.worker(concurrency=1, queues=["qa", "qb", "qc"]):
        await eventually(lambda: len(order) == len(PLAN), what="every job to run")
    # Then the order is the same rule
    assert order == EXPECTED


async def test_a_capped_queue_does_not_hold_back_the_others(app: Conveyor) -> None:
    # Given 3 high-priority jobs in qa whose task runs at most 1 at a time, and 3 jobs in qb
    release = asyncio.Event()
    running_qa: list[int] = []
    done_qb: list[int] = []

    @app.task(queue="qa", concurrency=1, priority="high")
    async def capped(i: int) -> None:
        running_qa.append(i)
        await release.wait()

    @app.task(queue="qb")
    async def free(i: int) -> None:
        done_qb.append(i)

    await app.enqueue_many([("capped", {"i": i}) for i in range(3)])
    await app.enqueue_many([("free", {"i": i}) for i in range(3)])
    # When one worker with 4 slots serves both queues
    async with app.worker(concurrency=4, queues=["qa", "qb"]):
        # Then qb's jobs run while qa's cap holds one of its jobs, in FIFO order
        await eventually(lambda: len(done_qb) == 3, what="qb's jobs to run")
        assert running_qa == [0]
        # And qa's others run one by one once the first may finish
        release.set()
        await eventually(lambda: len(running_qa) == 3, what="qa's jobs to run")
    assert running_qa == [0, 1, 2]
