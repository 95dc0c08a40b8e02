"""Fixtures for the acceptance tests: a fresh SQLite file per test, worker processes started from
`worker_main` (``tests/workers.py``: always killed at teardown), and the line log their handlers
write.

Nothing here sleeps to "wait for" something: every wait polls a predicate against a deadline.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, Job
from tests.acceptance.apps import make_app
from tests.conftest import eventually
from tests.workers import WorkerProcess, WorkerProcesses


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    subject: str
    pid: int
    ts: float


class LineLog:
    """The O_APPEND log the worker processes' handlers write (see `apps.record`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self, kind: str | None = None) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        # A line still being written has no newline yet: leave it for the next read.
        for line in text.split("\n")[:-1]:
            k, subject, pid, ts = line.split()
            if kind is None or k == kind:
                out.append(Entry(k, subject, int(pid), float(ts)))
        return out

    def count(self, kind: str) -> Counter[str]:
        """How many ``kind`` lines each subject (job id) has."""
        return Counter(e.subject for e in self.entries(kind))

    def of(self, job_id: str) -> list[tuple[str, int]]:
        """(kind, pid) of every line about one job, in order."""
        return [(e.kind, e.pid) for e in self.entries() if e.subject == job_id]


class Workers:
    """Starts `worker_main` processes on one database (through `worker_processes`, which kills
    whatever is left at teardown)."""

    def __init__(self, url: str, log: LineLog, pool: WorkerProcesses) -> None:
        self.url = url
        self.log = log
        self.pool = pool

    def start(
        self,
        *,
        concurrency: int = 4,
        grace: float = 30.0,
        poll: float | None = None,
        tasks: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        full = {"CONVEYOR_URL": self.url, "ACCEPT_LOG": str(self.log.path),
                "ACCEPT_CONCURRENCY": str(concurrency), "ACCEPT_GRACE": str(grace)}  # fmt: skip
        if poll is not None:
            full["ACCEPT_POLL"] = str(poll)
        if tasks is not None:
            full["ACCEPT_TASKS"] = ",".join(tasks)
        return self.pool.start("-m", "tests.acceptance.worker_main", env=full | (env or {}))

    async def start_ready(self, timeout: float = 20.0, **options: Any) -> WorkerProcess:
        """Start a worker and wait until it logged ``ready`` (started and claiming)."""
        proc = self.start(**options)

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"worker exited with {proc.returncode}:\n{proc.tail()}")
            return any(e.pid == proc.pid for e in self.log.entries("ready"))

        await eventually(ready, timeout, interval=0.02, what=f"worker {proc.pid} to be ready")
        return proc


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "conveyor.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"  # db_path is absolute: sqlite:////tmp/...


@pytest.fixture
def log(tmp_path: Path) -> LineLog:
    return LineLog(tmp_path / "events.log")


@pytest.fixture
def workers(db_url: str, log: LineLog, worker_processes: WorkerProcesses) -> Workers:
    return Workers(db_url, log, worker_processes)


@pytest.fixture
async def producer(db_url: str) -> AsyncIterator[Conveyor]:
    """The test process's own `Conveyor` on the same file, with the same task registry."""
    app = make_app(db_url)
    await app.open()
    yield app
    await app.close()


async def final(app: Conveyor, job_id: str) -> Job | None:
    """The job once it is in a final state, else None (a predicate for `eventually`)."""
    job = await app.get(job_id)
    return job if job.status.is_final else None


async def completed_count(app: Conveyor, queue: str = "default") -> int:
    return (await app.stats([queue]))[queue].counts.get("completed", 0)


def query(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the database file directly (its own connection, closed at once)."""
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def elapsed_since(t0: float) -> float:
    return time.monotonic() - t0
