"""Batches with callbacks whose members await input (human in the loop): an awaiting member has
not ended; it ends when it completes after a resume, is cancelled, or its timeout fails or
cancels it, and the batch's callbacks then fire exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import AwaitInput, Context, Conveyor, Job, JobState
from tests.conftest import eventually


def _tasks(app: Conveyor, seen: list[dict[str, Any]], **await_options: Any) -> None:
    """``review`` awaits a decision on its first run and completes on the next; ``part``
    completes; the callbacks ``done`` and ``ok`` record the payload they got."""

    @app.task(queue="review")
    async def review(ctx: Context, doc: str) -> str:
        if not ctx.resumed:
            return AwaitInput({"question": f"publish {doc}?"}, **await_options)  # type: ignore[return-value]
        return f"{doc}: {ctx.input}"

    @app.task
    async def part(i: int) -> int:
        return i

    @app.task(queue="callbacks")
    async def done(batch: str, counts: dict[str, int], total: int) -> None:
        seen.append({"task": "done", "counts": counts, "total": total})

    @app.task(queue="callbacks")
    async def ok(batch: str, counts: dict[str, int], total: int) -> None:
        seen.append({"task": "ok", "counts": counts, "total": total})


QUEUES = ["default", "review", "callbacks"]


async def _jobs_of(app: Conveyor, task: str) -> list[Job]:
    return (await app.list(task=task, limit=100)).jobs


async def _callback_done(app: Conveyor, task: str) -> Job | None:
    jobs = await _jobs_of(app, task)
    return jobs[0] if jobs and jobs[0].status is JobState.COMPLETED else None


async def _parked_batch(app: Conveyor) -> tuple[Any, str]:
    """A batch of a ``review`` member and a ``part`` member, with both callbacks, run by a
    worker that sweeps no deadline until the review awaits and the part completed. Then the
    batch is still open: an awaiting member has not ended."""
    batch = await app.enqueue_many(
        [("review", {"doc": "a"}), ("part", {"i": 1})], on_complete="done", on_success="ok"
    )
    review_id = batch.ids[0]

    async def parked() -> bool:
        st = await batch.status()
        return st.counts == {"awaiting": 1, "completed": 1}

    async with app.worker(concurrency=2, queues=QUEUES, maintenance_interval=3600):
        await eventually(parked, what="the review awaiting and the part completed")
        await app.backend.settle_batches(QUEUES)  # a check finds the batch open
    st = await batch.status()
    assert st.record is not None and not st.record.fired and not st.finished
    assert await _jobs_of(app, "done") == [] and await _jobs_of(app, "ok") == []
    return batch, review_id


@pytest.mark.parametrize(
    ("policy", "ended"),
    [("fail", "failed"), ("cancel", "cancelled"), ("resume", "completed")],
)  # fmt: skip
async def test_an_awaiting_member_that_times_out_ends_the_batch_once(
    app: Conveyor, policy: str, ended: str
) -> None:
    # Given a batch whose review member awaits with a short timeout, its other member done
    seen: list[dict[str, Any]] = []
    data = "approved by default" if policy == "resume" else None
    _tasks(app, seen, timeout=0.2, on_timeout=policy, data=data)
    batch, review_id = await _parked_batch(app)
    deadline = (await app.get(review_id)).await_deadline
    assert deadline is not None
    await eventually(lambda: app.backend.now() > deadline + 0.01, what="the deadline")
    # When the deadline sweep runs (here directly: no worker checks batches afterwards)
    swept = await app.backend.expire_awaiting()
    assert [(r.job_id, r.state.value) for r in swept] == [
        (review_id, "queued" if policy == "resume" else ended)
    ]
    callbacks = await _jobs_of(app, "done")
    if policy == "resume":
        # Then a member resumed by its timeout has not ended: nothing fired yet
        assert callbacks == []
    else:
        # Then the member's timeout ended it: on_complete is enqueued by the sweep itself
        assert [j.status for j in callbacks] == [JobState.QUEUED]
    # When a worker runs what is left (the resumed member, the callbacks) and sweeps again
    async with app.worker(concurrency=2, queues=QUEUES, maintenance_interval=0.05):
        await eventually(lambda: _callback_done(app, "done"), what="on_complete to run")
        if policy == "resume":
            await eventually(lambda: _callback_done(app, "ok"), what="on_success to run")
    assert await app.backend.expire_awaiting() == []
    await app.backend.settle_batches(QUEUES)
    # Then on_complete ran exactly once, counting the member as it ended; on_success only
    # when it completed
    counts = {"completed": 1, "failed": 0, "cancelled": 0}
    counts[ended] += 1
    expected = [{"task": "done", "counts": counts, "total": 2}]
    if policy == "resume":
        expected.append({"task": "ok", "counts": counts, "total": 2})
    assert sorted(seen, key=lambda s: s["task"]) == expected
    assert len(await _jobs_of(app, "done")) == 1
    assert len(await _jobs_of(app, "ok")) == (1 if policy == "resume" else 0)
    st = await batch.status()
    assert st.finished and st.record is not None and st.record.fired
    assert st.counts == {s: n for s, n in counts.items() if n}


async def test_a_resumed_member_completes_and_ends_the_batch(app: Conveyor) -> None:
    # Given a batch whose review member awaits (no timeout), its other member done
    seen: list[dict[str, Any]] = []
    _tasks(app, seen)
    batch, review_id = await _parked_batch(app)
    # When the review is resumed and a worker runs it and the callbacks
    await app.resume(review_id, "yes")
    async with app.worker(concurrency=2, queues=QUEUES, maintenance_interval=0.05):
        await eventually(lambda: _callback_done(app, "ok"), what="on_success to run")
        await eventually(lambda: _callback_done(app, "done"), what="on_complete to run")
    # Then the member completed with the decision, and each callback ran once, with both
    # members completed
    assert (await app.get(review_id)).result == "a: yes"
    both = {"completed": 2, "failed": 0, "cancelled": 0}
    assert sorted(seen, key=lambda s: s["task"]) == [
        {"task": "done", "counts": both, "total": 2}, {"task": "ok", "counts": both, "total": 2}
    ]  # fmt: skip
    assert len(await _jobs_of(app, "done")) == 1 and len(await _jobs_of(app, "ok")) == 1
    st = await batch.status()
    assert (st.total, st.counts) == (2, {"completed": 2})


async def test_a_cancelled_awaiting_member_ends_the_batch(app: Conveyor) -> None:
    # Given a batch whose review member awaits (no timeout), its other member done
    seen: list[dict[str, Any]] = []
    _tasks(app, seen)
    batch, review_id = await _parked_batch(app)
    # When the awaiting member is cancelled
    await app.cancel(review_id)
    # Then it ended, cancelled: on_complete is enqueued once, on_success is skipped
    callbacks = await _jobs_of(app, "done")
    assert len(callbacks) == 1
    assert callbacks[0].payload == {
        "batch": batch.id, "total": 2, "counts": {"completed": 1, "failed": 0, "cancelled": 1}
    }  # fmt: skip
    assert await _jobs_of(app, "ok") == []
    st = await batch.status()
    assert st.record is not None and st.record.fired
    states = {c["name"]: c["state"] for c in st.record.callbacks}
    assert states == {"on_complete": "enqueued", "on_success": "skipped"}
    assert st.counts == {"completed": 1, "cancelled": 1}
