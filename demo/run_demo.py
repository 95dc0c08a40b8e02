"""`make demo`: ~50 enrichment jobs, two worker processes, a live progress bar, a summary."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
DB = ROOT / "demo.db"
os.environ.setdefault("CONVEYOR_URL", f"sqlite:///{DB}")
sys.path.insert(0, str(ROOT))

from demo.enrich_app import app  # noqa: E402

console = Console()
PRIORITIES = ["critical", "high", "normal", "low"]


def fresh_store() -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB}{suffix}").unlink(missing_ok=True)


async def main() -> int:
    rng = random.Random(7)
    items = []
    for i in range(50):
        fail = 1 if i % 6 == 0 else (2 if i % 17 == 0 else 0)
        items.append({"task": "enrich", "payload": {"record_id": f"rec-{i:03d}", "fail_times": fail},
                      "priority": rng.choice(PRIORITIES)})  # fmt: skip
    batch = await app.enqueue_many(items)
    console.print(f"enqueued {len(batch)} jobs (batch {batch.id}) into {DB.name}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor",
                "worker",
                "demo.enrich_app:app",
                "--concurrency",
                "8",
            ],
            cwd=ROOT,
            env=env,
        )
        for _ in range(2)
    ]
    console.print(f"started 2 worker processes: pids {[w.pid for w in workers]}")
    start = time.monotonic()
    columns = (TextColumn("[bold]enrichment"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
               TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        t = bar.add_task("jobs", total=len(batch), counts="")
        while True:
            st = await batch.status()
            counts = " ".join(f"{k}={v}" for k, v in sorted(st.counts.items()))
            bar.update(t, completed=st.done, counts=counts)
            if st.finished:
                break
            if time.monotonic() - start > 60:
                console.print("[red]demo did not finish within 60 s[/red]")
                break
            await asyncio.sleep(0.1)
    wall = time.monotonic() - start
    for w in workers:
        w.send_signal(signal.SIGTERM)
    codes = [w.wait(timeout=30) for w in workers]

    events = [e async for e in app.events(since=0, follow=False)]
    retries = sum(1 for e in events if e.type.value == "retrying")
    starts = [e for e in events if e.type.value == "started"]
    page = await app.list(batch=batch.id, limit=100)
    jobs = {j.id: j for j in page.jobs}
    order = [jobs[e.job_id].priority for e in starts if e.job_id in jobs]
    states = Counter(j.status.value for j in jobs.values())
    runs = [j.finished_at - j.started_at for j in jobs.values() if j.finished_at and j.started_at]
    by_worker = Counter(j.worker for j in jobs.values())

    table = Table(title="conveyor demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("jobs", str(len(jobs)))
    for state, n in sorted(states.items()):
        table.add_row(state, str(n))
    table.add_row("retries after transient failures", str(retries))
    table.add_row("average run time (last attempt)", f"{sum(runs) / max(1, len(runs)):.2f} s")
    table.add_row("wall time", f"{wall:.1f} s")
    table.add_row("jobs per worker process", ", ".join(str(n) for n in by_worker.values()))
    first16 = " ".join(str(p) for p in order[:16])
    table.add_row("priorities of the first 16 starts", first16)
    table.add_row("worker exit codes (SIGTERM)", ", ".join(map(str, codes)))
    console.print(table)
    await app.close()
    ok = states.get("completed", 0) == len(jobs) and all(c == 0 for c in codes)
    return 0 if ok else 1


if __name__ == "__main__":
    fresh_store()
    sys.exit(asyncio.run(main()))
