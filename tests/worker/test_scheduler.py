"""The scheduler service (`conveyor.worker.scheduler`) on a real SQLite file with an injected
clock: a new schedule starts at its next tick, each policy's catch-up after a scheduler was down
for several ticks, overlap "skip", ``app.schedules()``; and an embedded worker firing and running
a periodic job on the real clock."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from conveyor.clock import FakeClock
from conveyor.worker.scheduler import Scheduler
from tests.conftest import eventually

START = 1_700_000_040.0  # a multiple of every period below (1 s, 60 s): a tick


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START + 0.05)


@pytest.fixture
async def app(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Conveyor]:
    a = Conveyor(f"sqlite:///{tmp_path}/cron.db", clock=clock)
    yield a
    await a.close()


async def _keys(app: Conveyor) -> list[str]:
    page = await app.list(task="tick", limit=500)
    return sorted((j.idempotency_key or "" for j in page.jobs), key=lambda k: float(k[10:]))


def _key(offset: float) -> str:
    return f"cron:tick:{START + offset:.0f}"


@pytest.mark.parametrize(
    ("catch_up", "fired_after_gap"),
    [
        ("skip", []),  # ticks 2..5 missed (tick 5 is 650 ms late, over half a period)
        ("latest", [5]),  # one job for the gap: the latest due tick
        ("all", [2, 3, 4, 5]),  # every missed tick, oldest first
    ],
)
async def test_a_scheduler_down_for_several_ticks_catches_up_per_its_policy(
    app: Conveyor, clock: FakeClock, catch_up: str, fired_after_gap: list[int]
) -> None:
    # Given a schedule every second and a scheduler that has fired tick 1
    @app.periodic(1.0, catch_up=catch_up)
    async def tick() -> None: ...

    scheduler = Scheduler(app.backend, app.catalog)
    await app.open()
    await scheduler.run_once()  # a new schedule: nothing before its next tick fires
    assert await _keys(app) == []
    clock.advance(1.0)
    assert await scheduler.run_once() == pytest.approx(0.95 + 0.002)  # sleeps until tick 2
    assert await _keys(app) == [_key(1)]
    # When no scheduler runs for ticks 2, 3, 4 and 5, and one looks at 5.65 s
    clock.advance(4.6)
    await scheduler.run_once()
    # Then the missed ticks fire per the policy, each once
    assert await _keys(app) == [_key(1), *(_key(t) for t in fired_after_gap)]
    # And the next tick fires on time whatever the policy, and a pass again fires nothing more
    clock.advance(0.4)
    await scheduler.run_once()
    await scheduler.run_once()
    assert await _keys(app) == [_key(1), *(_key(t) for t in fired_after_gap), _key(6)]


async def test_a_tick_that_falls_due_during_a_pass_fires_on_time(
    app: Conveyor, clock: FakeClock
) -> None:
    # Given a schedule every second that fires only on-time ticks, and a pass that decides at
    # 1.05 s to fire tick 1 but is done storing its job only at 2.05 s (tick 2 is due by then)
    @app.periodic(1.0, catch_up="skip")
    async def tick() -> None: ...

    scheduler = Scheduler(app.backend, app.catalog, on_fired=lambda: clock.advance(1.0))
    await app.open()
    await scheduler.run_once()
    clock.advance(1.0)
    # When the pass ends, it sleeps only until tick 2, which is due already
    delay = await scheduler.run_once()
    assert delay <= 0.002, delay
    assert await _keys(app) == [_key(1)]
    # Then the pass after that sleep fires tick 2 on time (a sleep until 3.002 s would have
    # skipped it as missed)
    clock.advance(delay)
    await scheduler.run_once()
    assert await _keys(app) == [_key(1), _key(2)]


async def test_overlap_skip_fires_no_tick_while_the_previous_job_is_not_final(
    app: Conveyor, clock: FakeClock
) -> None:
    # Given a schedule every second with overlap "skip", its tick 1 fired (the job still queued)
    @app.periodic(1.0, overlap="skip", payload={"n": 7})
    async def tick(n: int) -> int:
        return n

    scheduler = Scheduler(app.backend, app.catalog)
    await app.open()
    await scheduler.run_once()
    clock.advance(1.0)
    await scheduler.run_once()
    # When tick 2 comes while that job is still queued
    clock.advance(1.0)
    await scheduler.run_once()
    # Then tick 2 fires no job
    assert await _keys(app) == [_key(1)]
    infos = await app.schedules()
    assert (infos[0].last_fire, infos[0].last_status) == (START + 1, JobState.QUEUED)
    # When that job is final (cancelled), tick 3 fires with the schedule's payload
    await app.cancel(infos[0].last_job or "")
    clock.advance(1.0)
    await scheduler.run_once()
    assert await _keys(app) == [_key(1), _key(3)]
    job = (await app.list(task="tick", status="queued")).jobs[0]
    assert job.payload == {"n": 7}


async def test_app_schedules_lists_next_and_last_fire_and_the_last_jobs_status(
    app: Conveyor, clock: FakeClock
) -> None:
    # Given a cron schedule (Paris) and a periodic one on another queue, one of them fired
    @app.cron("0 3 * * *", tz="Europe/Paris", catch_up="skip")
    @app.task(queue="nightly")
    async def cleanup() -> None: ...

    @app.periodic(60, queue="often", priority="high")
    async def tick() -> None: ...

    # When nothing ran yet, each shows its next tick and no last fire
    infos = await app.schedules()
    assert [(i.name, i.schedule, i.tz, i.queue, i.last_fire) for i in infos] == [
        ("cleanup", "0 3 * * *", "Europe/Paris", "nightly", None),
        ("tick", "every 60s", "UTC", "often", None),
    ]
    assert infos[1].next_fire == START + 60
    # When a scheduler runs across the next minute
    scheduler = Scheduler(app.backend, app.catalog)
    await scheduler.run_once()
    clock.advance(60)
    await scheduler.run_once()
    # Then the periodic one shows its last fire, its job and status, and the next tick
    tick_info = (await app.schedules())[1]
    assert (tick_info.last_fire, tick_info.next_fire) == (START + 60, START + 120)
    job = await app.get(tick_info.last_job or "")
    assert (job.queue, job.priority, tick_info.last_status) == ("often", 10, JobState.QUEUED)
    assert tick_info.to_dict()["last_status"] == "queued"


async def test_an_embedded_worker_fires_and_runs_a_periodic_job(tmp_path: Path) -> None:
    # Given an app (real clock) with a job every 0.2 s, and a worker in this process
    app = Conveyor(f"sqlite:///{tmp_path}/live.db")
    ran: list[str] = []

    @app.periodic(0.2)
    async def beat(ctx) -> None:  # type: ignore[no-untyped-def]
        ran.append(ctx.job.idempotency_key)

    try:
        async with app.worker(concurrency=2):
            # Then jobs of successive ticks run, each once
            await eventually(lambda: len(ran) >= 3, what="three ticks run")
        assert len(set(ran)) == len(ran)
        ticks = sorted(float(k[10:]) for k in ran)
        assert all(round(b - a, 3) == 0.2 for a, b in itertools.pairwise(ticks))
    finally:
        await app.close()
