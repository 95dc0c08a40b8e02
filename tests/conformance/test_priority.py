"""Claim order: highest priority first, FIFO within a priority."""

from __future__ import annotations

from conveyor import Conveyor
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
