"""Fixtures for the acceptance tests: a fresh SQLite file per test, worker processes started from
`worker_main` (always killed at teardown), and the line log their handlers write.

Nothing here sleeps to "wait for" something: every wait polls a predicate against a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, Job
from tests.acceptance.apps import make_app
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]


def _pythonpath() -> str:
    """The repository (for ``tests.*``), then the caller's PYTHONPATH (a source tree under test)."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


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


class WorkerProc:
    """One worker process (its own session, so signals reach only it)."""

    def __init__(self, popen: subprocess.Popen[bytes], output: Path) -> None:
        self.popen = popen
        self.output = output

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and reap it: when this returns, the process is gone."""
        os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()

    async def wait_exit(self, timeout: float) -> int:
        """The exit code; fails the test if it is still running after ``timeout`` seconds."""
        try:
            return await asyncio.to_thread(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running {timeout}s later:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class Workers:
    """Starts worker processes on one database and kills whatever is left at teardown."""

    def __init__(self, url: str, log: LineLog, tmp: Path) -> None:
        self.url = url
        self.log = log
        self.tmp = tmp
        self.procs: list[WorkerProc] = []

    def start(
        self,
        *,
        concurrency: int = 4,
        grace: float = 30.0,
        poll: float | None = None,
        tasks: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> WorkerProc:
        full = dict(os.environ, CONVEYOR_URL=self.url, ACCEPT_LOG=str(self.log.path),
                    ACCEPT_CONCURRENCY=str(concurrency), ACCEPT_GRACE=str(grace),
                    PYTHONPATH=_pythonpath())  # fmt: skip
        if poll is not None:
            full["ACCEPT_POLL"] = str(poll)
        if tasks is not None:
            full["ACCEPT_TASKS"] = ",".join(tasks)
        full.update(env or {})
        output = self.tmp / f"worker-{len(self.procs)}.out"
        with output.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tests.acceptance.worker_main"],
                cwd=ROOT, env=full, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        proc = WorkerProc(popen, output)
        self.procs.append(proc)
        return proc

    async def start_ready(self, timeout: float = 20.0, **options: Any) -> WorkerProc:
        """Start a worker and wait until it logged ``ready`` (started and claiming)."""
        proc = self.start(**options)

        def ready() -> bool:
            if proc.popen.poll() is not None:
                pytest.fail(f"worker exited with {proc.popen.returncode}:\n{proc.tail()}")
            return any(e.pid == proc.pid for e in self.log.entries("ready"))

        await eventually(ready, timeout, interval=0.02, what=f"worker {proc.pid} to be ready")
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait()
        for proc in self.procs:  # shown by pytest when the test failed
            print(f"--- worker {proc.pid} (exit {proc.popen.returncode}) ---\n{proc.tail()}")


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
def workers(db_url: str, log: LineLog, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(db_url, log, tmp_path)
    try:
        yield pool
    finally:
        pool.cleanup()


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
