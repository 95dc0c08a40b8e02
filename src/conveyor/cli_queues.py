"""`conveyor queues`: list the queues with their paused flag, and pause or resume one.

A pause is stored in the backend: every worker (any process, any host) stops claiming the
queue's jobs until it is resumed; enqueues, listings, cancels and retries go on, and jobs
already running finish. See `Conveyor.pause_queue`."""

from __future__ import annotations

from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from .app import Conveyor
from .cli import _console, _conveyor, _print_json, _run, _target, json_option, main


@main.group()
def queues() -> None:
    """List, pause and resume queues."""


@queues.command("pause")
@click.argument("name")
@_target
@click.pass_context
def pause(ctx: click.Context, name: str, url: str | None, app_spec: str | None) -> None:
    """Stop every worker from claiming jobs of queue NAME until it is resumed. Jobs can still
    be enqueued; jobs already running finish."""

    async def go(app: Conveyor) -> None:
        changed = await app.pause_queue(name)
        click.echo(f"queue {name} paused" if changed else f"queue {name} was already paused")

    _run(_conveyor(ctx, url, app_spec), go)


@queues.command("resume")
@click.argument("name")
@_target
@click.pass_context
def resume(ctx: click.Context, name: str, url: str | None, app_spec: str | None) -> None:
    """Let workers claim jobs of queue NAME again (idle workers are woken)."""

    async def go(app: Conveyor) -> None:
        changed = await app.resume_queue(name)
        click.echo(f"queue {name} resumed" if changed else f"queue {name} was not paused")

    _run(_conveyor(ctx, url, app_spec), go)


@queues.command("list")
@_target
@json_option
@click.pass_context
def list_queues(ctx: click.Context, url: str | None, app_spec: str | None, as_json: bool) -> None:
    """The known queues: paused or not, jobs waiting and running, live workers serving them."""

    async def go(app: Conveyor) -> None:
        rows: list[dict[str, Any]] = [
            {"queue": q, "paused": s.paused, "queued": s.counts.get("queued", 0),
             "scheduled": s.counts.get("scheduled", 0), "active": s.active, "workers": s.workers}
            for q, s in (await app.stats()).items()
        ]  # fmt: skip
        if as_json:
            _print_json(rows)
            return
        if not rows:
            click.echo("no queues")
            return
        t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        t.add_column("queue", no_wrap=True)
        t.add_column("paused")
        for col in ("queued", "scheduled", "active", "workers"):
            t.add_column(col, justify="right")
        for r in rows:
            counts = (str(r[c]) for c in ("queued", "scheduled", "active", "workers"))
            t.add_row(escape(r["queue"]), "PAUSED" if r["paused"] else "", *counts)
        _console().print(t)

    _run(_conveyor(ctx, url, app_spec), go)
