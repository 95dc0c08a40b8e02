"""`conveyor cron list`: an app's cron and periodic schedules with their next and last fire
times and the status of the last job they fired (the data of ``app.schedules()``)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from .app import Conveyor
from .cli import CliError, _console, _conveyor, _print_json, _run, _target, json_option, main
from .cron import ScheduleInfo


@main.group()
def cron() -> None:
    """Cron and periodic schedules (@app.cron, @app.periodic)."""


def _at(t: float | None, tz: str) -> str:
    if t is None:
        return "never"
    return datetime.fromtimestamp(t, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def schedules_table(infos: list[ScheduleInfo]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("name", "task", "schedule", "tz", "queue", "next fire", "last fire", "last job"):
        t.add_column(col, no_wrap=col != "last job")
    for s in infos:
        status = "" if s.last_status is None else f" ({s.last_status.value})"
        last = "" if s.last_job is None else f"{s.last_job}{status or ' (deleted)'}"
        t.add_row(escape(s.name), escape(s.task), escape(s.schedule), s.tz, escape(s.queue),
                  _at(s.next_fire, s.tz), _at(s.last_fire, s.tz), escape(last))  # fmt: skip
    return t


@cron.command("list")
@_target
@json_option
@click.pass_context
def list_schedules(ctx: click.Context, url: str | None, app_spec: str | None,
                   as_json: bool) -> None:  # fmt: skip
    """List the app's schedules: name, task, expression or interval, time zone, queue, next
    fire, last fire and the last job fired with its status. Needs --app (schedules are
    declared in the app's code)."""
    if not (app_spec or ctx.obj["app_spec"]):
        raise CliError("cron list needs --app MODULE:ATTR (schedules are declared in the app)")

    async def go(app: Conveyor) -> None:
        infos = await app.schedules()
        if as_json:
            _print_json([s.to_dict() for s in infos])
        elif not infos:
            click.echo("the app has no schedules")
        else:
            _console().print(schedules_table(infos))

    _run(_conveyor(ctx, url, app_spec), go)
