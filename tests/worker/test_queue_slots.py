"""Per-queue worker slots: validation, the claim plan, and real workers on every backend where a
flood of low-priority jobs must not hold up critical ones."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor
from conveyor.backends.base import ClaimParams
from conveyor.worker.slots import Lanes
from tests.conftest import eventually

# -- validation and capacity ------------------------------------------------------------------


@pytest.mark.parametrize("slots", [0, -1, 1.5, "2", True, [1]])
def test_slots_must_be_whole_numbers_of_at_least_one(tmp_path: Any, slots: Any) -> None:
    # Given an app
    app = Conveyor(f"sqlite:///{tmp_path}/c.db")
    # When a worker is given a bad slot count for queue "low"
    with pytest.raises(ConfigurationError) as err:
        app.worker(queues={"critical": 2, "low": slots})
    # Then the error names the queue and what is allowed
    assert "'low'" in str(err.value) and ">= 1" in str(err.value)


def test_a_string_is_not_taken_for_a_list_of_queues(tmp_path: Any) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/c.db")
    with pytest.raises(ConfigurationError, match="not the string 'low'"):
        app.worker(queues="low")


@pytest.mark.parametrize(
    ("queues", "concurrency", "capacity"),
    [
        (["a", "b"], 10, 10),  # a list: one shared pool, as before
        ({"critical": 5, "high": 3}, 10, 8),  # only dedicated slots: concurrency unused
        ({"critical": 5, "default": None}, 10, 15),  # dedicated plus the shared pool
        ({"a": None, "b": None}, 4, 4),  # a dict without counts is a list
    ],
)
def test_capacity_is_the_dedicated_slots_plus_the_shared_pool_if_used(
    tmp_path: Any, queues: Any, concurrency: int, capacity: int
) -> None:
    # Given a worker configuration
    app = Conveyor(f"sqlite:///{tmp_path}/c.db")
    w = app.worker(queues=queues, concurrency=concurrency)
    # Then its capacity (and what it reports to the registry) is the total of its slots
    assert w.capacity == capacity
    assert w.info().concurrency == capacity
    assert w.queues == list(queues)


# -- the claim plan -----------------------------------------------------------------------------


def test_plan_asks_each_queue_for_its_free_slots_only() -> None:
    # Given 2 critical slots, 1 low slot and no shared queue
    lanes = Lanes(["critical", "low"], {"critical": 2, "low": 1}, concurrency=10, prefetch=3)
    # When a round is planned, one claim asks for each queue's free slots
    (claim,) = lanes.plan("w1")
    assert claim.params.queues == ["critical", "low"]
    assert claim.params.queue_limits == {"critical": 2, "low": 1}
    assert claim.params.limit == 3
    # Then while it is in flight its slots are reserved: nothing more is asked
    assert lanes.plan("w1") == []
    # And when it returns with no jobs, each queue that got less than asked is drained
    assert lanes.settle(claim, [], conclude=True)
    assert lanes.plan("w1") == []  # until a wake-up
    lanes.want_all()
    assert [c.params.queue_limits for c in lanes.plan("w1")] == [{"critical": 2, "low": 1}]


def test_plan_caps_the_shared_pool_as_a_whole() -> None:
    # Given one dedicated queue and two queues on a shared pool of 4 (+1 prefetch, its jobs
    # being short)
    lanes = Lanes(["critical", "a", "b"], {"critical": 2}, concurrency=4, prefetch=1)
    assert lanes.shared is not None
    lanes.shared.run_time = 0.0001
    # When a round is planned, the shared queues get a claim of their own capped at 5 in all
    # (queue_limits caps queues one by one, not a pool)
    dedicated, shared = lanes.plan("w1")
    assert (dedicated.params.queues, dedicated.params.limit) == (["critical"], 2)
    assert dedicated.params.queue_limits == {"critical": 2}
    assert (shared.params.queues, shared.params.limit) == (["a", "b"], 5)
    assert shared.params.queue_limits is None


def test_plan_folds_a_single_shared_queue_into_one_claim() -> None:
    lanes = Lanes(["critical", "default"], {"critical": 2}, concurrency=4, prefetch=0)
    (claim,) = lanes.plan("w1")
    assert claim.params.queue_limits == {"critical": 2, "default": 4}
    assert claim.params.limit == 6


def test_a_shortfall_while_another_claim_of_the_lane_ran_proves_nothing() -> None:
    # Given the pool's claim A in flight for its one free slot, and B planned for a slot that
    # freed meanwhile (on PostgreSQL, B skips rows A locked and did not take)
    lanes = Lanes(["a", "b"], {}, concurrency=2, prefetch=0)
    pool = lanes.shared
    assert pool is not None
    pool.running = 1
    (a,) = lanes.plan("w1")
    pool.running = 0
    (b,) = lanes.plan("w1")
    # When both come back with nothing and no wake-up arrived
    lanes.settle(b, [], conclude=True)
    lanes.settle(a, [], conclude=True)
    # Then the pool still wants work; only a claim that ran alone can say the queues are empty
    assert pool.want
    (c,) = lanes.plan("w1")
    assert not lanes.settle(c, [], conclude=False) and pool.want  # a wake-up arrived
    (d,) = lanes.plan("w1")
    assert lanes.settle(d, [], conclude=True) and not pool.want


# -- real workers ---------------------------------------------------------------------------------


class Gauge:
    """How many handlers of each queue run now, the most at once, and how many finished."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.done: Counter[str] = Counter()

    async def hold(self, queue: str, gate: asyncio.Event) -> None:
        self.running[queue] += 1
        self.peak[queue] = max(self.peak[queue], self.running[queue])
        try:
            await gate.wait()
        finally:
            self.running[queue] -= 1
        self.done[queue] += 1


