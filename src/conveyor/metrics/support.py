"""What both metric sources share: the optional import, buckets, the HTTP endpoint."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ..errors import ConfigurationError

#: Histogram buckets (seconds) for jobs from a millisecond to several minutes.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 120.0, 300.0, 600.0, 1800.0)  # fmt: skip


def require_prometheus() -> ModuleType:
    """``prometheus_client``, or a `ConfigurationError` naming the extra that installs it."""
    try:
        return importlib.import_module("prometheus_client")
    except ImportError:
        raise ConfigurationError(
            "Prometheus metrics need the prometheus-client package: pip install 'conveyor[metrics]'"
        ) from None


def serve(registry: Any, port: int, addr: str = "127.0.0.1") -> tuple[Any, int]:
    """Serve ``registry`` at ``http://addr:port/metrics`` from a daemon thread (off the event
    loop: a scrape never delays a job). ``port`` 0 picks a free one. Returns the server (call
    ``shutdown()`` to stop it) and the port it listens on."""
    prom = require_prometheus()
    try:
        server, _thread = prom.start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise ConfigurationError(f"metrics endpoint {addr}:{port}: {exc.strerror or exc}") from None
    return server, int(server.server_port)
