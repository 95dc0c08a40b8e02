"""Queue pause / resume: the flag lives in the backend and every claim checks it in its own
atomic step (`Backend.set_queue_paused`, `app.pause_queue` / `app.resume_queue`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from conveyor import Conveyor, EventType, JobState, ValidationError
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind
from tests.conftest import eventually, finished


def _tasks(app: Conveyor) -> None:
    @app.task(queue="a")
    async def in_a(n: int) -> int:
        return n

    @app.task(queue="b")
    async def in_b(n: int) -> int:
        return n


async def _claim(app: Conveyor, queues: list[str], limit: int = 10) -> list[str]:
    res = await app.backend.claim_jobs(ClaimParams(queues, limit, "w-test"))
    return [j.id for j in res.jobs]


async def test_a_paused_queue_gives_no_jobs_while_another_queue_does(app: Conveyor) -> None:
    # Given jobs in queues a and b, and queue a paused
    _tasks(app)
    a_jobs = [(await app.enqueue("in_a", {"n": i})).id for i in range(3)]
    assert await app.pause_queue("a") is True
    # When jobs are still enqueued into the paused queue
    a_jobs.append((await app.enqueue("in_a", {"n": 3})).id)
    b_jobs = [(await app.enqueue("in_b", {"n": i})).id for i in range(2)]
    # Then a claim of both queues takes only b's jobs, and a claim of a alone takes nothing
    assert sorted(await _claim(app, ["a", "b"])) == sorted(b_jobs)
    assert await _claim(app, ["a"]) == []
    res = await app.backend.claim_jobs(ClaimParams(["a"], 5, "w-test"))
    assert res.jobs == []
    # And a's jobs are still queued, listed, and can be cancelled
    page = await app.list(queue="a", status="queued")
    assert sorted(j.id for j in page.jobs) == sorted(a_jobs)
    assert (await app.cancel(a_jobs[0])).status is JobState.CANCELLED
    # When the queue is resumed, its jobs are claimed in their order
    assert await app.resume_queue("a") is True
    assert await _claim(app, ["a", "b"]) == a_jobs[1:]


async def test_flow_controlled_jobs_of_a_paused_queue_are_not_claimed(app: Conveyor) -> None:
    # Given a queue whose jobs pass a concurrency gate (flow control), paused
    @app.task(queue="gated", concurrency=5)
    async def gated(n: int) -> int:
        return n

    await app.pause_queue("gated")
    ids = [(await app.enqueue("gated", {"n": i})).id for i in range(3)]
    # Then no claim takes them, alone or with another queue
    assert await _claim(app, ["gated"]) == []
    assert await _claim(app, ["gated", "other"]) == []
    # And after the resume they are claimed
    await app.resume_queue("gated")
    assert sorted(await _claim(app, ["gated"])) == sorted(ids)


async def test_active_jobs_of_a_paused_queue_finish_normally(app: Conveyor) -> None:
    # Given a job claimed before its queue was paused
    _tasks(app)
    job = await app.enqueue("in_a", {"n": 1})
    [claimed] = (await app.backend.claim_jobs(ClaimParams(["a"], 1, "w-test"))).jobs
    await app.pause_queue("a")
    # When its worker reports it completed
    lost = await app.backend.finish_jobs(
        "w-test", [Outcome(job.id, claimed.token, OutcomeKind.COMPLETED, result=7)]
    )
    # Then the outcome is applied as usual
    assert lost == []
    done = await app.get(job.id)
    assert (done.status, done.result) == (JobState.COMPLETED, 7)


async def test_resume_from_another_process_wakes_an_idle_worker(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given a running worker that polls only every minute by itself, serving a paused queue
    # and another one
    _tasks(app)
    await app.pause_queue("a")
    async with app.worker(concurrency=2, poll_interval=60):
        held = await app.enqueue("in_a", {"n": 1})
        # (a job of the other queue runs: the worker has claimed since the paused job came)
        control = await app.enqueue("in_b", {"n": 2})
        await eventually(lambda: finished(app, control.id), what="the other queue's job")
        assert (await app.get(held.id)).status is JobState.QUEUED
        # When another app object (as another process would) resumes the queue
        assert await make_app().resume_queue("a") is True
        # Then the worker is woken and runs the job, long before its next poll
        done = await eventually(lambda: finished(app, held.id), what="the resumed job to end")
        assert (done.status, done.result) == (JobState.COMPLETED, 1)


async def test_a_worker_does_not_run_jobs_of_a_queue_paused_while_it_runs(
    app: Conveyor,
) -> None:
    # Given a worker running jobs of queue a
    _tasks(app)
    async with app.worker(concurrency=2, poll_interval=0.05):
        first = await app.enqueue("in_a", {"n": 1})
        await eventually(lambda: finished(app, first.id), what="the first job")
        # When the queue is paused and jobs keep coming, with jobs of b as a control
        await app.pause_queue("a")
        waiting = [await app.enqueue("in_a", {"n": i}) for i in range(3)]
        control = await app.enqueue("in_b", {"n": 9})
        await eventually(lambda: finished(app, control.id), what="the other queue's job")
        # Then a's new jobs wait (the worker claimed b's job, enqueued after them)
        assert {(await app.get(j.id)).status for j in waiting} == {JobState.QUEUED}
        # And once resumed they all run
        await app.resume_queue("a")
        for j in waiting:
            await eventually(lambda j=j: finished(app, j.id), what="a resumed job")


async def test_the_flag_lives_in_the_backend(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given queue a paused through one app object, which is then closed
    _tasks(app)
    job = await app.enqueue("in_a", {"n": 1})
    await app.pause_queue("a")
    await app.close()
    # When a new app object (a new connection) looks
    other = make_app()
    _tasks(other)
    # Then it sees the queue paused, and its claims take nothing from it
    assert await other.paused_queues() == {"a"}
    assert await _claim(other, ["a"]) == []
    # And a resume through it holds for everyone
    assert await other.resume_queue("a") is True
    assert await make_app().paused_queues() == set()
    assert await _claim(other, ["a"]) == [job.id]


async def test_pause_and_resume_report_a_change_once_with_one_event_each(app: Conveyor) -> None:
    # Given a queue with a job
    _tasks(app)
    await app.enqueue("in_a", {"n": 1})
    since = await app.backend.last_event_cursor()
    # When it is paused twice, then resumed twice
    changes = [await app.pause_queue("a"), await app.pause_queue("a"),
               await app.resume_queue("a"), await app.resume_queue("a")]  # fmt: skip
    # Then only the first of each changed something
    assert changes == [True, False, True, False]
    # And the log holds one queue_paused and one queue_resumed event for the queue, no job
    events = [e async for e in app.events(since=since, follow=False)]
    assert [(e.type, e.queue, e.job_id) for e in events] == [
        (EventType.QUEUE_PAUSED, "a", None),
        (EventType.QUEUE_RESUMED, "a", None),
    ]
    assert [e.type.value for e in events] == ["queue_paused", "queue_resumed"]
    # And a filtered read of the queue's events finds them too
    mine = [e.type async for e in app.events(since=since, follow=False, queue="a")]
    assert mine == [EventType.QUEUE_PAUSED, EventType.QUEUE_RESUMED]


async def test_stats_show_which_queues_are_paused(app: Conveyor) -> None:
    # Given queue a with a job, paused, queue b with a job, and queue c paused with no job yet
    _tasks(app)
    await app.enqueue("in_a", {"n": 1})
    await app.enqueue("in_b", {"n": 1})
    await app.pause_queue("a")
    await app.pause_queue("c")
    # Then stats say so, for all queues and for one
    st = await app.stats()
    assert (st["a"].paused, st["b"].paused, st["c"].paused) == (True, False, True)
    assert st["a"].to_dict()["paused"] is True and st["a"].counts["queued"] == 1
    assert (await app.stats(["a"]))["a"].paused is True
    assert await app.paused_queues() == {"a", "c"}
    # And after a resume no longer
    await app.resume_queue("a")
    assert (await app.stats(["a"]))["a"].paused is False
    assert await app.paused_queues() == {"c"}


async def test_the_sync_facade_pauses_and_resumes(app: Conveyor) -> None:
    # Given sync code
    def from_sync_code() -> tuple[bool, set[str], bool]:
        return (app.sync.pause_queue("a"), app.sync.paused_queues(), app.sync.resume_queue("a"))

    # Then it pauses and resumes like the async calls
    assert await asyncio.to_thread(from_sync_code) == (True, {"a"}, True)


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "''"), ("has space", "'has space'"), ("{slot}", "'{slot}'"), ("x" * 101, "x"),
     (7, "int"), (None, "None")],
)  # fmt: skip
async def test_a_bad_queue_name_is_refused_naming_it(
    app: Conveyor, name: object, problem: str
) -> None:
    # When a queue name storage cannot take is paused or resumed
    for call in (app.pause_queue, app.resume_queue):
        with pytest.raises(ValidationError) as err:
            await call(name)  # type: ignore[arg-type]
        # Then the error names the value and the rule, and nothing is paused
        assert "queue name" in str(err.value) and problem in str(err.value)
        assert err.value.field == "queue"
    assert await app.paused_queues() == set()
