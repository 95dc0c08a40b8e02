"""The hooks seam: each method is called where the protocol says, in order, with what it says."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from conveyor import Context, Conveyor, Enqueuing, Hooks, Job, JobState, Outcome, OutcomeKind
from conveyor.worker.runtime import Worker


class Recorder(Hooks):
    """Records every call, tagged with its name, and stamps meta at enqueue."""

    def __init__(self, name: str, calls: list[tuple[Any, ...]]) -> None:
        self.name = name
        self.calls = calls

    def before_enqueue(self, jobs: Sequence[Enqueuing]) -> None:
        self.calls.append((self.name, "before_enqueue", [(j.task, j.queue) for j in jobs]))
        for j in jobs:
            j.meta[self.name] = j.id

    async def around_execute(self, ctx: Context, call_next: Callable[[], Awaitable[Any]]) -> Any:
        self.calls.append((self.name, "enter", ctx.job.id))
        try:
            return await call_next()
        finally:
            self.calls.append((self.name, "exit", ctx.job.id))

    def after_outcome(self, job: Job, outcome: Outcome) -> None:
        self.calls.append((self.name, "after_outcome", job.id, outcome.kind))

    def on_worker_start(self, worker: Worker) -> None:
        self.calls.append((self.name, "start", worker.id))

    def on_worker_stop(self, worker: Worker) -> None:
        self.calls.append((self.name, "stop", worker.id))

    def on_event(self, event: str, job: Job, data: Any) -> None:
        self.calls.append((self.name, "event", event))


@pytest.fixture
async def sqlite_app(tmp_path: Path) -> AsyncIterator[Conveyor]:
    app = Conveyor(f"sqlite:///{tmp_path}/hooks.db")
    yield app
    await app.close()


async def test_every_hook_method_runs_in_order_first_registered_outermost(tmp_path: Path) -> None:
    # Given two recording hooks, one given to the app and one added later
    calls: list[tuple[Any, ...]] = []
    app = Conveyor(f"sqlite:///{tmp_path}/h.db", hooks=[Recorder("a", calls)])
    app.add_hook(Recorder("b", calls))
    assert [h.name for h in app.hooks] == ["a", "b"]  # type: ignore[attr-defined]

    @app.task
    async def double(n: int) -> int:
        calls.append(("handler", n))
        return 2 * n

    try:
        # When one job is enqueued and run by a worker
        async with app.worker(concurrency=1) as w:
            job = await double.enqueue(n=21)
            assert await app.wait(job.id, timeout=10) == 42
        stored = await app.get(job.id)
    finally:
        await app.close()
    # Then each method ran once, in the order of the job's life
    assert job.meta == {"a": job.id, "b": job.id}
    mine = [c for c in calls if c[0] in ("a", "handler")]
    assert mine == [
        ("a", "start", w.id),
        ("a", "before_enqueue", [("double", "default")]),
        ("a", "event", "enqueued"),
        ("a", "event", "started"),
        ("a", "enter", job.id),
        ("handler", 21),
        ("a", "exit", job.id),
        ("a", "after_outcome", job.id, OutcomeKind.COMPLETED),
        ("a", "event", "completed"),
        ("a", "stop", w.id),
    ]
    # And "a" wraps "b": a enters first and exits last
    wraps = [c[:2] for c in calls if c[1] in ("enter", "exit")]
    assert wraps == [("a", "enter"), ("b", "enter"), ("b", "exit"), ("a", "exit")]
    assert stored.status is JobState.COMPLETED


async def test_app_on_is_a_hook_and_enqueue_many_calls_before_enqueue_once(
    sqlite_app: Conveyor,
) -> None:
    # Given a listener through app.on and a hook
    calls: list[tuple[Any, ...]] = []
    seen: list[str] = []
    sqlite_app.on("enqueued", lambda e, job, data: seen.append(job.id))
    sqlite_app.add_hook(Recorder("h", calls))

    @sqlite_app.task
    async def noop() -> None:
        return None

    # When a batch of three and one more job are enqueued
    await sqlite_app.enqueue_many(
        [("noop", None), {"task": "noop", "meta": {"m": 1}}, ("noop", None)]
    )
    one = await noop.enqueue()
    # Then before_enqueue ran once per producer call, seeing every job of the call
    assert [c[2] for c in calls if c[1] == "before_enqueue"] == [
        [("noop", "default")] * 3,
        [("noop", "default")],
    ]
    # And the app.on listener got the single enqueue's event
    assert seen == [one.id]
