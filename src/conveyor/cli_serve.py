"""`conveyor serve`: the HTTP API of an app (`conveyor.server.create_app`) under uvicorn,
optionally with a worker in the same process (``--with-worker``: the one-process deployment).
Needs the extra ``conveyor[server]``.

Every route but ``/health`` needs an API key (``conveyor keys create``); ``--no-auth`` makes
every caller an admin and is refused unless the server listens on a loopback address only.
SIGTERM or SIGINT stops it cleanly: the server stops accepting, lets requests in flight finish
(5 s), then the worker (if any) lets its jobs finish within ``--shutdown-grace`` and hands the
rest back to the queue without charging an attempt; exit 0."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from pathlib import Path
from typing import Any

import click

from . import logs
from .app import Conveyor
from .cli import (
    LOG_LEVELS,
    SECONDS,
    CliError,
    _app_with_url,
    _redact,
    _say,
    main,
)
from .cli_worker import _check_queues, parse_queues

MIB = 1024 * 1024
#: Seconds uvicorn gives requests in flight (an SSE stream would hold it forever) at shutdown.
HTTP_GRACE = 5


def is_loopback(host: str) -> bool:
    """True when ``host`` is only reachable from this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@main.command()
@click.argument("app_spec", metavar="APP", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0 picks a free one; the URL is printed).")  # fmt: skip
@click.option("--with-worker", is_flag=True,
              help="Also run a worker in this process (the one-process deployment).")  # fmt: skip
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=10, show_default=True,
              help="--with-worker: jobs run at once (as `conveyor worker`).")  # fmt: skip
@click.option("--queues", "-q", default=None, metavar="Q[:N],...",
              help="--with-worker: queues to serve, as `conveyor worker --queues` "
                   "[default: every queue of the app's tasks].")  # fmt: skip
@click.option("--shutdown-grace", type=SECONDS, default=30.0, show_default=True,
              help="--with-worker: seconds active jobs get to finish after SIGTERM/SIGINT.")  # fmt: skip
@click.option("--no-auth", is_flag=True,
              help="Local development only: no API keys, every caller is an admin. Refused "
                   "unless --host is a loopback address.")  # fmt: skip
@click.option("--upload-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where uploaded files are stored [default: ./conveyor-uploads].")  # fmt: skip
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=50.0,
              show_default=True, help="Largest upload (413 beyond it).")  # fmt: skip
@click.option("--upload-ttl", type=SECONDS, default=24 * 3600.0, show_default=True,
              help="Seconds after an upload's job ended before its file is deleted.")  # fmt: skip
@click.option("--upload-types", default=None, metavar="TYPE,...",
              help="Content types an upload may declare (e.g. application/pdf,image/*) "
                   "[default: any].")  # fmt: skip
@click.option("--rate-limit", type=click.FloatRange(min=0), default=200.0, show_default=True,
              help="Requests per second per API key (429 beyond it, bursts of twice that); "
                   "0: unlimited.")  # fmt: skip
