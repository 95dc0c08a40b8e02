"""`conveyor stats`: per-queue counts, workers, throughput and backpressure, then the limits
table (`cli_limits`)."""

from __future__ import annotations

import click
from rich import box
from rich.table import Table

from .app import Conveyor
from .cli import _console, _conveyor, _print_json, _run, _target, json_option, main
from .cli_limits import limits_table
from .job import JobState


@main.command()
@_target
@json_option
@click.pass_context
def stats(ctx: click.Context, url: str | None, app_spec: str | None, as_json: bool) -> None:
    """Per queue: counts by state, live workers, busy slots, run time and throughput, and
    waiting jobs against ``max_queued`` where a queue has one; then rate limits, concurrency
    caps and circuit breakers with their live state."""

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
        spooled = any(s.spooled for s in st.values())  # the app's local spool (--app)
        limited = any(s.max_queued is not None for s in st.values())
        extra = (*(("waiting/max",) if limited else ()), *(("spooled",) if spooled else ()))
        for col in ("workers", "busy", "avg s", "jobs/s", *extra):
            t.add_column(col, justify="right", min_width=len(col))
        for q, s in st.items():
            avg = "" if s.avg_run_seconds is None else f"{s.avg_run_seconds:.3f}"
            # Backpressure: waiting (queued + scheduled) against max_queued, FULL when reached.
            bp = () if not limited else ("" if s.max_queued is None else
                 f"{s.waiting}/{s.max_queued}{' FULL' if s.full else ''}",)  # fmt: skip
            name = f"{q} (paused)" if s.paused else q  # `conveyor queues resume` lifts it
            t.add_row(name, *(str(s.counts.get(x.value, 0)) for x in JobState), str(s.workers),
                      f"{s.active}/{s.concurrency}", avg, f"{s.throughput_per_s:.1f}",
                      *bp, *((str(s.spooled),) if spooled else ()))  # fmt: skip
        _console().print(t)
        limits = limits_table(st, app.backend.now())
        if limits is not None:
            _console().print(limits)

    _run(_conveyor(ctx, url, app_spec), go)
