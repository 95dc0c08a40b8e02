"""One function per fault; each runs on a fresh store and returns the checker's `Report`
(`history`), with the fault's own figures in ``report.figures``."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from . import history
from .faults import faketime_prefix, restart
from .harness import Config, Reader, Run, kill_producer
from .records import read_records


async def kill9(cfg: Config) -> history.Report:
    """``cfg.workers`` workers; a random one is killed -9 every ``cfg.kill_every`` seconds and
    replaced, while a producer streams ``cfg.jobs`` jobs and until the queue is drained."""
    async with Run(cfg, "kill9") as run:
        for _ in range(cfg.workers):
            run.pool.start()
        prod = run.producer("--jobs", str(cfg.jobs), "--rate", str(cfg.rate),
                            "--max-ms", str(cfg.max_ms), "--seed", str(cfg.seed))  # fmt: skip
        t0 = time.monotonic()
        deadline = t0 + cfg.timeout
        next_kill = t0 + run.rnd.uniform(*cfg.kill_every)
        while time.monotonic() < deadline:
            run.keep_workers()
            now = time.monotonic()
            if now >= next_kill and run.pool.procs:
                run.pool.kill(run.rnd.choice(run.pool.procs))
                run.pool.start()
                next_kill = now + run.rnd.uniform(*cfg.kill_every)
            if not prod.alive() and await run.pending() == 0:
                break
            await asyncio.sleep(0.05)
        else:
            run.report.problems.append("kill9: the queue did not drain in time")
        if prod.popen.returncode not in (0, None):
            run.report.problems.append(f"producer exited {prod.popen.returncode}")
        run.report.figures["seconds"] = round(time.monotonic() - t0, 1)
        return await run.check()


async def restart_redis(cfg: Config) -> history.Report:
    """The server (Redis, or PostgreSQL: every server process) killed -9 and restarted
    ``cfg.restarts`` times while a producer streams jobs, the workers run them and an event
    reader follows the log; none of them is restarted."""
    assert cfg.server is not None
    async with Run(cfg, "restart") as run:
        for _ in range(cfg.workers):
            run.pool.start()
        # Faults hit running workers: one that starts during an outage exits (see bench/README.md)
        await _until(lambda: all(" started: " in p.output() for p in run.pool.procs), 60)
        reader = Reader(run.app)
        reader.start()
        try:
            prod = run.producer("--jobs", str(cfg.jobs), "--rate", str(cfg.rate),
                                "--max-ms", str(cfg.max_ms), "--seed", str(cfg.seed))  # fmt: skip
            span = cfg.jobs / cfg.rate
            downtimes = []
            await _until(lambda: any(r["k"] == "ack" for r in read_records(run.dir)), 60)
            t0 = time.monotonic()
            for k in range(cfg.restarts):
                await asyncio.sleep(
                    max(0.0, t0 + span * (k + 1) / (cfg.restarts + 1) - time.monotonic())
                )
                # on this thread: a test fixture's server dies with the thread that started it
                downtimes.append(round(restart(cfg.server, run.faults), 2))
            while prod.alive() and time.monotonic() < t0 + cfg.timeout:
                await asyncio.sleep(0.1)
            await run.drained(t0 + cfg.timeout, keep_alive=False)
            await asyncio.sleep(0.3)  # the reader catches up with the last events
        finally:  # never left running: the loop's shutdown would wait for it
            await reader.stop()
        h_restarts = history.build_history(read_records(run.dir)).faults.restarts
        run.report.problems += reader.problems(h_restarts)
        for p in run.pool.procs:
            if not p.alive():
                tail = " | ".join(p.output().splitlines()[-5:])
                run.report.problems.append(f"worker {p.pid} exited {p.popen.returncode}: {tail}")
        if prod.popen.returncode != 0:
            run.report.problems.append(f"producer exited {prod.popen.returncode}")
        run.report.figures |= {"restarts": len(h_restarts), "downtime_s": downtimes,
                               "events_read": len(reader.seen),
                               "reader_outages": reader.outages}  # fmt: skip
        return await run.check()


async def producer_kill(cfg: Config) -> history.Report:
    """SQLite: the producer process killed -9 mid-``enqueue_many`` ``cfg.producer_kills`` times;
    every batch it began is stored whole or not at all. Workers then run everything."""
    async with Run(cfg, "producer-kill") as run:
        mid = 0
        for k in range(cfg.producer_kills):
            prod = run.producer("--mode", "batches", "--batch-size", str(cfg.batch_size),
                                "--max-ms", "5", "--seed", str(cfg.seed + k))  # fmt: skip
            await _until(lambda p=prod: _began(run, p.pid) >= 1, 60)
            await asyncio.sleep(run.rnd.uniform(0.0, 0.3))
            kill_producer(prod)
            mid += _in_flight(run, prod.pid)
        for _ in range(cfg.workers):
            run.pool.start()
        await run.drained(time.monotonic() + cfg.timeout)
        _, payloads = await run.final()
        stored = Counter(str(p.get("b")) for p in payloads.values())
        run.report.problems += history.whole_batches(read_records(run.dir), stored)
        run.report.figures |= {"producer_kills": cfg.producer_kills, "killed_mid_call": mid,
                               "batches": sum(1 for r in read_records(run.dir) if r["k"] == "begin")}  # fmt: skip
        return await run.check()


def _began(run: Run, pid: int) -> int:
    return sum(
        1 for r in read_records(run.dir) if r["k"] == "begin" and r["b"].startswith(f"{pid}-")
    )


def _in_flight(run: Run, pid: int) -> int:
    """1 if the producer's last record is a ``begin`` (it died inside ``enqueue_many``)."""
    path = run.dir / f"producer-{pid}.jsonl"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return int(bool(lines) and b'"k":"begin"' in lines[-1])


