"""`conveyor wait`: follow a job with a live progress bar and exit with its outcome
(0 completed, 1 failed, 2 cancelled, 3 timed out)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from .cli import (
    EXIT_CANCELLED,
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    SECONDS,
    _print_json,
    _producer,
    _progress_text,
    _run,
    _say,
    _target,
    is_remote,
    json_option,
    main,
)
from .job import Job, JobState

# -- wait ---------------------------------------------------------------------------------------


def _eta_text(job: Job) -> str:
    """Time left from the job's progress rate, counted down since its last progress report."""
    if job.status is JobState.ACTIVE and job.eta is not None:
        since = time.time() - (job.progress.updated_at or time.time())
        left = max(0, round(job.eta - since))
        return f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}"
    return "-:--:--"


@main.command()
@click.argument("job_id")
@click.option("--timeout", type=SECONDS, default=None, help="Give up after SECONDS (exit 3).")
@_target
@json_option
@click.pass_context
def wait(ctx: click.Context, job_id: str, timeout: float | None, url: str | None,
         app_spec: str | None, as_json: bool) -> None:  # fmt: skip
    """Follow a job with a live progress bar (on stderr) and print its result as JSON (--json:
    the whole job). Exit 0 completed, 1 failed, 2 cancelled, 3 timeout."""

    remote = is_remote(url or ctx.obj["url"])

    async def go(app: Any) -> int:  # a Conveyor, or a conveyor.Client (remote)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        job = await app.get(job_id)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   TaskProgressColumn(), TimeElapsedColumn(),
                   TextColumn("ETA {task.fields[eta]}"))  # fmt: skip
        interval = 0.02
        console = Console(stderr=True)  # no bar when stderr is not a terminal (CI logs, pipes)
        from .cli_workers import WaitNotes

        notes = WaitNotes(app, console)
        with Progress(
            *columns, console=console, transient=True, disable=not console.is_terminal
        ) as bar:
            t = bar.add_task("", total=100, eta="-:--:--")
            while True:
                label = " ".join(x for x in (job.task, job.status.value, job.progress.stage and
                                             f"[{job.progress.stage}]", job.progress.message) if x)  # fmt: skip
                # A completed job is done, whatever its handler last reported.
                done = 100 if job.status is JobState.COMPLETED else job.progress.percent or 0
                bar.update(t, completed=done, description=escape(label), eta=_eta_text(job))
                left = None if deadline is None else deadline - loop.time()
                if job.status.is_final or (left is not None and left <= 0):
                    break
                if not remote:  # the registry is not read over the API
                    await notes.check(job, loop.time())
                await asyncio.sleep(interval if left is None else min(interval, left))
                interval = min(0.25, interval * 1.5)
                job = await app.get(job_id)
        if as_json:
            _print_json(job.to_dict())
        if job.status is JobState.COMPLETED:
            if not as_json:
                _print_json(job.result)
            return EXIT_COMPLETED
        if job.status is JobState.FAILED:
            e = job.error or {}
            _say(f"job {job_id} failed after {job.attempt} attempt(s): "
                 f"{e.get('type', 'Error')}: {e.get('message', '')}")  # fmt: skip
            return EXIT_FAILED
        if job.status is JobState.CANCELLED:
            _say(f"job {job_id} was cancelled")
            return EXIT_CANCELLED
        _say(f"timed out after {timeout:g}s: job {job_id} is still {job.status.value}"
             + (f" ({_progress_text(job)})" if job.progress.percent is not None else ""))  # fmt: skip
        return EXIT_TIMEOUT

    ctx.exit(_run(_producer(ctx, url, app_spec), go))