def held_tasks(app: Conveyor, gauge: Gauge, gates: dict[str, asyncio.Event]) -> None:
    """One task per queue in ``gates`` whose jobs run until that queue's gate opens."""

    def register(queue: str, gate: asyncio.Event) -> None:
        async def handler(i: int) -> None:
            await gauge.hold(queue, gate)

        app.task(name=f"{queue}_job", queue=queue, retries=0)(handler)

    for queue, gate in gates.items():
        register(queue, gate)


async def test_a_low_flood_never_takes_the_critical_slots(app: Conveyor) -> None:
    # Given low and critical jobs that run until their gate opens
    gauge = Gauge()
    gates = {"low": asyncio.Event(), "critical": asyncio.Event()}
    held_tasks(app, gauge, gates)
    # And a worker with 1 low slot and 2 critical ones, whose slow poll cannot be what starts
    # the critical jobs: only wake-ups and free slots can
    async with app.worker(queues={"low": 1, "critical": 2}, poll_interval=30):
        # When 50 low jobs flood in and one of them holds the low slot
        await app.enqueue_many([("low_job", {"i": i}) for i in range(50)])
        await eventually(lambda: gauge.running["low"] == 1, what="the low slot busy")
        # And then critical jobs arrive
        await app.enqueue_many([("critical_job", {"i": i}) for i in range(5)])
        # Then two start promptly while low stays saturated at one
        await eventually(lambda: gauge.running["critical"] == 2, timeout=3.0,
                         what="2 critical jobs running")  # fmt: skip
        assert gauge.running["low"] == 1
        # When the critical jobs may finish, all five run, two at a time
        gates["critical"].set()
        await eventually(lambda: gauge.done["critical"] == 5, what="5 critical jobs done")
        # And when the low ones may finish, all fifty run, one at a time
        gates["low"].set()
        await eventually(lambda: gauge.done["low"] == 50, timeout=20.0, what="50 low jobs done")
    assert gauge.peak == {"low": 1, "critical": 2}
    st = await app.stats(["low", "critical"])
    assert st["low"].counts["completed"] == 50 and st["critical"].counts["completed"] == 5


async def test_the_backend_hands_out_no_more_jobs_of_a_queue_than_its_free_slots(
    app: Conveyor,
) -> None:
    # Given plenty of held low and critical jobs
    gauge = Gauge()
    gates = {"low": asyncio.Event(), "critical": asyncio.Event()}
    held_tasks(app, gauge, gates)
    await app.enqueue_many([("low_job", {"i": i}) for i in range(20)])
    await app.enqueue_many([("critical_job", {"i": i}) for i in range(20)])
    # When a worker with 1 low and 2 critical slots fills them
    async with app.worker(queues={"low": 1, "critical": 2}) as w:
        await eventually(lambda: gauge.running == {"low": 1, "critical": 2}, what="slots full")
        # Then it holds exactly those jobs: the claims honoured queue_limits (nothing was
        # claimed and buffered beyond the slots), and the store agrees
        assert len(w.running) == 3
        st = await app.stats(["low", "critical"])
        assert st["low"].counts["active"] == 1 and st["critical"].counts["active"] == 2
        for gate in gates.values():
            gate.set()
        await eventually(lambda: sum(gauge.done.values()) == 40, what="40 jobs done")
    assert gauge.peak == {"low": 1, "critical": 2}


