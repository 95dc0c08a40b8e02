"""Batches with callbacks whose members fan out (``ctx.spawn_many`` + `AwaitChildren`): a member
waiting for its children has not ended; it ends when it resumes and then completes (or fails
for good), when its policy fails it from a child's settle (fail_parent), or when it is
cancelled while waiting. The children never join the batch: they are not in its counts nor
its total, and the callbacks fire exactly once."""

from __future__ import annotations

from typing import Any

from conveyor import AwaitChildren, Context, Conveyor, Job, JobState, Permanent
from tests.conftest import eventually, finished

FAST = 0.05  # maintenance interval: outbox sweeps, batch checks
ALL = ["main", "default", "kids", "held", "callbacks"]


def _tasks(app: Conveyor, seen: list[dict[str, Any]]) -> None:
    """``parent`` spawns ``items`` and awaits them, then returns how many it got; ``part``
    completes; ``double`` completes, ``boom`` fails for good, ``hold`` waits in ``held`` (a
    queue served only when a test says so); ``done``/``ok`` record their payloads."""

    @app.task(queue="main", retries=0)
    async def parent(ctx: Context, items: list[list[Any]]) -> int:
        if not ctx.resumed:
            ctx.spawn_many([(t, p) for t, p in items])
            return AwaitChildren()  # type: ignore[return-value]
        return len(ctx.children)

    @app.task
    async def part(i: int) -> int:
        return i

    @app.task(queue="kids")
    async def double(n: int) -> int:
        return 2 * n

    @app.task(queue="kids")
    async def boom(n: int) -> int:
        raise Permanent(f"no {n}")

    @app.task(queue="held")
    async def hold(n: int) -> int:
        return n

    @app.task(queue="callbacks")
    async def done(batch: str, counts: dict[str, int], total: int) -> None:
        seen.append({"task": "done", "counts": counts, "total": total})

    @app.task(queue="callbacks")
    async def ok(batch: str, counts: dict[str, int], total: int) -> None:
        seen.append({"task": "ok", "counts": counts, "total": total})


async def _jobs_of(app: Conveyor, task: str) -> list[Job]:
    return (await app.list(task=task, limit=100)).jobs


async def _callback_done(app: Conveyor, task: str) -> Job | None:
    jobs = await _jobs_of(app, task)
    return jobs[0] if jobs and jobs[0].status is JobState.COMPLETED else None


async def _waiting_batch(app: Conveyor, items: list[list[Any]], queues: list[str]) -> Any:
    """A batch of a fan-out ``parent`` and a ``part``, with both callbacks, run by a worker of
    ``queues`` until the parent waits for its children and the part completed; the batch is
    then still open (a check finds nothing to fire), and its children are not members."""
    batch = await app.enqueue_many(
        [("parent", {"items": items}), ("part", {"i": 1})], on_complete="done", on_success="ok"
    )

    async def waiting() -> bool:
        st = await batch.status()
        parent = await app.get(batch.ids[0])
        return st.counts == {"awaiting": 1, "completed": 1} and bool(parent.next_jobs)

    async with app.worker(concurrency=2, queues=queues, maintenance_interval=FAST):
        await eventually(waiting, what="the parent waiting for children, the part completed")
        await app.backend.settle_batches(ALL)
    st = await batch.status()
    assert st.record is not None and not st.record.fired and not st.finished
    assert st.total == 2
    assert await _jobs_of(app, "done") == [] and await _jobs_of(app, "ok") == []
    return batch


async def test_a_member_that_fans_out_ends_after_it_resumes_and_completes(app: Conveyor) -> None:
    # Given a batch whose parent member waits for two children, one of them done already and
    # one held in a queue no worker serves yet
    seen: list[dict[str, Any]] = []
    _tasks(app, seen)
    items = [["double", {"n": 1}], ["hold", {"n": 2}]]
    batch = await _waiting_batch(app, items, ["main", "default", "kids"])
    parent_id = batch.ids[0]
    # When the held child runs too: the parent resumes, completes, and the callbacks run
    async with app.worker(concurrency=2, queues=ALL, maintenance_interval=FAST):
        done = await eventually(lambda: finished(app, parent_id), what="the parent done")
        await eventually(lambda: _callback_done(app, "done"), what="on_complete to run")
        await eventually(lambda: _callback_done(app, "ok"), what="on_success to run")
    await app.backend.settle_batches(ALL)
    # Then the parent completed after its resume with both children's results
    assert done.status is JobState.COMPLETED and done.result == 2
    # And each callback ran exactly once, counting the two members only (not the children)
    both = {"completed": 2, "failed": 0, "cancelled": 0}
    assert sorted(seen, key=lambda s: s["task"]) == [
        {"task": "done", "counts": both, "total": 2}, {"task": "ok", "counts": both, "total": 2}
    ]  # fmt: skip
    assert len(await _jobs_of(app, "done")) == 1 and len(await _jobs_of(app, "ok")) == 1
    st = await batch.status()
    assert (st.total, st.counts) == (2, {"completed": 2})
    for child in done.next_jobs:
        assert (await app.get(child)).batch is None


