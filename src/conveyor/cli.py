"""The ``conveyor`` command line: run workers, enqueue, inspect and steer jobs.

The backend comes from ``--url`` (or ``$CONVEYOR_URL``; default ``sqlite:///conveyor.db``).
Commands that need the task handlers (``worker``, ``enqueue``) take an APP, ``module:attribute``
naming a `Conveyor` instance (the current directory is importable); the other commands use it
too when ``--app`` (or ``$CONVEYOR_APP``) is given. ``--url`` and ``--app`` are accepted before
or after the command name. Read commands print tables, or JSON with ``--json``.

Errors are one line on stderr, never a traceback: exit 2 for bad input (a payload, priority or
delay the task refuses, a malformed URL, an unknown job id), exit 1 for everything else (a
transition the job's state forbids, a backend that cannot be reached), 75 (EX_TEMPFAIL) when
``enqueue`` or ``retry`` meets a full queue (``max_queued``: try again later). ``wait`` exits 0
when the job completed, 1 failed, 2 cancelled, 3 timed out.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
from rich import box
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
from rich.table import Table

from . import __version__
from .app import DEFAULT_URL, Conveyor
from .cli_limits import limits_table
from .errors import ConfigurationError, ConveyorError, JobNotFound, QueueFull, ValidationError
from .job import Job, JobState
from .worker.reach import wait_for_backend

T = TypeVar("T")
log = logging.getLogger("conveyor.cli")
LOG_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)
FINAL = ("completed", "failed", "cancelled")
EXIT_COMPLETED, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = 0, 1, 2, 3


class _Seconds(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.3
    """A finite number of seconds >= 0 (nan and inf are refused, not taken as 'forever')."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            secs = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(secs) or secs < 0:
            self.fail(f"{value!r} must be a finite number of seconds >= 0", param, ctx)
        return secs


SECONDS = _Seconds()


class CliError(click.ClickException):
    """Bad input: one line on stderr (``Error: ...``), exit status 2."""

    exit_code = 2


class CliFailure(CliError):
    """A command that could not be carried out (state conflict, backend trouble): exit 1."""

    exit_code = 1


class CliQueueFull(CliError):
    """Backpressure: the queue is full, nothing was stored; exit 75 (EX_TEMPFAIL: retry later)."""

    exit_code = 75


class _Group(click.Group):
    """Turns every `ConveyorError` a command raises into a one-line error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            if isinstance(exc, QueueFull):
                raise CliQueueFull(str(exc)) from None
            if isinstance(exc, ValidationError | ConfigurationError | JobNotFound):
                raise CliError(str(exc)) from None
            raise CliFailure(str(exc)) from None


def load_app(spec: str) -> Conveyor:
    """Import ``module:attribute`` (attribute defaults to ``app``) with the cwd importable and
    return the `Conveyor` it names. Raises `CliError` naming the problem."""
    module_name, _, attr = spec.partition(":")
    if not module_name or spec.endswith(":"):
        raise CliError(f"APP {spec!r}: expected module:attribute, e.g. myapp:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ConveyorError:
        raise  # e.g. a malformed URL in the app module: reported like any other
    except Exception as exc:
        log.debug("importing %s failed", module_name, exc_info=True)
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.partition(".")[0]:
            hint = " (run from the directory that holds it, or add that directory to PYTHONPATH)"
        raise CliError(f"cannot import {module_name!r} (APP {spec!r}): "
                       f"{type(exc).__name__}: {exc}{hint}") from None  # fmt: skip
    obj: Any = module
    attr = attr or "app"
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"APP {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Conveyor):
        raise CliError(f"APP {spec!r} is a {type(obj).__name__}, not a conveyor.Conveyor")
    return obj


def _conveyor(ctx: click.Context, url: str | None, app_spec: str | None) -> Conveyor:
    """The app named by --app (on its own backend), else a `Conveyor` on the --url backend."""
    spec = app_spec or ctx.obj["app_spec"]
    if not spec:
        return Conveyor(url or ctx.obj["url"])
    return _app_with_url(spec, url or ctx.obj["cli_url"])


def _app_with_url(spec: str, cli_url: str | None) -> Conveyor:
    app = load_app(spec)
    if cli_url and cli_url != app.url:
        _say(f"warning: --url {_redact(cli_url)} ignored: the app {spec} uses {_redact(app.url)}")
    return app


def _run(app: Conveyor, fn: Callable[[Conveyor], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await fn(app)
        finally:
            await app.close()

    return asyncio.run(main())


def _target(f: Callable[..., Any]) -> Callable[..., Any]:
    """--url / --app on a command (they override the same options given before the command)."""
    f = click.option("--app", "app_spec", default=None, metavar="MODULE:ATTR",
                     help="Your Conveyor app (also $CONVEYOR_APP).")(f)  # fmt: skip
    return click.option("--url", default=None, help="Backend URL (also $CONVEYOR_URL).")(f)


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _console() -> Console:
    # Pipes and files get wide, unwrapped tables (ids are 26 characters).
    return Console(width=None if sys.stdout.isatty() else 200)


def _say(message: str) -> None:
    click.echo(message, err=True)


def _redact(url: str) -> str:
    """The URL without its password (banners and warnings must not leak secrets)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable URL>"


