"""The ``lateness`` workload: how long after its due time a scheduled job starts.

One worker process (``python -m bench.worker``, idle between jobs, free slots) and the driver as
producer. After 5 warm-up jobs and 0.5 s idle, ``n`` items 20 ms apart, alternating:

- a delayed job (``app.enqueue("due", delay=d)``): due at the backend's ``scheduled_for``;
- a job that fails once with ``Retry(after=d)`` (``flaky``): due ``d`` after the handler raised
  (what a user sees; it includes acknowledging the failure);

with ``d`` uniform in 50 to 150 ms. Every other pair also gets a ``busy`` job that ends about 2 ms
before the due time, so the due time comes right after the worker finished another job.
Lateness = the handler's first instruction - the due time (wall clock; same machine). Reported:
``p50_ms``/``p99_ms``/``max_ms``/``mean_ms``/``min_ms`` over all items, and p50/p99 per kind
(``delayed``, ``retry``) and per situation (``after_busy``, ``idle``).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from bench.common import LAT_FILE, make_app, pct
from bench.procs import WorkerProc, scan_log

SPACING = 0.02
DELAY = (0.05, 0.15)
BUSY_MARGIN = 0.002  # a busy job ends this long before the due time


def _lines() -> list[list[str]]:
    return [ln.split() for ln in Path(LAT_FILE).read_text().splitlines() if ln.strip()]


async def _wait_lines(kind: str, count: int, deadline: float, alive: Any) -> bool:
    while sum(1 for ln in _lines() if ln[0] == kind) < count:
        if time.perf_counter() > deadline or not alive():
            return False
        await asyncio.sleep(0.005)
    return True


def _summary(vals_ms: list[float]) -> dict[str, float]:
    v = sorted(vals_ms)
    return {"p50_ms": round(pct(v, 50), 2), "p99_ms": round(pct(v, 99), 2),
            "max_ms": round(v[-1], 2)}  # fmt: skip


async def lateness(args: Any, res: dict) -> None:
    Path(LAT_FILE).write_text("")
    app = make_app()
    await app.open()
    res["setting"] = (
        f"python -m bench.worker --concurrency {args.concurrency} (one process); delayed jobs "
        f"and retries due {DELAY[0] * 1000:.0f}-{DELAY[1] * 1000:.0f} ms later, "
        f"{SPACING * 1000:.0f} ms apart, half right after a busy job ends"
    )
    w = WorkerProc(args.concurrency, args.workload)
    deadline = w.t_spawn + args.timeout
    try:
        for i in range(5):
            await app.enqueue("due")
            if not await _wait_lines("D", i + 1, deadline, w.alive):
                res["status"] = "error"
                res["note"] += "warm-up job never ran; "
                return
            if i == 0:
                res["startup_s"] = round(time.perf_counter() - w.t_spawn, 3)
        await asyncio.sleep(0.5)  # let the worker go idle
        Path(LAT_FILE).write_text("")
        rng = random.Random(7)
        due: dict[str, float] = {}  # delayed job id -> due time
        tags: dict[str, tuple[str, bool]] = {}  # job id -> (kind, after a busy job)
        for i in range(args.n):
            d = rng.uniform(*DELAY)
            after_busy = i % 4 >= 2
            if i % 2 == 0:
                job = await app.enqueue("due", delay=d)
                assert job.scheduled_for is not None
                due[job.id] = job.scheduled_for
                tags[job.id] = ("delayed", after_busy)
            else:
                job = await app.enqueue("flaky", {"after": d})
                tags[job.id] = ("retry", after_busy)
            if after_busy:
                await app.enqueue("busy", {"seconds": d - BUSY_MARGIN})
            await asyncio.sleep(SPACING)
        n_delayed = sum(1 for k, _ in tags.values() if k == "delayed")
        end = time.perf_counter() + 10
        ok = await _wait_lines("D", n_delayed, end, w.alive)
        ok = ok and await _wait_lines("R", args.n - n_delayed, end, w.alive)
        if not ok:
            res["status"] = "error"
            res["note"] += "not every scheduled job ran within 10 s; "
    finally:
        w.stop()
        scan_log(w, res)
        await app.close()
    for kind, job_id, t in _lines():
        if kind == "F":
            due[job_id] = float(t)
    late: dict[str, float] = {}
    for kind, job_id, t in _lines():
        if kind in ("D", "R") and job_id in due:
            late[job_id] = (float(t) - due[job_id]) * 1000.0
    if not late:
        res["status"] = "error"
        return
    res.update(_summary(list(late.values())))
    res["mean_ms"] = round(sum(late.values()) / len(late), 2)
    res["min_ms"] = round(min(late.values()), 2)
    res["measured_jobs"] = len(late)
    groups = {
        "delayed": [v for j, v in late.items() if tags[j][0] == "delayed"],
        "retry": [v for j, v in late.items() if tags[j][0] == "retry"],
        "after_busy": [v for j, v in late.items() if tags[j][1]],
        "idle": [v for j, v in late.items() if not tags[j][1]],
    }
    res["lateness"] = {k: _summary(v) for k, v in groups.items() if v}
    if len(late) != args.n:
        res["note"] += f"{len(late)} lateness records for {args.n} items; "
        res["status"] = "error"