async def _until(pred: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


async def graceful_stop(cfg: Config) -> history.Report:
    """SIGTERM a worker running ``cfg.stop_jobs`` jobs, half of them shorter than the grace
    period, half longer: the short ones finish, the long ones return to the queue with their
    attempt not charged, and the process exits within the grace period."""
    async with Run(cfg, "stop") as run:
        n = cfg.stop_jobs
        short = int(cfg.stop_grace * 1000 * 0.6)
        items = [{"task": "work", "payload": {"ms": short if i % 2 else cfg.stop_long_ms}}
                 for i in range(n)]  # fmt: skip
        ids = await run.enqueue(items)
        w = run.pool.start(concurrency=n)
        await _until(lambda: sum(1 for r in read_records(run.dir) if r["k"] == "start") >= n, 60)
        took = await asyncio.to_thread(run.pool.stop, w)
        jobs = [await run.app.get(i) for i in ids]
        back = [j for j in jobs if str(j.status) == "queued"]
        done = [j for j in jobs if str(j.status) == "completed"]
        charged = [j.id for j in back if j.attempt != 0]
        if len(back) + len(done) != n:
            run.report.problems.append(
                f"stop: {n - len(back) - len(done)} jobs neither finished nor returned"
            )
        if charged:
            run.report.problems.append(f"stop: returned jobs charged an attempt: {charged[:5]}")
        if took > cfg.stop_grace + 1.0:
            run.report.problems.append(f"stop: exit took {took:.2f}s, grace {cfg.stop_grace}s")
        run.report.figures |= {"active_at_sigterm": n, "finished": len(done),
                               "returned": len(back), "exit_s": round(took, 2),
                               "grace_s": cfg.stop_grace}  # fmt: skip
        run.pool.start(concurrency=n)  # runs the returned ones (their next attempt is 1)
        await run.drained(time.monotonic() + cfg.timeout)
        reruns = [r for r in read_records(run.dir) if r["k"] == "start" and r["pid"] != w.pid]
        if any(r["att"] != 1 for r in reruns):
            run.report.problems.append("stop: a returned job ran again as attempt > 1")
        return await run.check()


async def poison(cfg: Config) -> history.Report:
    """A job that kills its worker every time ends ``failed`` after ``max_stalls`` while
    ``cfg.poison_jobs`` other jobs complete; dead workers are replaced. Jobs a worker held when
    the poison killed it get a stall too, and then run alone, as the poison does: none may fail
    with it (``collateral_failed``)."""
    async with Run(cfg, "poison") as run:
        for _ in range(cfg.workers):
            run.pool.start(concurrency=cfg.poison_concurrency or cfg.concurrency)
        (bad,) = await run.enqueue([{"task": "poison", "payload": {}}])
        await run.enqueue([{"task": "work", "payload": {"ms": run.rnd.randint(0, cfg.poison_ms)}}
                           for _ in range(cfg.poison_jobs)])  # fmt: skip
        t0 = time.monotonic()
        await run.drained(t0 + cfg.timeout)
        job = await run.app.get(bad)
        runs = sum(1 for r in read_records(run.dir) if r["k"] == "start" and r["job"] == bad)
        if str(job.status) != "failed" or runs != cfg.max_stalls + 1:
            run.report.problems.append(
                f"poison: {job.status} after {runs} runs (max_stalls {cfg.max_stalls})"
            )
        final, _ = await run.final()
        collateral = sum(1 for i, f in final.items() if i != bad and f.status != "completed")
        run.report.figures |= {"poison_status": str(job.status), "poison_runs": runs,
                               "collateral_failed": collateral,
                               "max_stalls": cfg.max_stalls,
                               "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
        return await run.check(expect={bad: "failed"})


async def skew(cfg: Config, sign: int) -> history.Report:
    """One worker with the host clock and one whose clock is ``sign * cfg.skew`` seconds off
    (libfaketime): jobs a little longer than the lease's renewal interval and delayed jobs. No
    fault happens, so every duplicate execution is a stolen lease; no delayed job may start
    early."""
    off = sign * cfg.skew
    claim_skew = str(off) if cfg.backend == "sqlite" else "0"
    async with Run(cfg, f"skew{'+' if sign > 0 else '-'}") as run:
        run.pool.start()
        run.pool.start(
            prefix=faketime_prefix(off), CHAOS_SKEW=str(off), CHAOS_CLAIM_SKEW=claim_skew
        )
        n = cfg.skew_jobs
        long_ms = int(cfg.lease * 1000 * 0.8)
        items = [{"task": "work", "payload": {"ms": long_ms if i % 4 == 0 else 50},
                  "delay": 1.0 + cfg.lease * (i % 3) if i % 2 else None}
                 for i in range(n)]  # fmt: skip
        await run.enqueue(items)
        await run.drained(time.monotonic() + cfg.timeout, keep_alive=False)
        run.report.figures |= {"skew_s": off}
        return await run.check()


SCENARIOS: dict[str, Callable[[Config], Awaitable[history.Report]]] = {
    "kill9": kill9,
    "restart": lambda cfg: (
        restart_redis if cfg.backend in ("redis", "postgres") else producer_kill
    )(cfg),
    "stop": graceful_stop,
    "poison": poison,
    "skew+": lambda cfg: skew(cfg, +1),
    "skew-": lambda cfg: skew(cfg, -1),
}


def p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