def _split(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


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


def _when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _ago(t: float | None) -> str:
    if t is None:
        return ""
    s = max(0.0, time.time() - t)
    return (
        f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"
    )


def _progress_text(job: Job) -> str:
    p = job.progress
    parts = [f"{p.percent:.0f}%" if p.percent is not None else "", p.stage and f"[{p.stage}]",
             p.message]  # fmt: skip
    return " ".join(x for x in parts if x)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="CONVEYOR_URL", default=DEFAULT_URL, show_default=True,
              help="Backend URL (also $CONVEYOR_URL).")  # fmt: skip
@click.option("--app", "app_spec", envvar="CONVEYOR_APP", default=None, metavar="MODULE:ATTR",
              help="Your Conveyor app (also $CONVEYOR_APP); needed by enqueue.")  # fmt: skip
@click.option("--log-level", type=LOG_LEVELS, default="WARNING", show_default=True)
@click.version_option(__version__, prog_name="conveyor")
@click.pass_context
def main(ctx: click.Context, url: str, app_spec: str | None, log_level: str) -> None:
    """conveyor: a Python job queue."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    given = ctx.get_parameter_source("url") is click.core.ParameterSource.COMMANDLINE
    ctx.obj = {"url": url, "app_spec": app_spec, "cli_url": url if given else None}


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
@click.option("--log-level", type=LOG_LEVELS, default=None, help="Overrides the global one.")
@click.pass_context
def worker(ctx: click.Context, app_spec: str | None, commands: tuple[str, ...],
           command_queue: str, command_timeout: float | None, command_retries: int,
           command_env: tuple[str, ...], concurrency: int, queues: str | None,
           shutdown_grace: float, name: str | None, log_level: str | None) -> None:  # fmt: skip
    """Run a worker for APP (module:attribute) and/or --command programs until SIGTERM/SIGINT.

    The first signal stops claiming, lets active jobs finish within --shutdown-grace and returns
    the rest to the queue (no attempt charged), then exits 0. A second signal skips the grace.
    """
    if log_level:
        logging.getLogger().setLevel(log_level.upper())
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
    _run(app, lambda a: _serve(a, concurrency, spec, shutdown_grace, name))
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
                 grace: float, name: str | None) -> None:  # fmt: skip
    w = app.worker(concurrency=concurrency, queues=queues, shutdown_grace=grace, name=name)
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


@main.command()
@click.argument("task")
@click.option("--payload", default="{}", show_default=True, metavar="JSON",
              help="JSON object of the task's arguments.")  # fmt: skip
@click.option("--priority", default=None, metavar="P", help="critical/high/normal/low or 0-100.")
@click.option("--delay", type=float, default=None, metavar="SECONDS", help="Run no sooner.")
@click.option("--idempotency-key", default=None, metavar="KEY",
              help="A second enqueue with the same key returns the first job.")  # fmt: skip
@click.option("--tenant", default=None)
@click.option("--max-attempts", type=int, default=None, help="Overrides the task's retries + 1.")
@click.option("--queue", default=None, metavar="Q",
              help="Without --app: the queue of TASK, if you want it checked [default: the "
                   "live workers'; with --unchecked: default].")  # fmt: skip
@click.option("--unchecked", is_flag=True,
              help="Without --app: store the job even if no live worker runs TASK (to --queue, "
                   "payload unchecked); a worker without its handler fails it for good.")  # fmt: skip
@_target
@json_option
@click.pass_context
def enqueue(ctx: click.Context, task: str, payload: str, priority: str | None,
            delay: float | None, idempotency_key: str | None, tenant: str | None,
            max_attempts: int | None, queue: str | None, unchecked: bool, url: str | None,
            app_spec: str | None, as_json: bool) -> None:  # fmt: skip
    """Enqueue a job for TASK and print its id.

    With --app the payload is validated against the task. Without it (a task defined elsewhere,
    e.g. a worker's --command) the live workers' word is taken: the job goes to the queue they
    run TASK on, its payload checked against the schema they publish; a task no live worker
    runs is refused (unless --unchecked).
    """
    declared = not (app_spec or ctx.obj["app_spec"])
    if not declared and (queue is not None or unchecked):
        raise CliError(f"{'--queue' if queue is not None else '--unchecked'} is only for tasks "
                       "not in the app (without --app): the app's task says which queue it "
                       "uses and checks the payload")  # fmt: skip
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise CliError(f"--payload is not JSON ({exc}): pass a JSON object, "
                       """e.g. --payload '{"record_id": "r1"}'""") from None  # fmt: skip
    prio: int | str | None = priority
    if priority is not None:
        try:
            prio = int(priority)
        except ValueError:
            pass  # a name: validated by the app

    async def go(app: Conveyor) -> None:
        if declared:
            from .registry import declare_live

            try:
                if unchecked:
                    app.declare(task, queue=queue or "default")
                else:
                    await declare_live(app, task, queue)
            except ValidationError as exc:
                hint = "; start a worker that runs it, or pass --unchecked"
                raise CliError(f"{exc}{hint if exc.field == 'task' else ''}") from None
            except ConveyorError as exc:
                raise CliError(str(exc)) from None
            # Without the app, the limit its producers enforce (recorded by the backend).
            q = app.tasks[task].options.queue
            limit = (await app.stats([q]))[q].max_queued
            if limit is not None:
                app.queue(q, max_queued=limit)
        job = await app.enqueue(task, data, priority=prio, delay=delay,
                                idempotency_key=idempotency_key, tenant=tenant,
                                max_attempts=max_attempts)  # fmt: skip
        _print_json(job.to_dict()) if as_json else click.echo(job.id)

    _run(_conveyor(ctx, url, app_spec), go)


# -- reading ------------------------------------------------------------------------------------


def _job_table(jobs: list[Job]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("id", "task", "queue", "status", "prio", "attempt", "created", "progress"):
        t.add_column(col, no_wrap=True)
    t.add_column("error", overflow="fold")
    for j in jobs:
        error = (j.error or {}).get("message") or ""
        t.add_row(j.id, j.task, j.queue, j.status.value, str(j.priority),
                  f"{j.attempt}/{j.max_attempts}", _ago(j.created_at),
                  escape(_progress_text(j)), escape(error[:80]))  # fmt: skip
    return t


def _job_detail(job: Job) -> Table:
    t = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    d = job.to_dict()
    rows: list[tuple[str, Any]] = [
        ("id", job.id), ("task", job.task), ("queue", job.queue), ("status", job.status.value),
        ("priority", job.priority), ("attempt", f"{job.attempt}/{job.max_attempts}"),
        ("progress", _progress_text(job)), ("eta", "" if job.eta is None else f"{job.eta:.1f}s"),
        ("payload", json.dumps(job.payload)), ("result", "" if d["result"] is None
                                                else json.dumps(d["result"], default=str)),
        ("error", "" if not job.error else f"{job.error.get('type')}: {job.error.get('message')}"),
        ("tenant", job.tenant), ("batch", job.batch), ("idempotency key", job.idempotency_key),
        ("created", _when(job.created_at)), ("scheduled for", _when(job.scheduled_for)),
        ("started", _when(job.started_at)), ("finished", _when(job.finished_at)),
        ("worker", job.worker),
    ]  # fmt: skip
    for key, value in rows:
        if value not in (None, ""):
            t.add_row(key, escape(str(value)))
    return t


@main.command()
@click.argument("job_id")
@_target
@json_option
@click.pass_context
def status(ctx: click.Context, job_id: str, url: str | None, app_spec: str | None,
           as_json: bool) -> None:  # fmt: skip
    """Show one job."""

    async def go(app: Conveyor) -> None:
        job = await app.get(job_id)
        _print_json(job.to_dict()) if as_json else _console().print(_job_detail(job))

    _run(_conveyor(ctx, url, app_spec), go)


@main.command("list")
@click.option("--status", "state", default=None, help=f"One of {', '.join(JobState)}.")
@click.option("--queue", default=None)
@click.option("--task", default=None)
@click.option("--batch", default=None)
@click.option("--tenant", default=None)
@click.option("--limit", type=int, default=50, show_default=True, help="1-1000.")
@click.option("--cursor", default=None, help="next_cursor of the previous page.")
@_target
@json_option
@click.pass_context
def list_(ctx: click.Context, state: str | None, queue: str | None, task: str | None,
          batch: str | None, tenant: str | None, limit: int, cursor: str | None,
          url: str | None, app_spec: str | None, as_json: bool) -> None:  # fmt: skip
    """List jobs, newest first."""

    async def go(app: Conveyor) -> None:
        page = await app.list(status=state, queue=queue, task=task, batch=batch, tenant=tenant,
                              limit=limit, cursor=cursor)  # fmt: skip
        if as_json:
            _print_json({"jobs": [j.to_dict() for j in page.jobs], "next_cursor": page.next_cursor})
            return
        _console().print(_job_table(page.jobs))
        if page.next_cursor:
            click.echo(f"more: --cursor {page.next_cursor}")

    _run(_conveyor(ctx, url, app_spec), go)


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
            t.add_row(q, *(str(s.counts.get(x.value, 0)) for x in JobState), str(s.workers),
                      f"{s.active}/{s.concurrency}", avg, f"{s.throughput_per_s:.1f}",
                      *bp, *((str(s.spooled),) if spooled else ()))  # fmt: skip
        _console().print(t)
        limits = limits_table(st, app.backend.now())
        if limits is not None:
            _console().print(limits)

    _run(_conveyor(ctx, url, app_spec), go)


# -- steering -----------------------------------------------------------------------------------


def _steer(ctx: click.Context, job_id: str, url: str | None, app_spec: str | None,
           as_json: bool, action: str) -> None:  # fmt: skip
    async def go(app: Conveyor) -> None:
        job = await (app.cancel(job_id) if action == "cancel" else app.retry(job_id))
        _print_json(job.to_dict()) if as_json else click.echo(f"{job.id} {job.status.value}")

    _run(_conveyor(ctx, url, app_spec), go)


@main.command()
@click.argument("job_id")
@_target
@json_option
@click.pass_context
def cancel(ctx: click.Context, job_id: str, url: str | None, app_spec: str | None,
           as_json: bool) -> None:  # fmt: skip
    """Cancel a pending or active job (idempotent); prints the job id and its new status."""
    _steer(ctx, job_id, url, app_spec, as_json, "cancel")


@main.command()
@click.argument("job_id")
@_target
@json_option
@click.pass_context
def retry(ctx: click.Context, job_id: str, url: str | None, app_spec: str | None,
          as_json: bool) -> None:  # fmt: skip
    """Requeue a failed or cancelled job with fresh attempts."""
    _steer(ctx, job_id, url, app_spec, as_json, "retry")


@main.command()
@click.option("--older-than", type=SECONDS, default=0.0, show_default=True, metavar="SECONDS",
              help="Only jobs that finished at least this long ago.")  # fmt: skip
@click.option("--states", default=",".join(FINAL), show_default=True)
@_target
@json_option
@click.pass_context
def cleanup(ctx: click.Context, older_than: float, states: str, url: str | None,
            app_spec: str | None, as_json: bool) -> None:  # fmt: skip
    """Delete finished jobs."""
    names = _split(states)
    unknown = [s for s in names if s not in FINAL]
    if unknown or not names:
        raise CliError(f"--states: {unknown[0] if unknown else 'nothing'!r} is not a finished "
                       f"state; use a comma-separated subset of {','.join(FINAL)}")  # fmt: skip

    async def go(app: Conveyor) -> None:
        n = await app.cleanup(older_than=older_than, states=names)
        _print_json({"removed": n}) if as_json else click.echo(f"removed {n} jobs")

    _run(_conveyor(ctx, url, app_spec), go)


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

    async def go(app: Conveyor) -> int:
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

    ctx.exit(_run(_conveyor(ctx, url, app_spec), go))


# Commands kept in modules of their own (they import `main` and register on it).
from . import cli_workers  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
