"""What every scenario does around its fault: a fresh store, the harness's own app (enqueues with
acknowledgement records, the event reader, waiting for the queue to drain, the final state of
every job) and the check at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor import BackendUnavailable, Conveyor

from . import history
from .app import QUEUE
from .faults import FaultLog, Pool, Proc, Server, child_env
from .records import RecordFile, read_records

PENDING = ("queued", "scheduled", "active", "awaiting")
STOP_TIMEOUT = 5.0  # seconds `Reader.stop` waits for the reader to end


@dataclass
class Config:
    """One run's settings; `scenarios` scales them per fault."""

    backend: str  # sqlite | redis | postgres
    workdir: Path
    server: Server | None = None  # redis, postgres
    jobs: int = 20_000
    workers: int = 4
    concurrency: int = 25
    lease: float = 2.0
    rate: float = 400.0  # jobs per second from the producer
    max_ms: int = 200
    kill_every: tuple[float, float] = (1.0, 2.0)
    restarts: int = 2
    producer_kills: int = 5
    batch_size: int = 2000
    stop_jobs: int = 100
    stop_grace: float = 3.0
    stop_long_ms: int = 30_000
    poison_jobs: int = 1000
    poison_concurrency: int = 0  # 0: ``concurrency``
    poison_ms: int = 50  # the other jobs run 0-50 ms
    max_stalls: int = 3  # the poison job's: it fails after this many stalls
    # The other jobs': the random kill -9 of the kill9 scenario (one every 1-2 s) also stalls
    # the jobs it hits, and a job unlucky enough to be hit max_stalls + 1 times would end
    # failed by the rule meant for poison; kill9 measures loss, not that rule (poison does).
    work_max_stalls: int = 20
    skew: float = 300.0
    skew_jobs: int = 200
    timeout: float = 600.0  # per scenario: waiting for the queue to drain
    seed: int = 1
    limits: history.Limits = field(default_factory=history.Limits)


class Run:
    """One scenario's directory, store, fault log, worker pool and harness app."""

    def __init__(self, cfg: Config, name: str, **worker_env: str) -> None:
        self.cfg = cfg
        self.name = name
        self.dir = cfg.workdir / f"{cfg.backend}-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        if cfg.backend == "sqlite":
            self.url = f"sqlite:///{self.dir / 'chaos.db'}"
        elif cfg.backend == "postgres":
            assert cfg.server is not None
            self.url = f"{cfg.server.url}?schema=chaos_{name.replace('+', 'p').replace('-', 'm')}_{os.getpid()}"
        else:
            assert cfg.server is not None
            self.url = f"{cfg.server.url}?prefix=chaos-{name}-{os.getpid()}"
        self.env = {
            "CHAOS_LEASE": str(cfg.lease),
            "CHAOS_MAX_STALLS": str(cfg.max_stalls),
            "CHAOS_WORK_MAX_STALLS": str(cfg.work_max_stalls),
        }
        self.env |= worker_env
        self.faults = FaultLog(self.dir)
        self.pool = Pool(self.url, self.dir, self.faults, concurrency=cfg.concurrency,
                         grace=cfg.stop_grace, env=self.env)  # fmt: skip
        self.app = Conveyor(self.url)
        # The worker app's tasks, with this run's options
        stalls = {"work": cfg.work_max_stalls, "poison": cfg.max_stalls}
        for task, max_stalls in stalls.items():
            self.app.declare(task, queue=QUEUE, lease=cfg.lease, max_stalls=max_stalls)
        self._acks = RecordFile(self.dir / f"harness-{os.getpid()}.jsonl")
        self.rnd = random.Random(cfg.seed)
        self.report = history.Report()

    async def __aenter__(self) -> Run:
        await self.app.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.pool.close()
        await self.app.close()

    def producer(self, *args: str) -> Proc:
        argv = [sys.executable, "-m", "bench.chaos.producer", "--dir", str(self.dir), *args]
        log = self.dir / "logs" / f"producer-{time.monotonic_ns()}.log"
        return Proc(argv, child_env(self.url, self.dir, **self.env), log)

    async def enqueue(self, items: list[dict[str, Any]]) -> list[str]:
        """``enqueue_many`` from the harness, with acknowledgement records."""
        called = time.time()
        batch = await self.app.enqueue_many(items)
        done = time.time()
        self._acks.write_many(
            [
                {
                    "k": "ack",
                    "job": j,
                    "q": QUEUE,
                    "p": it.get("priority", 5),
                    "due": called + (it.get("delay") or 0),
                    "t": done,
                }
                for j, it in zip(batch.ids, items, strict=True)
            ]
        )
        return batch.ids

    async def pending(self) -> int | None:
        try:
            stats = await self.app.stats([QUEUE])
        except (BackendUnavailable, OSError):
            return None
        counts = stats[QUEUE].counts if QUEUE in stats else {}
        return sum(counts.get(s, 0) for s in PENDING)

    async def drained(self, deadline: float, *, keep_alive: bool = True) -> bool:
        """Wait until nothing of the queue is pending; replaces dead workers meanwhile."""
        while time.monotonic() < deadline:
            if keep_alive:
                self.keep_workers()
            if await self.pending() == 0:
                return True
            await asyncio.sleep(0.1)
        self.report.problems.append(f"{self.name}: the queue did not drain in time")
        return False

    def keep_workers(self) -> None:
        """Replaces the workers that died on their own (the poison's)."""
        for p in self.pool.reap():
            self.pool.start(concurrency=p.concurrency)

    async def final(self) -> tuple[dict[str, history.Final], dict[str, dict[str, Any]]]:
        """Every job of the queue as the backend holds it: states and payloads."""
        out: dict[str, history.Final] = {}
        payloads: dict[str, dict[str, Any]] = {}
        cursor = None
        while True:
            page = await self.app.list(queue=QUEUE, limit=1000, cursor=cursor)
            for j in page.jobs:
                out[j.id] = history.Final(
                    str(j.status), j.token, j.attempt, j.stalls, j.scheduled_for
                )
                payloads[j.id] = j.payload
            cursor = page.next_cursor
            if not cursor:
                return out, payloads

    async def check(self, expect: dict[str, str] | None = None) -> history.Report:
        final, _ = await self.final()
        h = history.build_history(read_records(self.dir))
        rep = history.check(h, final, expect=expect, limits=self.cfg.limits)
        rep.problems += self.report.problems
        rep.figures.update(self.report.figures)
        rep.figures["kills"] = len(h.faults.kills)
        errors = self.pool.errors()
        rep.figures["worker_error_lines"] = len(errors)
        rep.problems += errors[:10]
        return rep


