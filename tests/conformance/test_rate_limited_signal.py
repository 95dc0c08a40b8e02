"""A claim tells the worker how many flows a rate gate held back (``ClaimResult.rate_limited``),
once per refusal, as many as the ``rate_limited`` events it wrote: the worker's metrics count
it (``conveyor_rate_limited_total``)."""

from __future__ import annotations

from conveyor import Conveyor
from conveyor.backends.base import ClaimParams


async def test_a_claim_reports_the_flows_a_rate_gate_held_back(app: Conveyor) -> None:
    # Given 3 jobs of a task limited to 1 start a minute, and an unlimited one
    @app.task(rate_limit="1/m")
    async def call_api(i: int) -> None: ...

    @app.task
    async def free() -> None: ...

    await app.enqueue_many([("call_api", {"i": i}) for i in range(3)])
    await app.enqueue("free", {})
    await app.open()
    # When a worker claims, then claims again
    first = await app.backend.claim_jobs(ClaimParams(["default"], 10, "w1"))
    second = await app.backend.claim_jobs(ClaimParams(["default"], 10, "w1"))
    # Then the first claim took one limited job and the free one, and reported the flow held
    # back once; the second (the flow still set aside) took nothing and reported nothing
    assert sorted(j.task for j in first.jobs) == ["call_api", "free"]
    assert first.rate_limited == {"default": 1}
    assert second.jobs == [] and second.rate_limited == {}
    events = [e.type.value async for e in app.events(since="0", follow=False)]
    assert events.count("rate_limited") == 1


async def test_an_embedded_worker_counts_rate_limited_claims(app: Conveyor) -> None:
    # Given a worker and two jobs of a task limited to 1 start a minute
    from tests.conftest import eventually

    ran: list[int] = []

    @app.task(rate_limit="1/m")
    async def call_api(i: int) -> None:
        ran.append(i)

    async with app.worker(concurrency=2) as w:
        await app.enqueue_many([("call_api", {"i": i}) for i in range(2)])
        # When the first runs and the second is held back
        await eventually(lambda: ran == [0] and w.rate_limited.get("default", 0) >= 1,
                         what="one run, one refusal")  # fmt: skip
    # Then the worker counted the refusal for its queue
    assert w.rate_limited["default"] >= 1 and ran == [0]
