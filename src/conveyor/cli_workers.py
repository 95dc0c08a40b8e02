"""`conveyor workers`: the live workers of a backend and their stats (any host, any process);
and what `conveyor wait` learns from them about a job that waits."""

from __future__ import annotations

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .app import Conveyor
from .backends.base import WorkerInfo
from .cli import _ago, _console, _conveyor, _print_json, _run, _target, json_option, main
from .job import Job
from .registry import why_waiting

SHOWN_JOBS = 3  # running job ids shown per worker in the table (--json has them all)
CHECK_EVERY = 5.0  # seconds between looks at the registry while a job waits


class WaitNotes:
    """`conveyor wait`: say once (on stderr) why a pending job may not run, e.g. no live worker
    serves its queue. Looks at the registry at most every `CHECK_EVERY` seconds."""

    def __init__(self, app: Conveyor, console: Console) -> None:
        self._app = app
        self._console = console
        self._next = 0.0
        self._said = False

    async def check(self, job: Job, now: float) -> None:
        if self._said or now < self._next or job.status.is_final:
            return
        self._next = now + CHECK_EVERY
        why = await why_waiting(self._app, job)
        if why is not None:
            self._said = True
            self._console.print(f"job {job.id} is {job.status.value}: {why}", markup=False,
                                highlight=False, soft_wrap=True)  # fmt: skip


def workers_table(workers: list[WorkerInfo]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("worker", "host", "pid", "queues", "busy", "done", "failed", "started", "seen"):
        right = col in ("pid", "busy", "done", "failed")
        t.add_column(col, no_wrap=True, justify="right" if right else "left")
    t.add_column("running", overflow="fold")
    for w in workers:
        running = list(w.running)
        jobs = " ".join(running[:SHOWN_JOBS])
        if len(running) > SHOWN_JOBS:
            jobs += f" +{len(running) - SHOWN_JOBS}"
        t.add_row(escape(w.id), escape(w.host), str(w.pid), escape(",".join(w.queues)),
                  f"{w.active}/{w.concurrency}", str(w.processed), str(w.failed),
                  _ago(w.started_at), _ago(w.last_seen), jobs)  # fmt: skip
    return t


@main.command()
@_target
@json_option
@click.pass_context
def workers(ctx: click.Context, url: str | None, app_spec: str | None, as_json: bool) -> None:
    """List live workers: id, host, pid, queues, busy slots, jobs done and failed (attempts),
    start and last heartbeat, running job ids. A worker that crashed leaves the list when its
    heartbeat expires. --json adds the tasks each one runs, with their payload schemas."""

    async def go(app: Conveyor) -> None:
        found = await app.workers()
        if as_json:
            _print_json([w.to_dict() for w in found])
        elif not found:
            click.echo("no live workers")
        else:
            _console().print(workers_table(found))

    _run(_conveyor(ctx, url, app_spec), go)