@click.option(
    "--max-streams",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Event streams (GET /v1/events) this process keeps open at once; 503 beyond.",
)
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Also serve /metrics WITHOUT a key on this port (0: a free one); the API's "
                   "own /metrics needs an admin key.")  # fmt: skip
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address of the --metrics-port endpoint.")  # fmt: skip
@click.option(
    "--frame-ancestors",
    default="'self'",
    show_default=True,
    metavar="SOURCES",
    help="Who may embed the dashboard's batch progress page in an iframe (CSP "
    "frame-ancestors), e.g. \"'self' https://app.example.com\".",
)
@click.option("--no-dashboard", is_flag=True, help="Serve the API only (no dashboard at /).")
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
@click.option("--log-level", type=LOG_LEVELS, default=None, help="Overrides the global one.")
@click.pass_context
def serve(ctx: click.Context, app_spec: str | None, host: str, port: int, with_worker: bool,
          concurrency: int, queues: str | None, shutdown_grace: float, no_auth: bool,
          upload_dir: Path | None, max_upload_mb: float, upload_ttl: float,
          upload_types: str | None, rate_limit: float, max_streams: int,
          metrics_port: int | None, metrics_addr: str, frame_ancestors: str,
          no_dashboard: bool, access_log: bool, log_level: str | None) -> None:  # fmt: skip
    """Serve the HTTP API of APP (module:attribute, as `conveyor worker`) until SIGTERM/SIGINT.

    Every route but /health needs an API key: create one with `conveyor keys create --admin`.
    OpenAPI at /openapi.json, interactive docs at /docs. The dashboard is at / (log in with a
    key); give every instance the same CONVEYOR_SECRET so that its logins and batch links
    survive restarts and work on any instance."""
    logs.configure(log_level or logging.getLogger().level)
    if no_auth and not is_loopback(host):
        raise CliError(f"--no-auth is refused on --host {host}: it is not a loopback address, "
                       "and without auth anyone who reaches the server is an admin. Use API "
                       "keys (conveyor keys create --admin), or --host 127.0.0.1")  # fmt: skip
    app_spec = app_spec or ctx.obj["app_spec"]
    if not app_spec:
        raise CliError("serve needs APP (module:attribute, e.g. myapp:app)")
    try:
        import uvicorn

        from .server import ServerSettings, create_app
    except ImportError as exc:
        raise CliError(f"conveyor serve needs the server extra ({exc.name} is missing): "
                       "pip install 'conveyor[server]'") from None  # fmt: skip
    app = _app_with_url(app_spec, ctx.obj["cli_url"])
    worker: dict[str, Any] | None = None
    if with_worker:
        spec = None if queues is None else parse_queues(queues)
        if spec is not None:
            _check_queues(spec, app)
        worker = {"concurrency": concurrency, "queues": spec, "shutdown_grace": shutdown_grace}
    elif queues is not None:
        raise CliError("--queues is for the worker: add --with-worker")
    settings = ServerSettings(
        auth=not no_auth,
        max_upload_bytes=int(max_upload_mb * MIB),
        upload_ttl=upload_ttl,
        upload_types=_types(upload_types),
        rate_limit=rate_limit or None,
        max_streams=max_streams,
        rate_burst=max(1, int(rate_limit * 2)),
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        secret=os.environ.get("CONVEYOR_SECRET") or None,
        frame_ancestors=tuple(frame_ancestors.split()),
        dashboard=not no_dashboard,
    )
    if upload_dir is not None:
        settings.upload_dir = upload_dir
    api = create_app(app, settings, worker=worker)
    config = uvicorn.Config(api, host=host, port=port, lifespan="on", log_config=None,
                            access_log=access_log, timeout_graceful_shutdown=HTTP_GRACE,
                            server_header=False)  # fmt: skip
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it is done, to whatever handler was
    # installed before: make that a no-op, so a clean stop exits 0 rather than dying of it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    asyncio.run(_run(server, app, host, with_worker, concurrency, no_auth, api))
    if not server.started:
        raise SystemExit(1)  # uvicorn logged why (a port in use, a failing startup)
    _say("conveyor serve stopped")


def _types(spec: str | None) -> tuple[str, ...] | None:
    if spec is None:
        return None
    types = tuple(t.strip().lower() for t in spec.split(",") if t.strip())
    bad = [t for t in types if t.count("/") != 1 or t.startswith("/") or t.endswith("/")]
    if not types or bad:
        raise CliError(f"--upload-types: {', '.join(bad) or repr(spec)} is not a content type "
                       "list like application/pdf,image/*")  # fmt: skip
    return types


async def _run(server: Any, app: Conveyor, host: str, with_worker: bool, concurrency: int,
               no_auth: bool, api: Any) -> None:  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        extra = f" with a worker (concurrency {concurrency})" if with_worker else ""
        metrics = getattr(api.state, "metrics_port", None)
        dash = ", dashboard /" if api.state.settings.dashboard else ""
        _say(f"conveyor serve: http://{shown}:{port} (docs /docs{dash}){extra}; "
             f"{'NO AUTH (local development)' if no_auth else 'API keys required'}; "
             f"app tasks={','.join(app.tasks)} url={_redact(app.url)} pid={os.getpid()}"
             + (f"; metrics http://{api.state.settings.metrics_addr}:{metrics}/metrics"
                if metrics is not None else ""))  # fmt: skip
    await task
