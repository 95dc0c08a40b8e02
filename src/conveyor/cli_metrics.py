"""`conveyor metrics`: one process serving a backend's gauges (jobs by state, backlog age, live
workers, open breakers) at ``/metrics``; and the worker's ``--metrics-port`` wiring. Needs
the extra ``conveyor[metrics]``."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import click

from .app import Conveyor
from .cli import SECONDS, CliError, _conveyor, _redact, _run, _say, _target, main
from .errors import ConfigurationError


def metrics_port_options(f: Any) -> Any:
    """``--metrics-port`` / ``--metrics-addr`` (for ``conveyor worker``)."""
    f = click.option("--metrics-addr", default="127.0.0.1", show_default=True, metavar="ADDR",
                     help="Address of the --metrics-port endpoint.")(f)  # fmt: skip
    return click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                        metavar="PORT",
                        help="Serve this worker's Prometheus metrics (jobs, durations, waits, "
                             "retries, active jobs: this process only) at "
                             "http://ADDR:PORT/metrics; 0 picks a free port. Needs "
                             "conveyor[metrics].")(f)  # fmt: skip


def start_worker_metrics(app: Conveyor, port: int, addr: str) -> Any:
    """Add a `PrometheusHook` to ``app`` and serve it. Returns the HTTP server."""
    try:
        from .metrics import PrometheusHook, serve

        hook = PrometheusHook()
        server, bound = serve(hook.registry, port, addr)
    except ConfigurationError as exc:
        raise CliError(f"--metrics-port: {exc}") from None
    app.add_hook(hook)
    _say(f"conveyor worker metrics: http://{addr}:{bound}/metrics (pid={os.getpid()})")
    return server


@main.command()
@_target
@click.option("--port", type=click.IntRange(0, 65535), required=True,
              help="Serve the gauges at http://ADDR:PORT/metrics (0 picks a free port).")  # fmt: skip
@click.option("--addr", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--interval", type=SECONDS, default=15.0, show_default=True,
              help="Seconds between reads of the backend's stats and workers.")  # fmt: skip
@click.pass_context
def metrics(ctx: click.Context, url: str | None, app_spec: str | None, port: int, addr: str,
            interval: float) -> None:  # fmt: skip
    """Export a backend's gauges to Prometheus: jobs by queue and state, each queue's
    backlog age (how long its next job to claim has waited), live workers, open breakers. Run ONE per backend (workers serve
    their own counters with `conveyor worker --metrics-port`). Stops on SIGTERM/SIGINT."""
    if interval <= 0:
        raise CliError("--interval must be > 0")
    try:
        from .metrics import BackendCollector, require_prometheus, serve

        prom = require_prometheus()
        collector = BackendCollector(stale_after=max(3 * interval, 30.0))
        registry = prom.CollectorRegistry()
        registry.register(collector)
        server, bound = serve(registry, port, addr)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    app = _conveyor(ctx, url, app_spec)
    _say(f"conveyor metrics: http://{addr}:{bound}/metrics every {interval:g}s from "
         f"{_redact(app.url)} (pid={os.getpid()})")  # fmt: skip

    async def export(a: Conveyor) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await collector.run(a, interval, stop)

    try:
        _run(app, export)
    finally:
        server.shutdown()
    _say("conveyor metrics stopped")
