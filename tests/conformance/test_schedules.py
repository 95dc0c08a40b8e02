"""The atomic tick claim of cron and periodic schedules (`Backend.claim_tick`,
`backends/schedules.py`): a tick is claimed once, with its job, however many claim it at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conveyor import Conveyor, JobState
from conveyor.backends.base import TickClaim, TickResult
from conveyor.schedule import Schedule, idempotency_key
from conveyor.worker.scheduler import Scheduler

T0 = 1_700_000_000_000  # a tick, epoch ms


def _task(app: Conveyor) -> None:
    @app.task(queue="nightly")
    async def clean(n: int = 0) -> int:
        return n


def _claim(app: Conveyor, tick: int, *, job: bool = True, skip_overlap: bool = False) -> TickClaim:
    # The job a scheduler builds for the tick (payload, options, idempotency key)
    every_second = Schedule.periodic("clean", "clean", 1.0)
    nj = Scheduler(app.backend, app.catalog)._job(every_second, "nightly", tick) if job else None
    return TickClaim("clean", "nightly", tick, nj, skip_overlap)


async def test_a_tick_claimed_by_many_at_once_fires_one_job(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given three apps ("processes") on one store, each with the task
    apps = [app, make_app(), make_app()]
    for a in apps:
        _task(a)
        await a.open()
    # When each claims the same tick four times at once
    claims = [a.backend.claim_tick(_claim(a, T0)) for a in apps for _ in range(4)]
    outs = await asyncio.gather(*claims)
    # Then exactly one claim fired, the others were told the tick was taken
    fired = [o for o in outs if o.result is TickResult.FIRED]
    assert len(fired) == 1
    assert all(o.result is TickResult.TAKEN and o.last == T0 for o in outs if o not in fired)
    # And the store holds exactly one job, keyed by the tick
    page = await app.list(queue="nightly")
    assert [j.id for j in page.jobs] == [fired[0].job_id]
    assert page.jobs[0].idempotency_key == idempotency_key("clean", T0) == "cron:clean:1700000000"
    state = (await app.backend.schedule_states([("clean", "nightly")]))["clean"]
    assert (state.last_tick, state.last_fire, state.last_job) == (T0, T0, fired[0].job_id)


async def test_an_older_tick_is_never_claimed_after_a_newer_one(app: Conveyor) -> None:
    # Given a schedule whose tick T0+2s was claimed without a job (a catch-up skip)
    _task(app)
    await app.open()
    out = await app.backend.claim_tick(_claim(app, T0 + 2000, job=False))
    assert out.result is TickResult.CLAIMED
    # When a late scheduler claims the older ticks T0 and T0+2s
    older = await app.backend.claim_tick(_claim(app, T0))
    same = await app.backend.claim_tick(_claim(app, T0 + 2000))
    # Then both are taken, and no job was stored
    assert (older.result, older.last) == (TickResult.TAKEN, T0 + 2000)
    assert same.result is TickResult.TAKEN
    assert (await app.list(queue="nightly")).jobs == []
    # And the next tick fires
    assert (await app.backend.claim_tick(_claim(app, T0 + 3000))).result is TickResult.FIRED


async def test_init_keeps_the_state_of_a_schedule_seen_before(app: Conveyor) -> None:
    # Given a schedule never seen: init sets its last tick
    _task(app)
    await app.open()
    assert await app.backend.schedule_states([("clean", "nightly")]) == {}
    assert await app.backend.init_schedule("clean", "nightly", T0) == T0
    # When another process inits it later with a later tick
    # Then the first init stands (a tick between the two is not lost)
    assert await app.backend.init_schedule("clean", "nightly", T0 + 5000) == T0
    state = (await app.backend.schedule_states([("clean", "nightly")]))["clean"]
    assert (state.last_tick, state.last_fire, state.last_job) == (T0, None, None)


async def test_overlap_skip_claims_the_tick_without_a_job_while_the_previous_runs(
    app: Conveyor,
) -> None:
    # Given a tick fired whose job is not final yet
    _task(app)
    await app.open()
    first = await app.backend.claim_tick(_claim(app, T0, skip_overlap=True))
    assert first.result is TickResult.FIRED
    # When the next tick comes with overlap "skip"
    busy = await app.backend.claim_tick(_claim(app, T0 + 1000, skip_overlap=True))
    # Then it is claimed but stores no job, naming the job still pending
    assert (busy.result, busy.job_id) == (TickResult.BUSY, first.job_id)
    assert len((await app.list(queue="nightly")).jobs) == 1
    assert (await app.backend.claim_tick(_claim(app, T0 + 1000))).result is TickResult.TAKEN
    # When the previous job ends (cancelled: final), the next tick fires
    await app.cancel(first.job_id or "")
    nxt = await app.backend.claim_tick(_claim(app, T0 + 2000, skip_overlap=True))
    assert nxt.result is TickResult.FIRED
    # And with overlap "allow" a tick fires while the previous job is still queued
    allowed = await app.backend.claim_tick(_claim(app, T0 + 3000))
    assert allowed.result is TickResult.FIRED
    job = await app.get(allowed.job_id or "")
    assert job.status is JobState.QUEUED and job.task == "clean"
