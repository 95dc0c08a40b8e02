"""A job's events reach ``on_event`` hooks in order in one process: ``enqueued`` first, even when
a worker of the same process starts the job before the producer's enqueue call has returned."""

from __future__ import annotations

from typing import Any

from conveyor import Hooks
from conveyor.hooks import HookBus
from conveyor.job import Job, JobState


class Recorder(Hooks):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_event(self, event: str, job: Job, data: Any) -> None:
        self.seen.append((event, job.id))


def _job(job_id: str) -> Job:
    return Job(job_id, "default", "t", {}, 5, JobState.QUEUED, 0, 1, 0, 3, None, 30.0)


def test_a_start_seen_before_the_enqueue_returned_is_held_until_enqueued() -> None:
    # Given a bus with an event hook, and an enqueue of job a in flight
    rec = Recorder()
    bus = HookBus([rec])
    bus.enqueuing("a")
    # When a worker of this process starts and completes it before the enqueue call returns,
    # while another job's events pass
    bus.emit("started", _job("a"))
    bus.emit("started", _job("b"))
    bus.emit("completed", _job("a"))
    assert rec.seen == [("started", "b")]
    bus.enqueued("a", _job("a"))
    # Then the hook saw a's events in their order, enqueued first
    assert rec.seen == [("started", "b"), ("enqueued", "a"), ("started", "a"), ("completed", "a")]


def test_an_enqueue_that_created_nothing_or_failed_releases_what_it_held() -> None:
    rec = Recorder()
    bus = HookBus([rec])
    bus.enqueuing("a")
    bus.emit("started", _job("a"))
    # When the call ends without an enqueued event (a duplicate, or an error)
    bus.enqueued("a", None)
    # Then the held events still reach the hook, and later ones pass at once
    bus.emit("completed", _job("a"))
    assert rec.seen == [("started", "a"), ("completed", "a")]
