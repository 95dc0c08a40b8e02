"""The ``conveyor`` command line: run workers, enqueue, inspect and steer jobs.

Every command takes ``--url`` (or ``$CONVEYOR_URL``; default ``sqlite:///conveyor.db``). Commands
that need the task handlers (``worker``, ``enqueue``) take an APP, ``module:attribute`` naming a
`Conveyor` instance. Read commands print tables, or JSON with ``--json``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .app import Conveyor
from .errors import ConveyorError, JobCancelled, JobFailed
from .job import JobState

T = TypeVar("T")
# Pipes and files get wide, unwrapped tables (ids are 26 characters).
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


def load_app(spec: str) -> Conveyor:
    """Import ``module:attribute`` (the cwd is importable) and return the Conveyor it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{spec!r}: expected module:attribute, e.g. myapp:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, Conveyor):
        raise click.BadParameter(f"{spec!r} is not a conveyor.Conveyor instance")
    return app


def _app(ctx: click.Context) -> Conveyor:
    obj = ctx.obj
    if obj.get("app_spec"):
        return load_app(obj["app_spec"])
    return Conveyor(obj["url"])


def _run(
    ctx: click.Context, fn: Callable[[Conveyor], Awaitable[T]], app: Conveyor | None = None
) -> T:
    async def main(app: Conveyor) -> T:
        try:
            return await fn(app)
        finally:
            await app.close()

    try:
        return asyncio.run(main(app or _app(ctx)))
    except ConveyorError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2 if isinstance(exc, ValueError | KeyError) else 1)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group()
@click.option("--url", envvar="CONVEYOR_URL", default="sqlite:///conveyor.db", show_default=True,
              help="Backend URL (also $CONVEYOR_URL).")  # fmt: skip
@click.option("--app", "app_spec", envvar="CONVEYOR_APP", default=None,
              help="module:attribute of your Conveyor app (also $CONVEYOR_APP).")  # fmt: skip
@click.option("--log-level", default="WARNING", show_default=True)
@click.pass_context
def main(ctx: click.Context, url: str, app_spec: str | None, log_level: str) -> None:
    """conveyor: a Python job queue."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ctx.obj = {"url": url, "app_spec": app_spec}


@main.command()
@click.argument("app_spec", metavar="APP")
@click.option("--concurrency", "-c", default=10, show_default=True, type=int)
@click.option("--queues", "-q", default=None, help="Comma-separated queues (default: the app's).")
@click.option("--shutdown-grace", default=30.0, show_default=True, type=float,
              help="Seconds active jobs get to finish on SIGTERM.")  # fmt: skip
@click.pass_context
def worker(ctx: click.Context, app_spec: str, concurrency: int, queues: str | None,
           shutdown_grace: float) -> None:  # fmt: skip
    """Run a worker for APP (module:attribute) until SIGTERM/SIGINT."""
    try:
        app = load_app(app_spec)
    except ConveyorError as exc:
        raise click.UsageError(str(exc)) from None
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None

    async def run(app: Conveyor) -> None:
        w = app.worker(concurrency=concurrency, queues=names, shutdown_grace=shutdown_grace)
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task[None]] = []

        def on_signal() -> None:
            if not stopping:
                err.print("[yellow]conveyor: stopping (finishing active jobs)…[/yellow]")
                stopping.append(asyncio.ensure_future(w.stop()))
            else:  # a second signal: no more grace
                w.shutdown_grace = 0
                for r in list(w.running.values()):
                    if r.task is not None:
                        r.task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await w.start()
        err.print(f"conveyor worker {w.id}: queues={','.join(w.queues)} concurrency={concurrency} "
                  f"url={app.url}")  # fmt: skip
        await w._stopped.wait()
        if stopping:
            await stopping[0]

    _run(ctx, run, app)


@main.command()
@click.argument("task")
@click.option("--payload", default="{}", help="JSON object of the task's arguments.")
@click.option("--priority", default=None, help="critical/high/normal/low or 0-100.")
@click.option("--delay", default=None, type=float, help="Seconds before it may run.")
@click.option("--idempotency-key", default=None)
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def enqueue(ctx: click.Context, task: str, payload: str, priority: str | None, delay: float | None,
            idempotency_key: str | None, tenant: str | None, as_json: bool) -> None:  # fmt: skip
    """Enqueue a job for TASK (needs --app to validate the payload)."""
    if not ctx.obj.get("app_spec"):
        raise click.UsageError("enqueue needs the app to validate the payload: pass --app "
                               "module:attribute or set CONVEYOR_APP")  # fmt: skip
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    prio: int | str | None = int(priority) if priority and priority.isdigit() else priority

    async def go(app: Conveyor) -> None:
        job = await app.enqueue(task, data, priority=prio, delay=delay,
                                idempotency_key=idempotency_key, tenant=tenant)  # fmt: skip
        _print_json(job.to_dict()) if as_json else click.echo(job.id)

    _run(ctx, go)


def _job_table(jobs: list[Any]) -> Table:
    t = Table()
    for col in ("id", "task", "queue", "status", "prio", "attempt", "progress", "error"):
        t.add_column(col, no_wrap=col != "error", min_width=26 if col == "id" else None)
    for j in jobs:
        pct = j.progress.percent
        prog = "" if pct is None else f"{pct:.0f}% {j.progress.message or ''}"
        error = (j.error or {}).get("message", "") if j.error else ""
        t.add_row(j.id, j.task, j.queue, j.status.value, str(j.priority),
                  f"{j.attempt}/{j.max_attempts}", prog, error[:60])  # fmt: skip
    return t


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job."""

    async def go(app: Conveyor) -> None:
        job = await app.get(job_id)
        _print_json(job.to_dict()) if as_json else out.print(_job_table([job]))

    _run(ctx, go)


