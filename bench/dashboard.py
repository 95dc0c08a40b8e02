"""Dashboard page times with a large SQLite store: ``python bench/dashboard.py [--jobs N]``.

1. Fills a fresh SQLite store with N jobs (default 1,000,000) by bulk insert in one transaction
   (the schema made by `Conveyor.open`; the rows as the backend would hold them after running:
   90% completed, 4% failed, 3% queued, 1% active, 1% scheduled, 1% awaiting; 8 queues, 40
   tasks, 200 tenants, batches of 1,000), the per-queue counters rebuilt to match, and 200,000
   events. Then ``ANALYZE``.
2. Serves the API and the dashboard (uvicorn on loopback, a thread of this process) and logs in
   with an admin key and a tenant key.
3. Times each page ``--repeat`` times (after one warm-up): the server's own time from the
   dashboard's ``Server-Timing`` header (``app;dur=``), and the client's wall time; prints
   median and max per page, as a table and as JSON (``--json``).
4. ``--latency N``: the delay from N enqueues to the dashboard stream's tick naming each job.
5. ``--churn R``: does it again while a producer/finisher thread completes R jobs/s in the same
   store (enqueue + claim + finish in batches of 500, through the backend), reporting the
   completions it reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server.harness import ApiServer  # noqa: E402

from conveyor import Conveyor  # noqa: E402
from conveyor.backends.base import ClaimParams, Outcome, OutcomeKind  # noqa: E402
from conveyor.server import ServerSettings  # noqa: E402

QUEUES = [f"q{i}" for i in range(8)]
TASKS = [f"task_{i}" for i in range(40)]
TENANTS = [f"tenant-{i}" for i in range(200)]
MIX = [("completed", 90), ("failed", 4), ("queued", 3), ("active", 1), ("scheduled", 1),
       ("awaiting", 1)]  # fmt: skip


def build_app(url: str) -> Conveyor:
    app = Conveyor(url)
    for t in TASKS:
        app.declare(t, queue=QUEUES[hash(t) % len(QUEUES)])
    return app


def fill(path: Path, n: int) -> dict[str, Any]:
    """Insert ``n`` jobs and 200k events; returns a few ids to look at."""
    asyncio.run(_schema(f"sqlite:///{path}"))
    rng = random.Random(1)
    statuses = [s for s, w in MIX for _ in range(w)]
    now = time.time()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    started = time.perf_counter()
    counts: dict[tuple[str, str], int] = {}
    sample: dict[str, Any] = {}

    def rows() -> Any:
        for i in range(n):
            task = TASKS[i % len(TASKS)]
            queue = QUEUES[hash(task) % len(QUEUES)]
            status = statuses[rng.randrange(100)]
            counts[(queue, status)] = counts.get((queue, status), 0) + 1
            created = now - (n - i) * 0.01
            jid = f"{int(created * 1000):012x}{0xBEEF:08x}{i & 0xFFFFFF:06x}"
            done = status in ("completed", "failed")
            error = '{"type":"RuntimeError","message":"boom","traceback":"..."}' if status == "failed" else None  # fmt: skip
            if i == n - 10:
                sample["job"] = jid
            yield (jid, queue, task, f'{{"record":"r-{i}","api_key":"k"}}', 5, status,
                   1, 3, 3, 30.0, '{"percent":100}' if done else None,
                   '{"ok":true}' if status == "completed" else None, error,
                   TENANTS[i % len(TENANTS)], f"batch-{i // 1000}", created,
                   created + 0.1 if status != "queued" else None,
                   created + 0.5 if done else None,
                   "worker-1" if status == "active" else None,
                   now + 3600 if status == "scheduled" else None)  # fmt: skip

    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO jobs (id, queue, task, payload, priority, status, attempt, max_attempts, "
        "max_stalls, lease, progress, result, error, tenant, batch, created_at, started_at, "
        "finished_at, worker, scheduled_for) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows(),
    )
    conn.execute("DELETE FROM counts")
    conn.executemany("INSERT INTO counts (queue, status, n) VALUES (?,?,?)",
                     [(q, s, c) for (q, s), c in counts.items()])  # fmt: skip
    jids = [r[0] for r in conn.execute("SELECT id, queue, task, tenant FROM jobs ORDER BY seq "
                                       "DESC LIMIT 20000")]  # fmt: skip
    kinds = ["enqueued", "started", *["progress"] * 7, "completed"]
    conn.executemany(
        "INSERT INTO events (type, job_id, queue, task, tenant, time, data) "
        "SELECT ?, id, queue, task, tenant, ?, NULL FROM jobs WHERE id = ?",
        ((t, now, j) for j in jids for t in kinds),
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    sample["seconds"] = time.perf_counter() - started
    sample["tenant"] = TENANTS[(n - 10) % len(TENANTS)]
    sample["batch"] = f"batch-{(n - 10) // 1000}"
    return sample


async def _schema(url: str) -> None:
    app = build_app(url)
    await app.open()
    await app.close()


def keys(url: str, tenant: str) -> tuple[str, str]:
    async def make() -> tuple[str, str]:
        app = build_app(url)
        _, admin = await app.api_keys.create(tenant=None, admin=True)
        _, mine = await app.api_keys.create(tenant=tenant)
        await app.close()
        return admin, mine

    return asyncio.run(make())


def login(base: str, key: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=30.0)
    form = c.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    r = c.post("/login", data={"key": key, "csrf": csrf[1]})
    assert r.status_code == 303, r.text
    return c


def time_pages(clients: dict[str, httpx.Client], pages: list[tuple[str, str]],
               repeat: int) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for who, path in pages:
        c = clients[who]
        c.get(path)  # warm-up
        server, wall = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = c.get(path)
            wall.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, (path, r.status_code, r.text[-300:])
            m = re.search(r"dur=([0-9.]+)", r.headers.get("server-timing", ""))
            server.append(float(m[1]) if m else float("nan"))
        out.append({"who": who, "page": path, "server_ms_median": statistics.median(server),
                    "server_ms_max": max(server), "wall_ms_median": statistics.median(wall)})  # fmt: skip
    return out


def churn(url: str, rate: int, stop: threading.Event, done: list[int]) -> None:
    """Enqueue, claim and complete ``rate`` jobs/s through the backend, until ``stop``."""

    async def run() -> None:
        app = build_app(url)
        await app.open()
        b = app.backend
        chunk = 500
        next_at = time.monotonic()
        while not stop.is_set():
            await app.enqueue_many([{"task": TASKS[0], "payload": {}}] * chunk)
            res = await b.claim_jobs(ClaimParams(worker="bench", queues=[QUEUES[hash(TASKS[0]) % len(QUEUES)]], limit=chunk))  # fmt: skip
            await b.finish_jobs("bench", [Outcome(j.id, j.token, OutcomeKind.COMPLETED, result=None)
                                          for j in res.jobs])  # fmt: skip
            done[0] += len(res.jobs)
            next_at += chunk / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await app.close()

    asyncio.run(run())


def tick_latency(url: str, client: httpx.Client, n: int) -> dict[str, float]:
    """Seconds from an enqueue's return to the dashboard stream's tick naming the job (what a
    page waits before it fetches its update): ``n`` jobs, 100 ms apart, from another thread."""
    sent: dict[str, float] = {}
    got: dict[str, float] = {}

    def produce() -> None:
        async def run() -> None:
            app = build_app(url)
            await app.open()
            for _ in range(n):
                job = await app.enqueue(TASKS[1], {}, delay=3600)
                sent[job.id] = time.perf_counter()
                await asyncio.sleep(0.1)
            await app.close()

        asyncio.run(run())

    with client.stream("GET", "/events", timeout=httpx.Timeout(30.0)) as r:
        producer = threading.Thread(target=produce, daemon=True)
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "ready":
                    producer.start()
            elif line.startswith("data:") and event == "tick":
                now = time.perf_counter()
                for jid in json.loads(line.split(":", 1)[1])["jobs"]:
                    got.setdefault(jid, now)
                if len([j for j in sent if j in got]) >= n:
                    break
    lat = sorted(got[j] - sent[j] for j in sent if j in got)
    return {"n": len(lat), "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "max_ms": lat[-1] * 1000}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--churn", type=int, default=0, metavar="JOBS_PER_S")
    ap.add_argument(
        "--latency",
        type=int,
        default=0,
        metavar="N",
        help="also time N enqueue -> stream tick delays",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-dash-bench-"))
    path = tmp / "bench.db"
    url = f"sqlite:///{path}"
    sample = fill(path, args.jobs)
    print(f"filled {args.jobs:,} jobs in {sample['seconds']:.1f} s ({path})", file=sys.stderr)
    admin, tenant = keys(url, sample["tenant"])
    srv = ApiServer(lambda: build_app(url), ServerSettings(secret="bench", rate_limit=None,
                                                           upload_dir=tmp / "up")).start()  # fmt: skip
    try:
        clients = {"admin": login(srv.url, admin), "tenant": login(srv.url, tenant)}
        job, batch = sample["job"], sample["batch"]
        pages = [("admin", "/jobs"), ("admin", "/jobs?status=failed"),
                 ("admin", f"/jobs?queue={QUEUES[0]}&status=queued"),
                 ("admin", f"/jobs?task={TASKS[3]}"), ("admin", f"/jobs?batch={batch}"),
                 ("admin", f"/jobs?id={job[:10]}"), ("admin", f"/jobs/{job}"),
                 ("admin", "/queues"), ("admin", "/workers"), ("admin", "/awaiting"),
                 ("admin", "/costs"), ("admin", f"/batches/{batch}"),
                 ("admin", "/jobs/bulk?action=retry&status=failed"),
                 ("admin", "/jobs?task=nope"), ("admin", "/jobs?queue=nope"),
                 ("admin", "/jobs/bulk?action=cancel&task=nope"),
                 ("tenant", "/jobs"), ("tenant", "/queues"), ("tenant", "/awaiting"),
                 ("tenant", f"/batches/{batch}")]  # fmt: skip
        results = {"jobs": args.jobs, "idle": time_pages(clients, pages, args.repeat)}
        if args.latency:
            results["tick_latency"] = tick_latency(url, clients["admin"], args.latency)
        if args.churn:
            stop, done = threading.Event(), [0]
            t = threading.Thread(target=churn, args=(url, args.churn, stop, done), daemon=True)
            t.start()
            time.sleep(2.0)  # let the churn reach its rate before timing
            start, before = time.monotonic(), done[0]
            results["churn"] = time_pages(clients, [*pages[:3], ("admin", "/queues")],
                                          args.repeat)  # fmt: skip
            results["churn_jobs_per_s"] = (done[0] - before) / (time.monotonic() - start)
            stop.set()
            t.join(timeout=30)
    finally:
        srv.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    if "tick_latency" in results:
        t = results["tick_latency"]
        print(
            f"\nenqueue -> stream tick ({t['n']} jobs): p50 {t['p50_ms']:.0f} ms, "
            f"p99 {t['p99_ms']:.0f} ms, max {t['max_ms']:.0f} ms"
        )
    for phase in ("idle", "churn"):
        if phase not in results:
            continue
        extra = (f" (completing {results['churn_jobs_per_s']:,.0f} jobs/s)"
                 if phase == "churn" else "")  # fmt: skip
        print(f"\n{phase}{extra}: server ms median / max, wall ms median")
        for r in results[phase]:
            print(
                f"  {r['who']:6} {r['page'][:58]:58} {r['server_ms_median']:7.1f} "
                f"{r['server_ms_max']:7.1f} {r['wall_ms_median']:7.1f}"
            )


if __name__ == "__main__":
    main()
