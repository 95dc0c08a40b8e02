"""Flow control (rate limits, concurrency caps, circuit breakers) through the Backend protocol
and embedded workers. The multi-process checks live in tests/processes/test_flow_processes.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest

from conveyor import (
    CircuitBreaker,
    Concurrency,
    ConfigurationError,
    Conveyor,
    JobState,
    RateLimit,
    ValidationError,
)
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind
from conveyor.job import Job
from tests.conftest import eventually


async def _claim(
    app: Conveyor, n: int = 50, worker: str = "w1", queue: str = "default"
) -> list[Job]:
    await app.open()
    res = await app.backend.claim_jobs(ClaimParams([queue], n, worker))
    return res.jobs


async def _complete(app: Conveyor, jobs: list[Job], worker: str = "w1", ok: bool = True) -> None:
    kind = OutcomeKind.COMPLETED if ok else OutcomeKind.FAILED
    err = None if ok else {"type": "Boom", "message": "boom"}
    lost = await app.backend.finish_jobs(
        worker, [Outcome(j.id, j.token, kind, error=err) for j in jobs]
    )
    assert lost == []


async def _event_types(app: Conveyor) -> list[str]:
    return [e.type.value async for e in app.events(since="0", follow=False)]


# -- rate limits -------------------------------------------------------------------------------


async def test_rate_limited_jobs_are_not_claimed_and_keep_their_attempts(app: Conveyor) -> None:
    # Given 5 jobs of a task limited to 2 starts per second (no burst)
    @app.task(rate_limit="2/s")
    async def call_api(i: int) -> None: ...

    await app.enqueue_many([("call_api", {"i": i}) for i in range(5)])
    # When a worker asks for 10 jobs
    await app.open()
    before = app.backend.now()
    res = await app.backend.claim_jobs(ClaimParams(["default"], 10, "w1"))
    after = app.backend.now()
    # Then it gets exactly one, the oldest, and learns when the next start is permitted: half a
    # second after the claim (bounded by the clock read before and after it)
    assert len(res.jobs) == 1
    assert res.jobs[0].payload == {"i": 0}
    assert res.next_due is not None
    assert before + 0.5 - 0.01 <= res.next_due <= after + 0.5 + 0.01
    # And the limited jobs stay queued with no attempt used
    counts = (await app.stats())["default"].counts
    assert counts["queued"] == 4 and counts["active"] == 1
    page = await app.list(status=JobState.QUEUED)
    assert all(j.attempt == 0 for j in page.jobs)
    # And a rate_limited event says which gate held them back
    events = [e async for e in app.events(since="0", follow=False)]
    limited = [e for e in events if e.type.value == "rate_limited"]
    assert limited and limited[0].data["gate"] == "rate:task:call_api"


async def test_rate_limit_spaces_starts_exactly(app: Conveyor) -> None:
    # Given a task limited to 20/s
    @app.task(rate_limit="20/s")
    async def t(i: int) -> None: ...

    await app.enqueue_many([("t", {"i": i}) for i in range(12)])
    # When a claimer takes whatever is permitted, as fast as it can, until 6 jobs started
    starts: list[float] = []
    slowest = 0.0  # the longest round of the claimer: how late it can see a permitted start
    deadline = time.monotonic() + 10
    while len(starts) < 6 and time.monotonic() < deadline:
        t0 = time.monotonic()
        for j in await _claim(app):
            assert j.started_at is not None
            starts.append(j.started_at)
        await asyncio.sleep(0.002)
        slowest = max(slowest, time.monotonic() - t0)
    # Then starts are at least 50 ms apart on the backend clock (never early), and the budget
    # was used: each one came at most two rounds of the claimer after it was permitted
    assert len(starts) == 6
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 0.05 - 1e-6 for g in gaps), gaps
    assert all(g <= 0.05 + 2 * slowest + 0.01 for g in gaps), (gaps, slowest)


async def test_burst_lets_that_many_start_at_once(app: Conveyor) -> None:
    # Given a task allowing 10/s with a burst of 3
    @app.task(rate_limit=RateLimit("10/s", burst=3))
    async def t(i: int) -> None: ...

    await app.enqueue_many([("t", {"i": i}) for i in range(10)])
    # When a worker claims on an idle limiter: then 3 start at once, then none until the budget refills
    assert len(await _claim(app)) == 3
    assert await _claim(app) == []


async def test_keys_are_limited_independently(app: Conveyor) -> None:
    # Given a per-provider limit of 1 start per minute
    @app.task(rate_limit=RateLimit("1/m", key="provider"))
    async def enrich(provider: str, i: int) -> None: ...

    await app.enqueue_many(
        [("enrich", {"provider": p, "i": i}) for i in range(3) for p in ("openai", "anthropic")]
    )
    # When a worker claims: then each provider gets its own single start
    got = await _claim(app)
    assert sorted(j.payload["provider"] for j in got) == ["anthropic", "openai"]
    assert await _claim(app) == []


async def test_a_limited_task_does_not_hold_up_others_on_the_same_queue(app: Conveyor) -> None:
    # Given limited jobs enqueued first, at the same priority, then unlimited ones
    @app.task(rate_limit="1/m")
    async def slow(i: int) -> None: ...

    @app.task
    async def fast(i: int) -> None: ...

    await app.enqueue_many([("slow", {"i": i}) for i in range(100)])
    await app.enqueue_many([("fast", {"i": i}) for i in range(20)])
    # When a worker claims 50: then it gets one limited job and every unlimited one
    got = await _claim(app)
    assert sorted(j.task for j in got) == ["fast"] * 20 + ["slow"]


async def test_priority_order_holds_across_flows_and_unlimited_jobs(app: Conveyor) -> None:
    # Given a limited task with a critical job and unlimited jobs at normal priority
    @app.task(rate_limit=RateLimit("100/s", burst=10))
    async def limited(i: int) -> None: ...

    @app.task
    async def plain(i: int) -> None: ...

    await app.enqueue("plain", {"i": 0})
    await app.enqueue("limited", {"i": 1}, priority="critical")
    await app.enqueue("plain", {"i": 2}, priority="low")
    await app.enqueue("limited", {"i": 3})
    # When one worker claims them all: then they come in priority, then FIFO, order
    got = await _claim(app)
    assert [j.payload["i"] for j in got] == [1, 0, 3, 2]


async def test_queue_rate_limit_covers_every_task_of_the_queue(app: Conveyor) -> None:
    # Given a queue limited to 1 start per minute and two tasks on it
    app.queue("ingest", rate_limit="1/m")

    @app.task(queue="ingest")
    async def a() -> None: ...

    @app.task(queue="ingest")
    async def b() -> None: ...

    await app.enqueue("a")
    await app.enqueue("b")
    # When a worker claims: then only one job of the queue starts
    assert len(await _claim(app, queue="ingest")) == 1
    assert await _claim(app, queue="ingest") == []


async def test_delayed_and_retried_limited_jobs_still_pass_the_gate(app: Conveyor) -> None:
    # Given a concurrency cap of 1 and a delayed job behind it
    @app.task(concurrency=1, retries=2)
    async def t(i: int) -> None: ...

    first = await app.enqueue("t", {"i": 0})
    await t.enqueue_with({"i": 1}, delay=0.05)
    [j0] = await _claim(app)
    assert j0.id == first.id
    # When the delayed job becomes due while the slot is taken: then it is not claimed
    await asyncio.sleep(0.08)
    assert await _claim(app) == []
    # When the first attempt fails and is retried (queued again at once)
    await app.backend.finish_jobs(
        "w1", [Outcome(j0.id, j0.token, OutcomeKind.RETRY, error={"type": "X", "message": "x"})]
    )
    # Then exactly one of the two starts next, never both
    assert len(await _claim(app)) == 1
    assert await _claim(app) == []


# -- concurrency caps --------------------------------------------------------------------------


async def test_concurrency_cap_holds_across_workers_and_frees_on_finish(app: Conveyor) -> None:
    # Given a task capped at 2 active jobs across all workers
    @app.task(concurrency=2)
    async def enrich(i: int) -> None: ...

    await app.enqueue_many([("enrich", {"i": i}) for i in range(6)])
    # When two workers claim: then only 2 jobs become active in all
    a = await _claim(app, worker="w1")
    b = await _claim(app, worker="w2")
    assert len(a) + len(b) == 2
    held = a or b
    owner = "w1" if a else "w2"
    # When one finishes: then exactly one more may start
    await _complete(app, held[:1], worker=owner)
    more = await _claim(app, worker="w2")
    assert len(more) == 1
    assert await _claim(app, worker="w3") == []
    st = (await app.stats())["default"]
    [gate] = [g for g in st.limits if g["kind"] == "conc"]
    assert gate == {"name": "conc:task:enrich", "kind": "conc", "limit": 2, "active": 2}


async def test_concurrency_slot_frees_on_cancel_release_and_lease_expiry(app: Conveyor) -> None:
    # Given a cap of 1 with a short lease
    @app.task(concurrency=1, lease=0.5)
    async def t(i: int) -> None: ...

    await app.enqueue_many([("t", {"i": i}) for i in range(4)])
    [j] = await _claim(app)
    # When the active job is cancelled: then its slot is held until its worker reports that
    # the attempt ended (the handler may still run), and then it is free
    await app.cancel(j.id)
    assert await _claim(app) == []
    ended = Outcome(j.id, j.token, OutcomeKind.FAILED, error={"type": "Cancelled"})
    assert await app.backend.finish_jobs("w1", [ended]) == [j.id]
    [j] = await _claim(app)
    # When a worker releases its job at shutdown: then the slot is free again
    assert await app.backend.release_jobs("w1", [(j.id, j.token)]) == 1
    [j] = await _claim(app, worker="dead")
    # When that worker dies (its lease runs out) and recovery runs
    assert await _claim(app) == []
    await eventually(
        lambda: app.backend.recover_expired(), timeout=3, what="the dead worker's lease to expire"
    )
    # Then the slot is free for another worker
    assert len(await _claim(app, worker="w2")) == 1


async def test_per_key_cap_with_tenant(app: Conveyor) -> None:
    # Given at most 1 active job per tenant (the job's tenant), at most 3 in all
    @app.task(concurrency=[Concurrency(1, key="tenant"), Concurrency(3)])
    async def t(i: int) -> None: ...

    for tenant in ("acme", "acme", "globex", "globex", "initech", "umbrella"):
        await t.enqueue_with({"i": 0}, tenant=tenant)
    # When a worker claims: then one job per tenant, and three in all
    got = await _claim(app)
    assert len(got) == 3
    assert len({j.tenant for j in got}) == 3


async def test_global_cap_with_three_embedded_workers(make_app: Callable[..., Conveyor]) -> None:
    # Given three app instances (as three processes would be) sharing one store, cap 2
    apps = [make_app() for _ in range(3)]
    state = {"running": 0, "peak": 0, "done": 0}
    for a in apps:

        @a.task(concurrency=2)
        async def capped(i: int) -> None:
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
            await asyncio.sleep(0.01)
            state["running"] -= 1
            state["done"] += 1

    await apps[0].enqueue_many([("capped", {"i": i}) for i in range(30)])
    # When each runs a worker with 5 slots
    w0, w1, w2 = (a.worker(concurrency=5) for a in apps)
    async with w0, w1, w2:
        await eventually(lambda: state["done"] == 30, timeout=10, what="30 jobs done")
    # Then the cap was reached and never exceeded
    assert state["peak"] == 2


async def test_a_shared_gate_goes_to_the_highest_priority_jobs_first(app: Conveyor) -> None:
    # Given a queue capped at 2 active, two urgent jobs in one flow, and nine bulk jobs in nine
    # flows of their own (more flows than a claim lists at once)
    app.queue("default", concurrency=2)

    @app.task(priority=9)
    async def urgent(i: int) -> None: ...

    @app.task(priority=1, concurrency=Concurrency(5, key="i"))
    async def bulk(i: int) -> None: ...

    await app.enqueue_many(
        [("urgent", {"i": 0}), ("urgent", {"i": 1})] + [("bulk", {"i": i}) for i in range(2, 11)]
    )
    # When a worker asks for 10: then the queue's two slots go to the urgent jobs
    got = await _claim(app, 10)
    assert [(j.task, j.payload["i"]) for j in got] == [("urgent", 0), ("urgent", 1)]


async def test_a_raised_cap_admits_flows_waiting_on_the_old_one(
    make_app: Callable[..., Conveyor],
) -> None:
    # Given a cap of 1 with one job active and one waiting for the slot
    old = make_app()

    @old.task(concurrency=1)
    async def t(i: int) -> None: ...

    await old.enqueue_many([("t", {"i": 0}), ("t", {"i": 1})])
    assert len(await _claim(old)) == 1
    assert await _claim(old) == []
    # When a new deploy raises the cap to 3 (its producer enqueues with the new rule)
    new = make_app()

    @new.task(name="t", concurrency=3)
    async def t_raised(i: int) -> None: ...

    await new.enqueue("t", {"i": 2})
    # Then the waiting jobs start without waiting for the active one to finish
    assert len(await _claim(new)) == 2


async def test_claims_honour_per_queue_caps(app: Conveyor) -> None:
    # Given unlimited jobs in two queues
    @app.task(queue="a")
    async def ta(i: int) -> None: ...

    @app.task(queue="b")
    async def tb(i: int) -> None: ...

    await app.enqueue_many(
        [("ta", {"i": i}) for i in range(5)] + [("tb", {"i": i}) for i in range(5)]
    )
    await app.open()
    # When a worker with one dedicated slot for queue a claims 4 from both
    res = await app.backend.claim_jobs(ClaimParams(["a", "b"], 4, "w1", {"a": 1}))
    # Then it takes one from a and the rest from b
    assert sorted(j.queue for j in res.jobs) == ["a", "b", "b", "b"]
    # And finish_and_claim caps the same way, a queue capped at 0 included
    lost, res2 = await app.backend.finish_and_claim(
        "w1",
        [Outcome(j.id, j.token, OutcomeKind.COMPLETED) for j in res.jobs],
        ClaimParams(["a", "b"], 5, "w1", {"a": 0, "b": 1}),
    )
    assert lost == [] and [j.queue for j in res2.jobs] == ["b"]


# -- circuit breaker ---------------------------------------------------------------------------


async def test_breaker_opens_then_probes_then_closes(app: Conveyor) -> None:
    # Given a task whose breaker opens after 2 consecutive failures, cooling down 1 s (what is
    # checked while it is open must run within the cool-down, even on a loaded machine)
    @app.task(breaker=CircuitBreaker(failures=2, cooldown=1.0))
    async def flaky(i: int) -> None: ...

    await app.enqueue_many([("flaky", {"i": i}) for i in range(10)])
    first = await _claim(app, n=2)
    # When two attempts fail in a row
    await _complete(app, first, ok=False)
    # Then the breaker is open: nothing is claimed, and it is visible in events and stats
    assert await _claim(app) == []
    assert "breaker_opened" in await _event_types(app)
    [gate] = (await app.stats())["default"].limits
    assert gate["kind"] == "breaker" and gate["state"] == "open"
    # When the cool-down passes: then exactly one probe is let through (half-open)
    probe = await eventually(lambda: _claim(app), what="the probe claim")
    assert len(probe) == 1
    assert await _claim(app) == []
    # When the probe succeeds: then the breaker closes and the rest flows
    await _complete(app, probe)
    assert "breaker_closed" in await _event_types(app)
    assert len(await _claim(app)) == 7


async def test_breaker_reopens_when_the_probe_fails(app: Conveyor) -> None:
    # (a 1 s cool-down: the check that it reopened must run within it, even on a loaded machine)
    @app.task(breaker=CircuitBreaker(failures=1, cooldown=1.0))
    async def flaky(i: int) -> None: ...

    await app.enqueue_many([("flaky", {"i": i}) for i in range(5)])
    await _complete(app, await _claim(app, n=1), ok=False)
    probe = await eventually(lambda: _claim(app), what="the probe claim")
    # When the probe fails: then it is open again (a second breaker_opened)
    await _complete(app, probe, ok=False)
    assert await _claim(app) == []
    assert (await _event_types(app)).count("breaker_opened") == 2


async def test_half_open_lets_only_the_probe_decide(app: Conveyor) -> None:
    # Given two jobs claimed while the breaker is closed; one fails and opens it (0.2 s)
    @app.task(breaker=CircuitBreaker(failures=1, cooldown=0.2))
    async def call(i: int) -> None: ...

    await app.enqueue_many([("call", {"i": i}) for i in range(6)])
    old_a, old_b, old_c = await _claim(app, n=3)
    await _complete(app, [old_a], ok=False)
    # When the cool-down passes and one probe runs
    probe = await eventually(lambda: _claim(app, worker="w2"), what="the probe")
    assert len(probe) == 1
    # Then jobs claimed before the breaker opened neither free a second probe (released)...
    assert await app.backend.release_jobs("w1", [(old_b.id, old_b.token)]) == 1
    assert await _claim(app, worker="w3") == []
    # ...nor close the breaker (completed): only the probe's verdict does
    await _complete(app, [old_c])
    assert await _claim(app, worker="w3") == []
    assert "breaker_closed" not in await _event_types(app)
    await _complete(app, probe, worker="w2")
    assert "breaker_closed" in await _event_types(app)
    assert len(await _claim(app, worker="w3")) == 3  # the released one and the last two


async def test_breaker_by_failure_ratio(app: Conveyor) -> None:
    # Given a breaker that opens when half of at least 4 attempts in a window failed
    @app.task(breaker=CircuitBreaker(failures=None, ratio=0.5, min_calls=4, cooldown=60))
    async def t(i: int) -> None: ...

    await app.enqueue_many([("t", {"i": i}) for i in range(10)])
    jobs = await _claim(app, n=4)
    # When successes and failures alternate: then it opens at the 4th attempt
    for k, j in enumerate(jobs):
        await _complete(app, [j], ok=k % 2 == 0)
    assert await _claim(app) == []
    assert "breaker_opened" in await _event_types(app)


# -- ctx.limit and validation ------------------------------------------------------------------


async def test_reserve_rate_spaces_callers_in_turn(app: Conveyor) -> None:
    # Given three callers reserving a 10/s rate one after the other
    await app.open()
    t0 = app.backend.now()
    waits, elapsed = [], []
    for _ in range(3):
        waits.append(await app.backend.reserve_rate("rate:ctx:openai", 0.1, 1))
        elapsed.append(app.backend.now() - t0)
    # Then the first goes at once and each next one waits its turn, 0.1 s after the previous
    # one's: less whatever time already passed since the first call (measured), never more
    assert waits[0] == 0
    for k in (1, 2):
        assert max(0.0, 0.1 * k - elapsed[k]) - 0.01 <= waits[k] <= 0.1 * k + 0.01, (waits, elapsed)


async def test_ctx_limit_inside_handlers(app: Conveyor) -> None:
    # Given handlers that call a shared API through ctx.limit at 10/s
    calls: list[float] = []

    @app.task
    async def t(ctx, i: int) -> None:  # type: ignore[no-untyped-def]
        async with ctx.limit("api", "10/s"):
            calls.append(time.monotonic())

    await app.enqueue_many([("t", {"i": i}) for i in range(6)])
    async with app.worker(concurrency=6):
        await eventually(lambda: len(calls) == 6, timeout=5, what="6 calls")
    # Then the six calls span five intervals, less half of one: the gate spaces the starts it
    # grants on the store's clock, and the first handler may resume later than the last after
    # its grant (a busy loop, a slow reply); a gate that let two through at once fails this
    calls.sort()
    assert calls[-1] - calls[0] >= 5 * 0.1 - 0.05, calls


async def test_bad_limits_are_named(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="rate '30 per minute' is invalid"):
        app.task(rate_limit="30 per minute")(lambda: None)
    with pytest.raises(ConfigurationError, match="concurrency limit must be"):
        app.task(concurrency=0)(lambda: None)

    @app.task(rate_limit=RateLimit("5/s", key="provider"))
    async def keyed(provider: str = "") -> None: ...

    with pytest.raises(ValidationError, match=r"payload\.provider"):
        await app.enqueue("keyed", {})
    with pytest.raises(ValidationError, match="limit key"):
        await app.enqueue("keyed", {"provider": ""})
    stats = await app.stats()
    assert "default" not in stats or stats["default"].counts["queued"] == 0


async def test_stats_show_rate_limits(app: Conveyor) -> None:
    @app.task(rate_limit="30/m")
    async def t() -> None: ...

    await app.enqueue("t")
    [gate] = (await app.stats())["default"].limits
    assert gate["name"] == "rate:task:t"
    assert gate["kind"] == "rate" and gate["per_second"] == pytest.approx(0.5)
