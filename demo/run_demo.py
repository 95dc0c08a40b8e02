"""`make demo`: ~50 enrichment jobs on SQLite, two worker processes, a live progress bar, a summary.

1. Remove the old demo store and enqueue 50 jobs in one `enqueue_many` call: mixed priorities,
   11 of them failing their first one or two attempts.
2. Start two ``python -m conveyor worker demo.enrich_app:app --concurrency 8`` processes.
3. Follow the batch (`Batch.status()`: counts, percent, ETA) with a live progress bar.
4. Stop the workers with SIGTERM (they exit 0) and print what happened, read back from the jobs
   and the durable event log. Exit 0 only if every job completed and both workers exited 0.

Meanwhile the HTTP API of the app is served in this process (`demo/api.py`: 127.0.0.1:8000, or a
free port when 8000 is taken) with a demo admin key, both printed; the demo reads its health and
stats through it before it stops. Its dashboard serves the batch's progress page: the demo prints
a read-only link to it (no login) right after enqueueing, waits ``DEMO_WAIT`` seconds (5 at a
terminal, 0 otherwise) so that it can be opened before the workers start, and checks at the end
that the page reads 100%.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.setdefault("CONVEYOR_URL", f"sqlite:///{ROOT / 'demo.db'}")
# The demo starts from an empty store when it is a SQLite file; elsewhere (e.g. Redis) it only
# looks at its own batch.
DB = Path(URL.removeprefix("sqlite:///").split("?")[0]) if URL.startswith("sqlite:///") else None
sys.path.insert(0, str(ROOT))

from demo.api import DemoApi, serve_api  # noqa: E402
from demo.enrich_app import app  # noqa: E402

console = Console()
PRIORITIES = {"critical": 20, "high": 10, "normal": 5, "low": 1}
JOBS, WORKERS, CONCURRENCY, DEADLINE = 50, 2, 8, 25.0
# Seconds between printing the batch page's link and starting the workers, so that the page can
# be opened first: 5 at a terminal, 0 otherwise (CI); DEMO_WAIT overrides it.
WAIT = float(os.environ.get("DEMO_WAIT", "5" if sys.stdout.isatty() else "0"))
LABELS = {"active": "running", "scheduled": "backing off before a retry"}


def fresh_store() -> None:
    if DB is None:
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(f"{DB}.wake", ignore_errors=True)


def items() -> list[dict[str, object]]:
    rng = random.Random(7)
    out = []
    for i in range(JOBS):
        fail = 2 if i in (17, 34) else 1 if i % 6 == 0 else 0  # 11 flaky records
        out.append({"task": "enrich", "payload": {"record_id": f"rec-{i:03d}", "fail_times": fail},
                    "priority": rng.choice(list(PRIORITIES))})  # fmt: skip
    return out


def start_workers(log: Path) -> list[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "conveyor", "worker", "demo.enrich_app:app",
           "--concurrency", str(CONCURRENCY)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))  # fmt: skip
    with log.open("ab") as f:  # the children keep their own handles
        return [subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=f) for _ in range(WORKERS)]


async def follow(batch_len: int, batch: object) -> float:
    start = time.monotonic()
    columns = (TextColumn("[bold]enriching"), BarColumn(bar_width=20),
               TextColumn("{task.completed:.0f}/{task.total:.0f} done"),
               TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
               TextColumn("ETA {task.fields[eta]}"))  # fmt: skip
    with Progress(*columns, console=console) as bar:
        t = bar.add_task("jobs", total=batch_len, counts="", eta="-")
        while time.monotonic() - start < DEADLINE:
            st = await batch.status()  # type: ignore[attr-defined]
            counts = " ".join(f"{v} {LABELS.get(k, k)}" for k, v in sorted(st.counts.items())
                              if v and k not in ("completed", "queued"))  # fmt: skip
            eta = "-" if st.eta is None else f"{st.eta:.1f}s"
            bar.update(t, completed=st.done, counts=counts, eta=eta)
            if st.finished:
                break
            await asyncio.sleep(0.1)
        else:
            console.print(f"[red]the batch did not finish within {DEADLINE:.0f} s[/red]")
    return time.monotonic() - start


async def summary(batch_id: str, wall: float, codes: list[int]) -> bool:
    jobs = {j.id: j for j in (await app.list(batch=batch_id, limit=1000)).jobs}
    events = [e async for e in app.events(since="0", follow=False)]
    retries = [e for e in events if e.type.value == "retrying" and e.job_id in jobs]
    first_start: dict[str, float] = {}
    for e in events:  # oldest first
        if e.type.value == "started" and e.job_id in jobs:
            first_start.setdefault(e.job_id, e.time)
    rank = {jid: i + 1 for i, jid in enumerate(sorted(first_start, key=first_start.__getitem__))}
    states = Counter(j.status.value for j in jobs.values())
    runs = [j.finished_at - j.started_at for j in jobs.values() if j.finished_at and j.started_at]

    t = Table(title="conveyor demo: what happened", title_justify="left", show_header=False)
    t.add_column()
    t.add_column(justify="right")
    t.add_row("jobs", str(len(jobs)))
    for state in ("completed", "failed", "cancelled", "queued", "scheduled", "active"):
        if states.get(state) or state in ("completed", "failed"):
            t.add_row(f"  {state}", str(states.get(state, 0)))
    t.add_row("retries after transient failures", f"{len(retries)} (of {len({e.job_id for e in retries})} jobs)")  # fmt: skip
    t.add_row("jobs that needed 2+ attempts", str(sum(1 for j in jobs.values() if j.attempt > 1)))
    t.add_row("average run time (final attempt)", f"{mean(runs):.2f} s" if runs else "-")
    t.add_row("wall time", f"{wall:.1f} s")
    per_worker = Counter(j.worker for j in jobs.values())
    t.add_row("jobs per worker process", " / ".join(str(n) for n in per_worker.values()))
    t.add_row("worker exit codes after SIGTERM", " / ".join(map(str, codes)))
    console.print(t)

    # Evidence for priorities: all 50 were queued before the workers started, so jobs should start
    # highest priority first (retries come back later, after their backoff).
    p = Table(title="priority order: first start of each job", title_justify="left")
    for col in ("priority", "jobs", "start positions", "average wait before start"):
        p.add_column(col, justify="right" if col != "priority" else "left")
    by_prio: dict[int, list[str]] = defaultdict(list)
    for j in jobs.values():
        by_prio[j.priority].append(j.id)
    for name, value in PRIORITIES.items():
        ids = [i for i in by_prio.get(value, []) if i in rank]
        if not ids:
            continue
        pos = sorted(rank[i] for i in ids)
        wait = mean(first_start[i] - jobs[i].created_at for i in ids)
        p.add_row(f"{name} ({value})", str(len(ids)), f"{pos[0]}-{pos[-1]}", f"{wait:.2f} s")
    console.print(p)
    return states.get("completed", 0) == len(jobs) == JOBS and codes == [0] * WORKERS


async def main() -> int:
    fresh_store()
    async with serve_api(app) as api:
        announce(api)
        ok, batch_id = await run(api)
        api_ok = await check_api(api, batch_id)
    await app.close()
    ok = ok and api_ok
    console.print("[green]demo OK[/green]" if ok else "[red]demo FAILED[/red]")
    return 0 if ok else 1


def announce(api: DemoApi | None) -> None:
    if api is None:
        console.print("(the HTTP API is not served: pip install 'conveyor[server]')")
        return
    console.print(f"HTTP API: {api.url} (docs {api.url}/docs), demo admin key: {api.key}\n"
                  f"  dashboard: {api.url}/ (log in with the demo admin key)\n"
                  f"  try: curl -H 'Authorization: Bearer {api.key}' {api.url}/v1/stats",
                  soft_wrap=True, highlight=False)  # fmt: skip


async def check_api(api: DemoApi | None, batch_id: str) -> bool:
    if api is None:
        return True
    try:
        line = await api.check()
        page = await api.check_batch_page(batch_id)
    except Exception as exc:
        console.print(f"[red]the HTTP API did not answer: {escape(repr(exc))}[/red]")
        return False
    console.print(line, highlight=False)
    console.print(page, highlight=False)
    return "healthy=True" in line and ": 200, 100% done" in page


async def run(api: DemoApi | None) -> tuple[bool, str]:
    batch = await app.enqueue_many(items())
    console.print(f"enqueued {len(batch)} jobs in one call into {URL}", soft_wrap=True)
    if api is not None:
        console.print(f"batch progress page (read-only link, no login): {api.batch_link(batch.id)}",
                      soft_wrap=True, highlight=False)  # fmt: skip
        if WAIT > 0:  # time to open the link before the workers start
            console.print(f"workers start in {WAIT:g} s (DEMO_WAIT=0 to skip)")
            await asyncio.sleep(WAIT)
    logdir = Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    workers = start_workers(logdir / "workers.log")
    console.print(f"started {WORKERS} x python -m conveyor worker demo.enrich_app:app "
                  f"--concurrency {CONCURRENCY}", soft_wrap=True)  # fmt: skip
    try:
        wall = await follow(len(batch), batch)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        codes = []
        for w in workers:
            try:
                codes.append(w.wait(timeout=15))
            except subprocess.TimeoutExpired:
                w.kill()
                codes.append(w.wait())
    console.print(escape((logdir / "workers.log").read_text().strip()), style="dim", soft_wrap=True)
    shutil.rmtree(logdir, ignore_errors=True)
    return await summary(batch.id, wall, codes), batch.id


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
