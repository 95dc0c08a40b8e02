"""Cron with real worker processes (``conveyor worker``, each running the scheduler): three
processes over ten ticks of a 0.3 s schedule enqueue and run each tick exactly once; a scheduler
down for three ticks or more catches up per its policy; ``conveyor cron list`` shows it."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conveyor import Conveyor, Job
from tests.conftest import eventually
from tests.processes.cronapp import PERIOD
from tests.workers import ROOT, WorkerProcess, WorkerProcesses, subprocess_env

pytestmark = pytest.mark.slow
TICK_MS = round(PERIOD * 1000)
#: A job's ``created_at`` is stamped when it is stored, after the scheduler read the clock to
#: pick its tick: on a loaded machine tens of ms later, so a tick boundary may fall in between.
STAMP_LAG_MS = 50


class Cron:
    """`conveyor worker` processes of cronapp on one store, and what they did."""

    def __init__(self, url: str, log: Path, pool: WorkerProcesses) -> None:
        self.url = url
        self.log = log
        self.pool = pool
        self.app = Conveyor(url)

    def start(self, catch_up: str = "all") -> WorkerProcess:
        env = {"CONVEYOR_URL": self.url, "PROC_LOG": str(self.log), "CRON_CATCH_UP": catch_up}
        return self.pool.conveyor("tests.processes.cronapp:app", "--concurrency", "4", env=env)

    async def jobs(self) -> list[Job]:
        """The jobs fired so far, by tick (each job once: a listing on Redis may show a job
        that changed state while it was read twice)."""
        page = await self.app.list(task="beat", limit=500)
        return sorted({j.id: j for j in page.jobs}.values(), key=lambda j: tick_of(j))

    def runs(self) -> Counter[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return Counter(line.split()[1] for line in lines if line.startswith("run "))


def tick_of(job: Job) -> int:
    """The tick (epoch ms) of a job, from its idempotency key ``cron:beat:<seconds>``."""
    key = job.idempotency_key or ""
    assert key.startswith("cron:beat:"), key
    return round(float(key.removeprefix("cron:beat:")) * 1000)


@pytest.fixture
async def cron(backend_url: str, tmp_path: Path, worker_processes: WorkerProcesses) -> Cron:
    c = Cron(backend_url, tmp_path / "runs.log", worker_processes)
    yield c
    await c.app.close()


async def test_three_schedulers_enqueue_each_of_ten_ticks_exactly_once(cron: Cron) -> None:
    # Given three worker processes, each running the scheduler of a 0.3 s schedule (catch-up
    # "all": every tick must fire)
    for _ in range(3):
        cron.start()
    # When they run for more than ten ticks
    jobs = await eventually(
        lambda: _at_least(cron, 11), timeout=30, what="eleven ticks fired"
    )  # fmt: skip
    # Then the ticks are consecutive, each with exactly one job (one idempotency key each)
    ticks = [tick_of(j) for j in jobs]
    assert len(set(ticks)) == len(ticks) == len({j.id for j in jobs})
    assert all(b - a == TICK_MS for a, b in itertools.pairwise(ticks)), ticks
    # And each of the first ten ran exactly once, in whichever process claimed it
    keys = [j.idempotency_key or "" for j in jobs[:10]]
    runs = await eventually(lambda: _ran(cron, keys), what="the first ten jobs run")
    assert all(runs[k] == 1 for k in keys), runs


@pytest.mark.parametrize("catch_up", ["skip", "latest", "all"])
async def test_a_scheduler_down_for_three_ticks_catches_up_per_its_policy(
    cron: Cron, catch_up: str
) -> None:
    # Given one worker process running the schedule, which has fired two ticks
    first = cron.start(catch_up)
    await eventually(lambda: _at_least(cron, 2), timeout=30, what="two ticks fired")
    # When it is killed, and more than three ticks pass before a worker starts again
    first.kill()
    last_before = tick_of((await cron.jobs())[-1])
    await eventually(
        lambda: cron.app.backend.now() * 1000 > last_before + 3.5 * TICK_MS, what="3 ticks pass"
    )  # fmt: skip
    cron.start(catch_up)
    jobs = await eventually(lambda: _fired_after(cron, last_before, 3), timeout=30,
                            what="three ticks fired after the restart")  # fmt: skip
    # Then what fired after the gap follows the policy
    ticks = [tick_of(j) for j in jobs]
    after = [t for t in ticks if t > last_before]
    gap = after[0] - last_before
    assert gap >= TICK_MS  # the restart's first fire
    missed = next(j for j in jobs if tick_of(j) == after[0])
    late = missed.created_at * 1000 - after[0]
    if catch_up == "all":
        # every missed tick fired: no gap at all
        assert all(b - a == TICK_MS for a, b in itertools.pairwise(ticks)), ticks
    elif catch_up == "latest":
        # one job for the gap: the tick that was the latest due when it fired
        assert gap > 3 * TICK_MS, ticks
        assert late < TICK_MS + STAMP_LAG_MS, (late, ticks)
    else:
        # no missed tick fired: the first tick after the gap fired on time (half a period)
        assert gap > 3 * TICK_MS, ticks
        assert late <= TICK_MS / 2 + STAMP_LAG_MS, (late, ticks)
    # And the ticks after the restart's first are consecutive, each fired once
    assert all(b - a == TICK_MS for a, b in itertools.pairwise(after)), after
    assert len(set(ticks)) == len(ticks)


async def test_cron_list_shows_the_schedule_with_its_last_fire_and_job(cron: Cron) -> None:
    # Given a worker that fired a tick
    cron.start()
    jobs = await eventually(lambda: _at_least(cron, 1), timeout=30, what="a tick fired")
    # When `conveyor cron list --json` runs for the app
    out = subprocess.run(
        [sys.executable, "-m", "conveyor", "cron", "list", "--app", "tests.processes.cronapp:app",
         "--json"],
        cwd=ROOT, env=subprocess_env() | {"CONVEYOR_URL": cron.url}, capture_output=True,
        text=True, timeout=30, check=True,
    )  # fmt: skip
    # Then it shows the schedule, its interval, and a last fire at or after the first job's tick
    (info,) = json.loads(out.stdout)
    assert (info["name"], info["task"], info["schedule"], info["tz"]) == (
        "beat", "beat", "every 0.3s", "UTC",
    )  # fmt: skip
    assert info["last_fire"] * 1000 >= tick_of(jobs[0]) and info["last_job"]
    assert info["next_fire"] > info["last_fire"]
    # And the table form names the columns
    table = subprocess.run(
        [sys.executable, "-m", "conveyor", "cron", "list", "--app", "tests.processes.cronapp:app"],
        cwd=ROOT, env=subprocess_env() | {"CONVEYOR_URL": cron.url}, capture_output=True,
        text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "next fire" in table and "every 0.3s" in table


async def _at_least(cron: Cron, n: int) -> list[Job] | None:
    jobs = await cron.jobs()
    return jobs if len(jobs) >= n else None


async def _fired_after(cron: Cron, tick: int, n: int) -> list[Job] | None:
    jobs = await cron.jobs()
    return jobs if sum(tick_of(j) > tick for j in jobs) >= n else None


def _ran(cron: Cron, keys: list[str]) -> Counter[str] | None:
    runs = cron.runs()
    return runs if all(k in runs for k in keys) else None
