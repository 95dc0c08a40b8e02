"""Jobs suspected of killing their worker run alone.

A job whose lease expired while it ran (``Job.stalls > 0``) was running when its worker died:
it may be what killed it (a *poison* job: a segfault, ``os._exit``, the OOM killer), or it may
have been running beside the one that did. Run beside other jobs again, a poison would take
them down with it at each of its deaths, and after ``max_stalls`` deaths they would fail with it.

A suspect is a job on its last chance: stalled before, and ``max_stalls`` stalls already
(`is_suspect`), so that one more death fails it. Earlier runs after a stall are not isolated:
isolating every job a crash left behind serialized the recovery of a whole dead worker's jobs
(with a worker killed every 1-2 s, the chaos run's slowest recovery went from 2.7 s to 21 s),
while only the last chance decides whether an innocent job fails beside a poison. An innocent
job may die beside a poison until its last chance, then runs alone and completes; a poison
runs alone at its last chance and fails by itself.

So a worker holds at most one suspect at a time and runs it with nothing beside it: it stops
claiming, lets the jobs it already runs (and those it claimed ahead) finish, runs the suspect
alone, then claims again. Every other job a claim returns meanwhile, and every further suspect,
goes straight back to the queue uncharged (`release_jobs`): a job held unstarted beside a
suspect would die with it too, so the suspect starts only once that hand-back has returned (a
poison that kills its process at once would otherwise beat the release to the store). The suspect's lease is renewed while it waits (the heartbeat
renews every held attempt, started or not); a shutdown hands it back uncharged like any job
not started. An innocent job therefore never fails beside a poison, and a poison's last death
is alone.

Suspects exist only after a worker died; otherwise the cost is one look at each claimed job's
``stalls``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..job import Job
    from .runtime import Worker
    from .slots import Held

log = logging.getLogger("conveyor.worker")


def is_suspect(job: Job) -> bool:
    """On its last chance: it stalled before, and one more stall fails it."""
    return 0 < job.max_stalls <= job.stalls


class Suspects:
    """The suspect one worker holds, and when it may start."""

    __slots__ = ("_worker", "held")

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self.held: Held | None = None  # claimed, waiting to run alone, or running alone

    def split(self, jobs: Sequence[Job]) -> tuple[Sequence[Job], list[Job]]:
        """A claim returned ``jobs``: (those to hold, in claim order with a suspect last; those
        to hand back). Holding a suspect already, hands back everything."""
        if self.held is None:
            for job in jobs:
                if is_suspect(job):
                    break
            else:
                return jobs, []  # the common case: no suspect
        keep: list[Job] = []
        back: list[Job] = []
        suspect: Job | None = None
        for job in jobs:
            if self.held is not None or (suspect is not None and is_suspect(job)):
                back.append(job)
            elif is_suspect(job):
                suspect = job
            else:
                keep.append(job)
        if suspect is not None:
            keep.append(suspect)  # after the others: it waits for them anyway
        return keep, back

    def hold(self, r: Held) -> None:
        """``r`` is a suspect (it was not admitted to a lane): run it once nothing else runs."""
        self.held = r
        log.info("worker %s: job %s (%s) was running when a worker died (stalls %d): running "
                 "it alone", self._worker.id, r.job.id, r.job.task, r.job.stalls)  # fmt: skip
        self.start_if_alone()

    def start_if_alone(self) -> None:
        """Start the suspect held if no other job runs or waits for a slot."""
        w = self._worker
        r = self.held
        if r is None or r.task is not None or r.lost or r.released or w._stopping:
            return
        if w._services.handing_back or any(lane.running or lane.buffer for lane in w._lanes.all):
            return
        assert w._loop is not None
        w._lanes.admit(r, True)
        r.task = w._loop.create_task(w._execute(r))

    def handed_back(self, _: object) -> None:
        """A hand-back returned (done callback)."""
        self.start_if_alone()

    def ended(self, r: Held) -> None:
        """A held job ended or was dropped: the suspect is done with, or may start now."""
        if r is self.held:
            self.held = None
            self._worker._wake.set()  # claim again
        elif self.held is not None:
            self.start_if_alone()
