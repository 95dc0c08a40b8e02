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
    batch = await sqlite_app.enqueue_many(
        [("noop", None), {"task": "noop", "meta": {"m": 1}}, ("noop", None)]
    )
    one = await noop.enqueue()
    # Then before_enqueue ran once per producer call, seeing every job of the call
    assert [c[2] for c in calls if c[1] == "before_enqueue"] == [
        [("noop", "default")] * 3,
        [("noop", "default")],
    ]
    # And the app.on listener got an enqueued event for every job, the batch's too
    assert seen == [*batch.ids, one.id]


async def test_a_worker_runs_on_its_narrow_env_without_the_app(sqlite_app: Conveyor) -> None:
    # Given a worker built from a backend, a catalog and a hook bus of its own (no Conveyor)
    from conveyor.hooks import HookBus
    from conveyor.worker.env import WorkerEnv

    calls: list[tuple[Any, ...]] = []

    @sqlite_app.task
    async def inc(n: int) -> int:
        return n + 1

    await sqlite_app.open()
    env = WorkerEnv(sqlite_app.backend, sqlite_app.catalog, HookBus([Recorder("env", calls)]))
    w = Worker(env, concurrency=1)
    assert w.app is None
    # When a job is enqueued through the app and run by that worker
    async with w:
        job = await inc.enqueue(n=1)
        assert await sqlite_app.wait(job.id, timeout=10) == 2
    # Then the worker's own bus saw the attempt, and the app's (empty) bus did not matter
    assert ("env", "after_outcome", job.id, OutcomeKind.COMPLETED) in calls
    assert not sqlite_app.hooks


def test_the_bus_lists_a_hook_only_for_the_methods_it_overrides() -> None:
    from conveyor.hooks import HookBus

    class OnlyOutcome(Hooks):
        def after_outcome(self, job: Job, outcome: Outcome) -> None:
            return None

    # Given an empty bus: every method is skipped
    bus = HookBus()
    assert (bus.enqueue, bus.execute, bus.outcome, bus.start, bus.stop, bus.event) == ((),) * 6
    # When a hook overriding one method is added, and a listener subscribes and leaves
    hook = OnlyOutcome()
    bus.add(hook)
    off = bus.listeners.on("completed", lambda *a: None)
    # Then only that method lists the hook, and on_event lists the listeners while they exist
    assert (bus.enqueue, bus.execute, bus.outcome) == ((), (), (hook,))
    assert bus.event == (bus.listeners,)
    off()
    assert bus.event == ()


def test_an_object_with_no_hook_method_is_refused() -> None:
    from conveyor import ConfigurationError
    from conveyor.hooks import HookBus

    with pytest.raises(ConfigurationError, match="not a hook"):
        HookBus([object()])
