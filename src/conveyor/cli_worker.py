"""`conveyor worker`: run a worker process for an app (or for ``--command`` tasks without
one), with ``--queues`` parsed into per-queue slots."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import threading
import time

import click

from . import logs
from .app import Conveyor
from .cli import (
    LOG_LEVELS,
    SECONDS,
    CliError,
    _app_with_url,
    _redact,
    _run,
    _say,
    _split,
    main,
)
from .cli_metrics import metrics_port_options, start_worker_metrics
from .errors import ConveyorError
from .worker.reach import wait_for_backend

_SLOTS = re.compile(r"(.+):(\d+)")


def parse_queues(value: str) -> list[str] | dict[str, int | None]:
    """``--queues``: comma-separated queues, each optionally ``NAME:N`` for N dedicated slots.

    Queue names may contain ':', so only a trailing ``:<digits>`` is a slot count. Returns a list
    when no queue has a count (all share ``--concurrency``), else a dict of queue -> slots, None
    for the queues on the shared pool (what ``Worker(queues=...)`` takes). Raises `CliError`.
    """
    spec: dict[str, int | None] = {}
    for item in _split(value):
        m = _SLOTS.fullmatch(item)
        name, slots = (m[1], int(m[2])) if m else (item, None)
        if name in spec:
            raise CliError(f"--queues: queue {name!r} is listed twice")
        if slots is not None and slots < 1:
            raise CliError(f"--queues: {item!r}: queue {name!r} needs at least 1 slot of its own "
                           f"(or no count, for the shared --concurrency pool)")  # fmt: skip
        spec[name] = slots
    if not spec:
        raise CliError("--queues is empty: name at least one queue, e.g. --queues default")
    return spec if any(n is not None for n in spec.values()) else list(spec)


def _check_queues(queues: list[str] | dict[str, int | None], app: Conveyor) -> None:
    """Refuse a mistyped slot count (``low:x`` when the app has queue ``low`` but no ``low:x``);
    warn about queues no task of the app is on (likely a typo)."""
    known = app.queues()
    for name in queues:
        if name in known:
            continue
        base, sep, count = name.rpartition(":")
        if sep and base in known:
            raise CliError(f"--queues: {name!r}: {count!r} is not a slot count (a whole number "
                           f">= 1 after the last ':', e.g. {base}:2), and the app has no queue "
                           f"named {name!r}")  # fmt: skip
        _say(f"warning: --queues: no task of the app is on queue {name!r} "
             f"(its queues: {', '.join(known) or 'none'})")  # fmt: skip


# -- worker -------------------------------------------------------------------------------------


@main.command()
@click.argument("app_spec", metavar="[APP]", required=False)
@click.option("--command", "commands", multiple=True, metavar="NAME='CMD'",
              help="Also run the program CMD as task NAME (repeatable; APP is then optional): "
                   "the payload goes to its stdin as JSON and fills {field} placeholders, "
                   "'PROGRESS: n msg' lines are progress, a JSON last line is the result. "
                   "CMD is split like a shell would, but no shell runs.")  # fmt: skip
@click.option("--command-queue", default="default", show_default=True, metavar="Q",
              help="Queue of the --command tasks.")  # fmt: skip
@click.option("--command-timeout", type=SECONDS, default=None, metavar="SECONDS",
              help="Kill a --command job's process group after this long.")  # fmt: skip
@click.option("--command-retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Retries of a failed --command job.")  # fmt: skip
@click.option("--command-env", multiple=True, metavar="VAR",
              help="Pass VAR to --command programs too (beyond PATH, HOME, LANG, LC_ALL, TZ, "
                   "TMPDIR); repeatable. Nothing else of the worker's environment reaches them.")  # fmt: skip
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=10, show_default=True,
              help="Jobs run at once on the shared pool (queues given Q:N slots in --queues "
                   "have those on top).")  # fmt: skip
@click.option("--queues", "-q", default=None, metavar="Q[:N],...",
              help="Comma-separated queues [default: every queue of the app's tasks]. Q:N gives "
                   "queue Q N slots of its own, so its jobs always have room however many others "
                   "wait; queues without :N share the --concurrency pool. E.g. "
                   "critical:5,high:3,default. Queue names may contain ':', so only a trailing "
                   "':<digits>' is a slot count (a queue whose name ends that way needs one).")  # fmt: skip
@click.option("--shutdown-grace", type=SECONDS, default=30.0, show_default=True,
              help="Seconds active jobs get to finish after SIGTERM/SIGINT.")  # fmt: skip
@click.option("--name", default=None, help="Worker id [default: host-pid-random].")
@click.option("--scheduler/--no-scheduler", default=True, show_default=True,
              help="Fire the app's cron and periodic schedules (@app.cron, @app.periodic). Any "
                   "number of workers may: each tick still fires once.")  # fmt: skip
@click.option("--log-level", type=LOG_LEVELS, default=None, help="Overrides the global one.")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="plain", show_default=True,
              envvar="CONVEYOR_LOG_FORMAT",
              help="json: one JSON object per line on stderr (ts, level, logger, message, and "
                   "job_id, task, queue, attempt for the records of a job); plain: text lines "
                   "with [job=... task=... queue=... attempt=...] appended. Also "
                   "$CONVEYOR_LOG_FORMAT.")  # fmt: skip
@metrics_port_options
@click.pass_context
def worker(ctx: click.Context, app_spec: str | None, commands: tuple[str, ...],
           command_queue: str, command_timeout: float | None, command_retries: int,
           command_env: tuple[str, ...], concurrency: int, queues: str | None,
           shutdown_grace: float, name: str | None, scheduler: bool, log_level: str | None,
           log_format: logs.LogFormat, metrics_port: int | None,
           metrics_addr: str) -> None:  # fmt: skip
    """Run a worker for APP (module:attribute) and/or --command programs until SIGTERM/SIGINT.

    The first signal stops claiming, lets active jobs finish within --shutdown-grace and returns
    the rest to the queue (no attempt charged), then exits 0. A second signal skips the grace.
    """
    logs.configure(log_level or logging.getLogger().level, log_format)
    spec = None if queues is None else parse_queues(queues)
    app_spec = app_spec or ctx.obj["app_spec"]
    if not app_spec and not commands:
        raise CliError(
            "worker needs APP (module:attribute, e.g. myapp:app) or --command NAME='CMD'"
        )
    app = _app_with_url(app_spec, ctx.obj["cli_url"]) if app_spec else Conveyor(ctx.obj["url"])
    for text in commands:
        _add_command(app, text, command_queue, command_timeout, command_retries, command_env)
    if spec is not None:
        _check_queues(spec, app)
    server = None if metrics_port is None else start_worker_metrics(app, metrics_port, metrics_addr)
    try:
        _run(app, lambda a: _serve(a, concurrency, spec, shutdown_grace, name, scheduler))
    finally:
        if server is not None:
            server.shutdown()
    # A sync handler still blocked in its thread would hold the interpreter's exit; its job is
    # already back in the queue, so leave without waiting for it.
    deadline = time.monotonic() + 1.0
    for t in threading.enumerate():
        if t.name.startswith("conveyor-job"):
            t.join(max(0.0, deadline - time.monotonic()))
    if any(t.name.startswith("conveyor-job") and t.is_alive() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _add_command(app: Conveyor, text: str, queue: str, timeout: float | None, retries: int,
                 env: tuple[str, ...]) -> None:  # fmt: skip
    from .command import DEFAULT_ENV

    task, sep, command = text.partition("=")
    task, command = task.strip(), command.strip()
    if not sep or not task or not command:
        raise CliError(
            f"--command {text!r}: use NAME='program args', e.g. ingest='python ingest.py'"
        )
    if task in app.tasks:
        raise CliError(f"--command {task!r}: the app already has a task of that name")
    try:
        app.command(task, command, queue=queue, timeout=timeout, retries=retries,
                    env=(*DEFAULT_ENV, *env))  # fmt: skip
    except ConveyorError as exc:
        raise CliError(f"--command {task!r}: {exc}") from None


async def _serve(app: Conveyor, concurrency: int, queues: list[str] | dict[str, int | None] | None,
                 grace: float, name: str | None, scheduler: bool = True) -> None:  # fmt: skip
    w = app.worker(concurrency=concurrency, queues=queues, shutdown_grace=grace, name=name,
                   scheduler=scheduler)  # fmt: skip
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal received
        received += 1
        if received == 1:
            _say(f"conveyor worker {w.id}: {sig.name}: stopping; active jobs get {grace:g}s to "
                 "finish (signal again to stop now)")  # fmt: skip
            stop.set()
        elif received == 2:
            _say(f"conveyor worker {w.id}: {sig.name} again: returning active jobs to the queue")
            w.shutdown_grace = 0  # in case stop() has not begun yet
            for r in list(w.running.values()):
                if r.task is not None:
                    r.task.cancel()  # stop() then releases them without charging an attempt

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        # Started while the backend is down or loading: wait for it (a signal ends the wait).
        if await wait_for_backend(app, f"worker {w.id}", stop):
            await w.start()
            names = ",".join(f"{q}:{w.slots[q]}" if q in w.slots else q for q in w.queues)
            extra = f" capacity={w.capacity}" if w.slots else ""
            _say(f"conveyor worker {w.id} started: pid={os.getpid()} queues={names} "
                 f"concurrency={concurrency}{extra} tasks={','.join(app.tasks)} "
                 f"url={_redact(app.url)}")  # fmt: skip
            await stop.wait()
            await w.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    _say(f"conveyor worker {w.id} stopped after {w.processed} jobs")


# -- producing ----------------------------------------------------------------------------------
