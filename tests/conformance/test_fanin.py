"""Fan-out / fan-in: a handler spawns children (``ctx.spawn_many``) and returns
`AwaitChildren`; the parent waits (no slot, no lease) and resumes once with its children's
results in spawn order, or fails / resumes early as its failure policy says. Every child's
final transition settles its edge: completed, failed for good, cancelled, deleted afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import (
    AwaitChildren,
    Context,
    Conveyor,
    JobNotFound,
    JobState,
    JobStateError,
    Permanent,
)
from tests.conftest import eventually, finished

FAST = 0.05  # maintenance interval: outbox sweeps, lease recovery
#: Queues the test workers serve; children spawned to ``held`` wait until a test acts on them.
SERVED = ["main", "kids"]


def _tasks(app: Conveyor, runs: list[dict[str, Any]], **spawn: Any) -> None:
    """``parent`` spawns ``items`` on its first run and returns what it saw on the next;
    ``double`` completes with 2 * n, ``boom`` fails for good, ``hold`` waits in ``held``."""

    @app.task(queue="main", retries=0)
    async def parent(ctx: Context, items: list[list[Any]]) -> Any:
        runs.append({"resumed": ctx.resumed, "attempt": ctx.attempt, "children": ctx.children})
        if not ctx.resumed:
            ctx.spawn_many([(t, p) for t, p in items], **spawn)
            return AwaitChildren()
        return [[c.status.value if c.status else None, c.result, (c.error or {}).get("type")]
                for c in ctx.children]  # fmt: skip

    @app.task(queue="kids")
    async def double(n: int) -> int:
        return 2 * n

    @app.task(queue="kids")
    async def boom(n: int) -> int:
        raise Permanent(f"no {n}")

    @app.task(queue="held")
    async def hold(n: int) -> int:
        return n


async def _fanin(app: Conveyor, job_id: str, key: str, value: Any) -> bool:
    fanin = (await app.get(job_id)).fanin
    return fanin is not None and fanin[key] == value


async def test_the_parent_resumes_once_with_results_in_spawn_order(app: Conveyor) -> None:
    # Given a parent (no retries) spawning children into its own and another queue
    runs: list[dict[str, Any]] = []
    _tasks(app, runs)
    items = [["double", {"n": i}] for i in range(5)] + [["hold", {"n": 9}]]
    job = await app.enqueue("parent", {"items": items}, tenant="acme")
    async with app.worker(concurrency=4, queues=[*SERVED, "held"], maintenance_interval=FAST):
        # When every child completes
        done = await eventually(lambda: finished(app, job.id), what="parent done")
    # Then the parent resumed exactly once, with the results in spawn order
    assert done.status is JobState.COMPLETED
    assert done.result == [["completed", 2 * i, None] for i in range(5)] + [["completed", 9, None]]
    assert [r["resumed"] for r in runs] == [False, True]
    # And its retry budget was not spent by waiting: the resumed run is attempt 1 of 1
    assert [r["attempt"] for r in runs] == [1, 1] and done.max_attempts == 1
    # And its fan-in record says 6 of 6 children done (progress while waiting: another test)
    assert done.fanin is not None
    assert done.fanin["settled"] == done.fanin["total"] == 6 and done.fanin["failed"] == 0
    # And each child names its parent, the parent's tenant and workflow
    first = runs[1]["children"][0]
    child = await app.get(first.id)
    assert child.parent == job.id and child.tenant == "acme" and child.workflow == job.id
    assert [c.index for c in runs[1]["children"]] == list(range(6))


async def test_fail_parent_fails_it_and_cancels_pending_siblings(app: Conveyor) -> None:
    # Given a parent (default policy fail_parent) whose children are one that fails and two
    # that wait in a queue no worker serves
    runs: list[dict[str, Any]] = []
    _tasks(app, runs)
    items = [["hold", {"n": 1}], ["boom", {"n": 2}], ["hold", {"n": 3}]]
    job = await app.enqueue("parent", {"items": items})
    async with app.worker(concurrency=2, queues=SERVED, maintenance_interval=FAST):
        # When the failing child fails for good
        failed = await eventually(lambda: finished(app, job.id), what="parent failed")
        kids = await eventually(lambda: _held(app, 2), what="children listed")
        await eventually(lambda: _all(app, kids, JobState.CANCELLED), what="siblings cancelled")
    # Then the parent failed for good at once, naming the child, and ran only once
    assert failed.status is JobState.FAILED
    assert failed.error is not None and failed.error["type"] == "ChildFailed"
    assert "spawn index 1" in failed.error["message"] and "Permanent" in failed.error["message"]
    assert len(runs) == 1
    # And its pending siblings were cancelled (and settled, all three: 3 of 3)
    await eventually(lambda: _fanin(app, job.id, "settled", 3), what="all settled")


async def _all(app: Conveyor, ids: list[str], state: JobState) -> bool:
    return all([(await app.get(i)).status is state for i in ids])


async def test_fail_parent_can_leave_siblings_running(app: Conveyor) -> None:
    # Given a parent that fails on a child's failure but keeps its siblings
    runs: list[dict[str, Any]] = []
    _tasks(app, runs, cancel_siblings=False)
    job = await app.enqueue("parent", {"items": [["boom", {"n": 1}], ["hold", {"n": 2}]]})
    async with app.worker(concurrency=2, queues=SERVED, maintenance_interval=FAST):
        failed = await eventually(lambda: finished(app, job.id), what="parent failed")
    # Then the parent failed and the sibling still waits to run
    assert failed.status is JobState.FAILED
    (kid,) = await eventually(lambda: _held(app, 1), what="child listed")
    assert (await app.get(kid)).status is JobState.QUEUED


async def test_ignore_resumes_when_all_are_final_with_errors_in_place(app: Conveyor) -> None:
    # Given a parent with policy ignore: a child completes, one fails, one waits
    runs: list[dict[str, Any]] = []
    _tasks(app, runs, policy="ignore")
    items = [["double", {"n": 1}], ["boom", {"n": 2}], ["hold", {"n": 3}]]
    job = await app.enqueue("parent", {"items": items})
    async with app.worker(concurrency=2, queues=SERVED, maintenance_interval=FAST):
        await eventually(lambda: _fanin(app, job.id, "settled", 2), what="two settled")
        # Then while one child is pending the parent still waits, with no slot and no lease
        waiting = await app.get(job.id)
        assert waiting.status is JobState.AWAITING and waiting.lease_expires_at is None
        assert waiting.progress.message == "2 of 3 children done"
        # When the last child is cancelled
        (kid,) = await eventually(lambda: _held(app, 1), what="child listed")
        await app.cancel(kid)
        done = await eventually(lambda: finished(app, job.id), what="parent done")
    # Then the parent resumed once with results and errors in spawn order
    assert done.result == [["completed", 2, None], ["failed", None, "Permanent"],
                           ["cancelled", None, None]]  # fmt: skip
    assert [r["resumed"] for r in runs] == [False, True]


async def test_continue_resumes_at_the_first_failure_and_only_once(app: Conveyor) -> None:
    # Given a parent with policy continue: a child fails while another waits
    runs: list[dict[str, Any]] = []
    _tasks(app, runs, policy="continue")
    job = await app.enqueue("parent", {"items": [["hold", {"n": 1}], ["boom", {"n": 2}]]})
    async with app.worker(concurrency=2, queues=SERVED, maintenance_interval=FAST):
        # When the failing child fails
        done = await eventually(lambda: finished(app, job.id), what="parent done")
        # Then the parent resumed at once with what was known: one pending, one failed
        assert done.result == [[None, None, None], ["failed", None, "Permanent"]]
        # And the later end of its sibling is recorded but does not run the parent again
        (kid,) = await eventually(lambda: _held(app, 1), what="child listed")
        await app.cancel(kid)
        await eventually(lambda: _fanin(app, job.id, "settled", 2), what="late settle")
    assert [r["resumed"] for r in runs] == [False, True]
    assert (await app.get(job.id)).status is JobState.COMPLETED


async def test_a_child_that_fails_attempts_then_completes_settles_once(app: Conveyor) -> None:
    # Given a child that fails its first attempt and is retried (no backoff)
    runs: list[dict[str, Any]] = []
    _tasks(app, runs)
    tries: list[int] = []

    @app.task(queue="kids", retries=2, backoff_initial=0)
    async def flaky(ctx: Context, n: int) -> int:
        tries.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return n

    job = await app.enqueue("parent", {"items": [["flaky", {"n": 7}]]})
    async with app.worker(concurrency=2, queues=SERVED, maintenance_interval=FAST):
        done = await eventually(lambda: finished(app, job.id), what="parent done")
    # Then the failed attempt did not settle the edge: the parent got the completion
    assert tries == [1, 2]
    assert done.status is JobState.COMPLETED and done.result == [["completed", 7, None]]
    assert done.fanin is not None and done.fanin["failed"] == 0 and done.fanin["settled"] == 1


async def test_children_deleted_by_cleanup_still_settle_their_parent(app: Conveyor) -> None:
    # Given a parent (policy ignore) whose first children completed and one still waits
    runs: list[dict[str, Any]] = []
    _tasks(app, runs, policy="ignore")
    items = [["double", {"n": 1}], ["double", {"n": 2}], ["hold", {"n": 3}]]
    job = await app.enqueue("parent", {"items": items})
    async with app.worker(concurrency=2, queues=SERVED, maintenance_interval=FAST):
        await eventually(lambda: _fanin(app, job.id, "settled", 2), what="two settled")
        # When cleanup deletes the finished children (the parent waits: it is not deleted)
        assert await app.cleanup(older_than=0) == 2
        assert (await app.get(job.id)).status is JobState.AWAITING
        # And the last child is cancelled, then deleted too
        (kid,) = await eventually(lambda: _held(app, 1), what="child listed")
        await app.cancel(kid)
        done = await eventually(lambda: finished(app, job.id), what="parent done")
    # Then the parent resumed with every result, although the children are gone
    assert done.result == [["completed", 2, None], ["completed", 4, None],
                           ["cancelled", None, None]]  # fmt: skip
    with pytest.raises(JobNotFound):
        await app.get(runs[1]["children"][0].id)


async def test_cancelling_a_waiting_parent_cancels_its_pending_children(app: Conveyor) -> None:
    # Given a parent waiting for two children that cannot run yet
    runs: list[dict[str, Any]] = []
    _tasks(app, runs)
    job = await app.enqueue("parent", {"items": [["hold", {"n": 1}], ["hold", {"n": 2}]]})
    async with app.worker(concurrency=2, queues=SERVED, maintenance_interval=FAST):
        await eventually(lambda: _fanin(app, job.id, "total", 2), what="parked")
        kids = await eventually(lambda: _held(app, 2), what="children created")
        # When the parent is cancelled
        cancelled = await app.cancel(job.id)
        assert cancelled.status is JobState.CANCELLED
        # Then its children are cancelled too, and it never runs again
        await eventually(lambda: _all(app, kids, JobState.CANCELLED), what="children cancelled")
    assert len(runs) == 1


async def _held(app: Conveyor, n: int) -> list[str] | None:
    ids = list(dict.fromkeys(j.id for j in (await app.list(queue="held")).jobs))
    return ids if len(ids) == n else None


async def test_fan_in_is_tenant_scoped_and_not_resumed_by_hand(app: Conveyor) -> None:
    # Given a tenant's parent waiting for a child
    runs: list[dict[str, Any]] = []
    _tasks(app, runs)
    job = await app.enqueue("parent", {"items": [["hold", {"n": 1}]]}, tenant="acme")
    async with app.worker(concurrency=2, queues=SERVED, maintenance_interval=FAST):
        (kid,) = await eventually(lambda: _held(app, 1), what="child created")
        await eventually(lambda: _fanin(app, job.id, "total", 1), what="parked")
    # Then the child is the tenant's: another tenant sees neither
    assert (await app.get(kid, tenant="acme")).tenant == "acme"
    with pytest.raises(JobNotFound):
        await app.get(kid, tenant="globex")
    with pytest.raises(JobNotFound):
        await app.cancel(job.id, tenant="globex")
    # And a person cannot resume a parent its children resume
    with pytest.raises(JobStateError, match="awaiting children"):
        await app.resume(job.id, "go", tenant="acme")


async def test_spawning_without_awaiting_creates_nothing(app: Conveyor) -> None:
    # Given handlers that spawn but return something else, and one that awaits no child
    @app.task(queue="main")
    async def forgets(ctx: Context) -> str:
        ctx.spawn("hold", {"n": 1})
        return "done"

    @app.task(queue="main")
    async def empty(ctx: Context) -> AwaitChildren:
        return AwaitChildren()

    @app.task(queue="held")
    async def hold(n: int) -> int:
        return n

    a = await app.enqueue("forgets", {})
    b = await app.enqueue("empty", {})
    async with app.worker(concurrency=2, queues=["main"], maintenance_interval=FAST):
        fa = await eventually(lambda: finished(app, a.id), what="a failed")
        fb = await eventually(lambda: finished(app, b.id), what="b failed")
    # Then both failed for good, saying why, and no child exists
    assert fa.status is JobState.FAILED and fa.error and fa.error["type"] == "ChildrenNotAwaited"
    assert fb.status is JobState.FAILED and fb.error and fb.error["type"] == "NoChildren"
    assert (await app.list(queue="held")).jobs == []


async def test_a_bad_child_is_refused_in_the_handler(app: Conveyor) -> None:
    # Given a handler spawning an unknown task and a bad policy
    seen: list[str] = []

    @app.task(queue="main", retries=0)
    async def bad(ctx: Context) -> AwaitChildren:
        for call in (lambda: ctx.spawn_many([("nope", {})]),
                     lambda: ctx.spawn_many([("bad", {})], policy="maybe"),  # type: ignore[arg-type]
                     lambda: ctx.spawn_many("bad")):  # fmt: skip
            try:
                call()
            except Exception as exc:
                seen.append(type(exc).__name__)
        return AwaitChildren()

    job = await app.enqueue("bad", {})
    async with app.worker(concurrency=1, queues=["main"], maintenance_interval=FAST):
        failed = await eventually(lambda: finished(app, job.id), what="failed")
    # Then each call raised a conveyor error naming the problem and nothing was buffered
    assert seen == ["ValidationError", "ValidationError", "ValidationError"]
    assert failed.error and failed.error["type"] == "NoChildren"