async def test_a_member_failed_by_fail_parent_ends_the_batch_once(app: Conveyor) -> None:
    # Given a batch whose parent member (policy fail_parent) waits for a child that will fail
    # and one held in a queue no worker serves
    seen: list[dict[str, Any]] = []
    _tasks(app, seen)
    items = [["boom", {"n": 1}], ["hold", {"n": 2}]]
    batch = await _waiting_batch(app, items, ["main", "default"])
    parent_id = batch.ids[0]
    # When only the children's queue is served: the failing child's settle fails the parent
    # (in the parent's queue, which this worker neither serves nor sweeps for batches)
    async with app.worker(concurrency=2, queues=["kids"], maintenance_interval=FAST):
        failed = await eventually(lambda: finished(app, parent_id), what="the parent failed")
        # Then that settle ended the member: on_complete is enqueued at once
        callbacks = await eventually(lambda: _jobs_of(app, "done"), what="on_complete stored")
    assert failed.status is JobState.FAILED and failed.error is not None
    assert failed.error["type"] == "ChildFailed"
    assert [j.status for j in callbacks] == [JobState.QUEUED]
    assert callbacks[0].payload == {
        "batch": batch.id, "total": 2, "counts": {"completed": 1, "failed": 1, "cancelled": 0}
    }  # fmt: skip
    # And the held sibling was cancelled, and does not count in the batch
    held = [c for c in failed.next_jobs if (await app.get(c)).task == "hold"]
    await eventually(
        lambda: finished(app, held[0]), what="the held sibling cancelled"
    )  # fmt: skip
    assert (await app.get(held[0])).status is JobState.CANCELLED
    # When the callbacks' queue is served and every queue's batches are checked again
    async with app.worker(concurrency=2, queues=ALL, maintenance_interval=FAST):
        await eventually(lambda: _callback_done(app, "done"), what="on_complete to run")
    await app.backend.settle_batches(ALL)
    # Then on_complete ran exactly once, on_success was skipped
    counts = {"completed": 1, "failed": 1, "cancelled": 0}
    assert seen == [{"task": "done", "counts": counts, "total": 2}]
    assert len(await _jobs_of(app, "done")) == 1 and await _jobs_of(app, "ok") == []
    st = await batch.status()
    assert (st.total, st.counts) == (2, {"completed": 1, "failed": 1})
    assert st.record is not None and st.record.fired
    states = {c["name"]: c["state"] for c in st.record.callbacks}
    assert states["on_success"] == "skipped"


async def test_a_cancelled_waiting_parent_ends_the_batch_as_cancelled(app: Conveyor) -> None:
    # Given a batch whose parent member waits for children held in a queue no worker serves
    seen: list[dict[str, Any]] = []
    _tasks(app, seen)
    items = [["hold", {"n": 1}], ["hold", {"n": 2}]]
    batch = await _waiting_batch(app, items, ["main", "default"])
    parent_id = batch.ids[0]
    # When the waiting parent is cancelled
    await app.cancel(parent_id)
    # Then it ended cancelled: on_complete is enqueued once, on_success is skipped
    callbacks = await _jobs_of(app, "done")
    assert len(callbacks) == 1
    assert callbacks[0].payload == {
        "batch": batch.id, "total": 2, "counts": {"completed": 1, "failed": 0, "cancelled": 1}
    }  # fmt: skip
    assert await _jobs_of(app, "ok") == []
    # And its pending children are cancelled, outside the batch's counts
    parent = await app.get(parent_id)
    for child in parent.next_jobs:
        await eventually(lambda c=child: finished(app, c), what="a child cancelled")
    st = await batch.status()
    assert (st.total, st.counts) == (2, {"completed": 1, "cancelled": 1})