@main.command("list")
@click.option("--status", "state", default=None)
@click.option("--queue", default=None)
@click.option("--task", default=None)
@click.option("--batch", default=None)
@click.option("--limit", default=50, show_default=True, type=int)
@click.option("--cursor", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_(ctx: click.Context, state: str | None, queue: str | None, task: str | None,
          batch: str | None, limit: int, cursor: str | None, as_json: bool) -> None:  # fmt: skip
    """List jobs, newest first."""

    async def go(app: Conveyor) -> None:
        page = await app.list(status=state, queue=queue, task=task, batch=batch, limit=limit,
                              cursor=cursor)  # fmt: skip
        if as_json:
            _print_json({"jobs": [j.to_dict() for j in page.jobs], "next_cursor": page.next_cursor})
        else:
            out.print(_job_table(page.jobs))
            if page.next_cursor:
                out.print(f"more: --cursor {page.next_cursor}")

    _run(ctx, go)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Per-queue counts by state, workers, run time and throughput."""

    async def go(app: Conveyor) -> None:
        st = await app.stats()
        if as_json:
            _print_json({q: s.to_dict() for q, s in st.items()})
            return
        t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        t.add_column("queue", no_wrap=True)
        short = {"scheduled": "sched", "awaiting": "await", "completed": "done",
                 "cancelled": "cancel"}  # fmt: skip
        for state in JobState:
            name = short.get(state.value, state.value)
            t.add_column(name, justify="right", min_width=len(name))
        for col in ("workers", "busy", "avg s", "jobs/s"):
            t.add_column(col, justify="right", min_width=len(col))
        for q, s in st.items():
            avg = "" if s.avg_run_seconds is None else f"{s.avg_run_seconds:.3f}"
            t.add_row(q, *(str(s.counts.get(x.value, 0)) for x in JobState), str(s.workers),
                      f"{s.active}/{s.concurrency}", avg, f"{s.throughput_per_s:.1f}")  # fmt: skip
        out.print(t)

    _run(ctx, go)


@main.command()
@click.argument("job_id")
@click.pass_context
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a job."""

    async def go(app: Conveyor) -> None:
        job = await app.cancel(job_id)
        click.echo(f"{job.id} {job.status.value}")

    _run(ctx, go)


@main.command()
@click.argument("job_id")
@click.pass_context
def retry(ctx: click.Context, job_id: str) -> None:
    """Requeue a failed or cancelled job."""

    async def go(app: Conveyor) -> None:
        job = await app.retry(job_id)
        click.echo(f"{job.id} {job.status.value}")

    _run(ctx, go)


@main.command()
@click.option("--older-than", default=0.0, type=float, show_default=True, help="Seconds.")
@click.option("--states", default="completed,failed,cancelled", show_default=True)
@click.pass_context
def cleanup(ctx: click.Context, older_than: float, states: str) -> None:
    """Delete finished jobs older than --older-than seconds."""
    names = [s.strip() for s in states.split(",") if s.strip()]

    async def go(app: Conveyor) -> None:
        click.echo(f"removed {await app.cleanup(older_than=older_than, states=names)} jobs")

    _run(ctx, go)


@main.command()
@click.argument("job_id")
@click.option("--timeout", default=None, type=float)
@click.pass_context
def wait(ctx: click.Context, job_id: str, timeout: float | None) -> None:
    """Wait for a job with a live progress bar. Exit 0 completed, 1 failed, 2 cancelled, 3 timeout."""

    async def go(app: Conveyor) -> int:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=err, transient=True) as bar:
            t = bar.add_task(job_id, total=100)
            while True:
                job = await app.get(job_id)
                p = job.progress
                label = " ".join(x for x in (job.task, p.stage and f"[{p.stage}]", p.message) if x)
                bar.update(t, completed=p.percent or 0, description=label or job.status.value)
                if job.status.is_final:
                    break
                if deadline is not None and loop.time() >= deadline:
                    err.print(f"timed out: job {job_id} is {job.status.value}")
                    return 3
                await asyncio.sleep(0.1)
        try:
            result = await app.wait(job_id, timeout=0)
        except JobFailed as exc:
            err.print(f"[red]failed:[/red] {exc}")
            return 1
        except JobCancelled:
            err.print("cancelled")
            return 2
        _print_json(result)
        return 0

    sys.exit(_run(ctx, go))


if __name__ == "__main__":  # pragma: no cover
    main()