@dataclass
class Reader:
    """An event reader that rides out outages by resuming from its last cursor."""

    app: Conveyor
    seen: list[float] = field(default_factory=list)  # wall time each event was read
    cursors: Counter[str] = field(default_factory=Counter)
    outages: int = 0
    errors: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        cursor: str | None = None
        while cursor is None:
            try:
                cursor = await self.app.backend.last_event_cursor()
            except (BackendUnavailable, OSError):
                await asyncio.sleep(0.1)
        while True:
            try:
                async for ev in self.app.events(since=cursor, poll=0.05):
                    cursor = ev.cursor
                    self.cursors[ev.cursor] += 1
                    self.seen.append(time.time())
            except (BackendUnavailable, OSError):
                self.outages += 1
                await asyncio.sleep(0.1)
            except Exception as exc:  # a cursor error: reported, and the read goes on
                self.errors.append(repr(exc)[:300])
                await asyncio.sleep(0.1)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Cancel the reader and wait for it, at most ``timeout`` seconds: a reader that does
        not end is a problem of the run (a backend call that swallowed the cancel once hung the
        short run until pytest's timeout), cancelled again while waiting."""
        task = self._task
        if task is None or task.done():
            return
        deadline = time.monotonic() + timeout
        while not task.done() and time.monotonic() < deadline:
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
        if not task.done():
            self.errors.append(f"did not stop within {timeout:g}s of being cancelled")
            return
        with contextlib.suppress(asyncio.CancelledError):
            exc = task.exception()
            if exc is not None:
                self.errors.append(f"ended with {exc!r}"[:300])

    def problems(self, restarts: list[tuple[float, float]]) -> list[str]:
        out = [f"event reader: {e}" for e in self.errors]
        out += [f"event cursor read twice: {c}" for c, n in self.cursors.items() if n > 1][:5]
        for _, t1 in restarts:
            if not any(t > t1 for t in self.seen):
                out.append(f"event reader saw no event after the restart ending at {t1:.3f}")
        return out


def kill_producer(p: Proc) -> float:
    """SIGKILL a producer; returns the kill time."""
    t = p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.popen.wait(1)
    return t