async def test_dedicated_queues_beside_a_shared_pool(app: Conveyor) -> None:
    # Given held jobs on a dedicated queue and on two queues sharing a pool of 2 (prefetch 1,
    # unused while the jobs run long)
    gauge = Gauge()
    gates = {q: asyncio.Event() for q in ("critical", "a", "b")}
    held_tasks(app, gauge, gates)
    await app.enqueue_many([(f"{q}_job", {"i": i}) for i in range(10) for q in ("a", "b")])
    queues: dict[str, int | None] = {"critical": 1, "a": None, "b": None}
    async with app.worker(queues=queues, concurrency=2, prefetch=1, poll_interval=30) as w:
        # When the shared queues fill their pool
        await eventually(lambda: gauge.running["a"] + gauge.running["b"] == 2, what="pool full")
        # And a critical job arrives, it starts at once on its own slot
        await app.enqueue("critical_job", {"i": 0})
        await eventually(lambda: gauge.running["critical"] == 1, timeout=3.0,
                         what="the critical job running")  # fmt: skip
        # Then the worker holds its 3 slots' jobs and nothing ahead of them: none of its jobs
        # has finished yet, so nothing says another would start soon
        assert len(w.running) == 3
        assert gauge.running["a"] + gauge.running["b"] == 2
        st = await app.stats(["critical", "a", "b"])
        assert sum(q.counts.get("active", 0) for q in st.values()) == 3
        assert w.capacity == 3 and w.info().concurrency == 3
        for gate in gates.values():
            gate.set()
        await eventually(lambda: sum(gauge.done.values()) == 21, what="21 jobs done")
    assert gauge.peak["critical"] == 1 and gauge.peak["a"] + gauge.peak["b"] <= 3


async def test_slots_hold_even_if_the_backend_ignores_queue_limits(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a backend that claims as if queue_limits were not there (only `limit` binds): the
    # real store, with the per-queue caps dropped from every claim
    backend = app.backend
    claim_jobs, finish_and_claim = backend.claim_jobs, backend.finish_and_claim

    async def claim_ignoring_caps(params: ClaimParams) -> Any:
        return await claim_jobs(replace(params, queue_limits=None))

    async def finish_and_claim_ignoring_caps(
        worker: str, outcomes: Any, params: ClaimParams
    ) -> Any:
        return await finish_and_claim(worker, outcomes, replace(params, queue_limits=None))

    backend.claim_jobs = claim_ignoring_caps  # type: ignore[method-assign]
    backend.finish_and_claim = finish_and_claim_ignoring_caps  # type: ignore[method-assign]
    gauge = Gauge()
    gates = {"low": asyncio.Event(), "critical": asyncio.Event()}
    held_tasks(app, gauge, gates)
    await app.enqueue_many([("low_job", {"i": i}) for i in range(50)])
    async with app.worker(queues={"low": 1, "critical": 2}, poll_interval=30):
        # When the flood fills the low slot (the backend hands out more low jobs than asked)
        await eventually(lambda: gauge.running["low"] == 1, what="the low slot busy")
        await eventually(lambda: "queue_limits not honoured" in caplog.text,
                         what="extra low jobs handed out")  # fmt: skip
        # And critical jobs arrive
        await app.enqueue_many([("critical_job", {"i": i}) for i in range(3)])
        await eventually(lambda: gauge.running["critical"] == 2, timeout=3.0,
                         what="2 critical jobs running")  # fmt: skip
        # Then still only one low job runs: the extra ones wait for the low slot
        assert gauge.running["low"] == 1
        for gate in gates.values():
            gate.set()
        await eventually(lambda: sum(gauge.done.values()) == 53, timeout=20.0, what="53 done")
    assert gauge.peak == {"low": 1, "critical": 2}
    assert "queue_limits not honoured" in caplog.text
