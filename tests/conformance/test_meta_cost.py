"""Job meta and ctx.cost on every backend: stored with the job, returned, summed in stats."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from conveyor import Context, Conveyor, Enqueuing, Hooks, JobState, ValidationError


async def test_meta_given_at_enqueue_and_by_hooks_is_stored_and_returned(app: Conveyor) -> None:
    # Given a hook that stamps a trace id on every job
    class Stamp(Hooks):
        def before_enqueue(self, jobs: Sequence[Enqueuing]) -> None:
            for j in jobs:
                j.meta["traceparent"] = f"00-{j.id}-01"

    app.add_hook(Stamp())
    seen: list[dict[str, object]] = []

    @app.task
    async def look(ctx: Context) -> None:
        seen.append(dict(ctx.job.meta))

    # When jobs are enqueued with and without meta, alone and in a batch
    one = await app.enqueue("look", meta={"request": "r-1", "n": [1, 2.5, None]})
    batch = await app.enqueue_many(
        [("look", None), {"task": "look", "meta": {"request": "r-2"}}], delay=0
    )
    # Then each is stored and read back with its meta and the hook's
    got = await app.get(one.id)
    assert got.meta == {"request": "r-1", "n": [1, 2.5, None], "traceparent": f"00-{one.id}-01"}
    first, second = [await app.get(i) for i in batch.ids]
    assert first.meta == {"traceparent": f"00-{first.id}-01"}
    assert second.meta == {"request": "r-2", "traceparent": f"00-{second.id}-01"}
    # And the worker's claimed job carries it to the handler's context
    async with app.worker(concurrency=2):
        await batch.wait(timeout=10)
        await app.wait(one.id, timeout=10)
    assert sorted(m["traceparent"] for m in seen) == sorted(
        f"00-{i}-01" for i in [one.id, *batch.ids]
    )
    # And listing returns it too
    page = await app.list(task="look")
    assert {j.id: j.meta["traceparent"] for j in page.jobs}[one.id] == f"00-{one.id}-01"


async def test_a_job_without_meta_reads_back_an_empty_dict(app: Conveyor) -> None:
    @app.task
    async def plain() -> None:
        return None

    job = await plain.enqueue()
    assert job.meta == {} and (await app.get(job.id)).meta == {}


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ([1, 2], "must be a JSON object"),
        ({"x": float("nan")}, "meta.x"),
        ({"x": {1, 2}}, "meta.x"),
        ({1: "a"}, "keys must be strings"),
        ({"big": "x" * 20_000}, "the limit is 16,384"),
    ],
)
async def test_meta_that_json_cannot_hold_is_refused_and_nothing_is_stored(
    app: Conveyor, meta: object, problem: str
) -> None:
    @app.task
    async def t() -> None:
        return None

    # When meta is not a small JSON object, alone or as an item of a batch
    with pytest.raises(ValidationError, match=problem):
        await app.enqueue("t", meta=meta)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"items\[1\]"):
        await app.enqueue_many([("t", None), {"task": "t", "meta": meta}])
    # Then nothing was stored
    assert (await app.stats())["default"].counts["queued"] == 0


async def test_cost_is_stored_per_job_across_attempts_and_summed_per_task(app: Conveyor) -> None:
    # Given a handler that reports cost and fails its first attempt
    @app.task(retries=1, backoff_initial=0.0)
    async def bill(ctx: Context, n: int) -> int:
        ctx.cost(0.25 * n)
        ctx.cost(0.25 * n, unit="usd")
        ctx.cost(100, unit="tokens")
        if ctx.attempt == 1 and n == 2:
            raise RuntimeError("flaky")
        return n

    @app.task
    def sync_bill(ctx: Context) -> None:
        ctx.cost(1.5)

    # When jobs run (one of them twice)
    async with app.worker(concurrency=2):
        a = await bill.enqueue(n=1)
        b = await bill.enqueue(n=2)
        c = await sync_bill.enqueue()
        for j in (a, b, c):
            await app.wait(j.id, timeout=10)
    # Then each job holds its attempts' sum, per unit
    assert (await app.get(a.id)).cost == {"usd": 0.5, "tokens": 100}
    got_b = await app.get(b.id)
    assert got_b.status is JobState.COMPLETED and got_b.attempt == 2
    assert got_b.cost == {"usd": 2.0, "tokens": 200}
    assert (await app.get(c.id)).cost == {"usd": 1.5}
    # And stats sum them per task and unit
    cost = (await app.stats())["default"].cost
    assert cost == {"bill": {"usd": 2.5, "tokens": 300}, "sync_bill": {"usd": 1.5}}

    # And a job that reported nothing has no cost
    @app.task
    async def free() -> None:
        return None

    async with app.worker(concurrency=1):
        d = await free.enqueue()
        await app.wait(d.id, timeout=10)
    assert (await app.get(d.id)).cost is None


@pytest.mark.parametrize(
    ("amount", "unit", "field"),
    [(-1, "usd", "amount"), (float("inf"), "usd", "amount"), (float("nan"), "usd", "amount"),
     ("3", "usd", "amount"), (True, "usd", "amount"), (10**400, "usd", "amount"),
     (1, "", "unit"), (1, "u s d", "unit"), (1, "x" * 33, "unit"), (1, 5, "unit")],
)  # fmt: skip
async def test_bad_cost_raises_in_the_handler(
    app: Conveyor, amount: object, unit: object, field: str
) -> None:
    errors: list[str | None] = []

    @app.task
    async def spend(ctx: Context) -> None:
        try:
            ctx.cost(amount, unit=unit)  # type: ignore[arg-type]
        except ValidationError as exc:
            errors.append(exc.field)

    async with app.worker(concurrency=1):
        job = await spend.enqueue()
        await app.wait(job.id, timeout=10)
    assert errors == [field]
    assert (await app.get(job.id)).cost is None


async def test_a_cost_total_that_would_overflow_is_refused_and_the_job_completes(
    app: Conveyor,
) -> None:
    # Given a handler whose second report would make the attempt's total infinite
    errors: list[str | None] = []

    @app.task
    async def spend(ctx: Context) -> int:
        ctx.cost(1e308)
        try:
            ctx.cost(1e308)
        except ValidationError as exc:
            errors.append(exc.field)
        return 1

    async with app.worker(concurrency=1):
        job = await spend.enqueue()
        # Then the second report raised in the handler, and the attempt completed with the
        # finite total (before: inf was stored, as null on SQLite, or failed the finish script)
        assert await app.wait(job.id, timeout=10) == 1
    assert errors == ["amount"]
    assert (await app.get(job.id)).cost == {"usd": 1e308}
