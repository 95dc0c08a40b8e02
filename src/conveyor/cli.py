"""The ``conveyor`` command line: run workers, enqueue, inspect and steer jobs.

The backend comes from ``--url`` (or ``$CONVEYOR_URL``; default ``sqlite:///conveyor.db``).
With an ``http://`` or ``https://`` ``--url`` (a ``conveyor serve`` server) the job commands
(``enqueue``, ``status``, ``list``, ``cancel``, ``retry``, ``wait``) go through its HTTP API with
`conveyor.Client`, authenticated by ``--api-key`` (or ``$CONVEYOR_API_KEY``); the server checks
tasks and payloads against its app, and a tenant key sees only its tenant's jobs.

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
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
from rich.console import Console

from . import __version__, logs
from .app import DEFAULT_URL, Conveyor
from .errors import ConfigurationError, ConveyorError, JobNotFound, QueueFull, ValidationError
from .job import Job

if TYPE_CHECKING:
    from .client import Client

T = TypeVar("T")
A = TypeVar("A", bound="Conveyor | Client")
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


def is_remote(url: str | None) -> bool:
    """Whether ``url`` names a conveyor server (HTTP API) rather than a backend."""
    return bool(url) and url.split("://", 1)[0].lower() in ("http", "https")  # type: ignore[union-attr]


REMOTE_COMMANDS = "enqueue, status, list, cancel, retry and wait"


def _conveyor(ctx: click.Context, url: str | None, app_spec: str | None) -> Conveyor:
    """The app named by --app (on its own backend), else a `Conveyor` on the --url backend."""
    spec = app_spec or ctx.obj["app_spec"]
    if is_remote(url or (ctx.obj["cli_url"] if spec else ctx.obj["url"])):
        raise CliError(f"'conveyor {ctx.info_name}' needs a backend URL (sqlite://, redis://...); "
                       f"against a conveyor server only {REMOTE_COMMANDS} work")  # fmt: skip
    if not spec:
        return Conveyor(url or ctx.obj["url"])
    return _app_with_url(spec, url or ctx.obj["cli_url"])


def _producer(ctx: click.Context, url: str | None, app_spec: str | None) -> Any:
    """For the job commands: a `conveyor.Client` when the URL is a server's (``http(s)://``),
    else `_conveyor`. Both have the producer calls the commands make (and ``close``)."""
    target = url or ctx.obj["url"]
    if not is_remote(target):
        return _conveyor(ctx, url, app_spec)
    if app_spec or ctx.obj["app_spec"]:
        raise CliError("--app is not used against a conveyor server (--url http...): the "
                       "server runs the app")  # fmt: skip
    from .client import Client

    return Client(target, ctx.obj["api_key"])


def _app_with_url(spec: str, cli_url: str | None) -> Conveyor:
    app = load_app(spec)
    if cli_url and cli_url != app.url:
        _say(f"warning: --url {_redact(cli_url)} ignored: the app {spec} uses {_redact(app.url)}")
    return app


def _run(app: A, fn: Callable[[A], Awaitable[T]]) -> T:
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
    if logs.structured():  # `conveyor worker --log-format json`: every line on stderr is JSON
        logs.say(message)
    else:
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
@click.option("--api-key", envvar="CONVEYOR_API_KEY", default=None, metavar="KEY",
              help="API key for an http(s):// --url (also $CONVEYOR_API_KEY).")  # fmt: skip
@click.option("--log-level", type=LOG_LEVELS, default="WARNING", show_default=True)
@click.version_option(__version__, prog_name="conveyor")
@click.pass_context
def main(ctx: click.Context, url: str, app_spec: str | None, api_key: str | None,
         log_level: str) -> None:  # fmt: skip
    """conveyor: a Python job queue."""
    logs.configure(log_level)  # plain; `worker --log-format json` configures it again
    given = ctx.get_parameter_source("url") is click.core.ParameterSource.COMMANDLINE
    ctx.obj = {"url": url, "app_spec": app_spec, "cli_url": url if given else None,
               "api_key": api_key}  # fmt: skip


# Commands kept in modules of their own (they import `main` and register on it).
from . import (  # noqa: E402, F401
    cli_cron,
    cli_jobs,
    cli_keys,
    cli_metrics,
    cli_migrate,
    cli_queues,
    cli_serve,
    cli_stats,
    cli_wait,
    cli_workers,
    cli_workflows,
)
from .cli_worker import parse_queues  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    # ``python -m conveyor.cli``: the commands registered on the imported module's group.
    from conveyor.cli import main as registered

    registered()
