"""Prometheus metrics (optional extra ``conveyor[metrics]``, i.e. ``prometheus-client``).

Two sources, so that N workers never multiply a backend-wide figure:

- `PrometheusHook` (`hook.py`), registered on a worker's app: per-process counters and
  histograms of the attempts *this process* ran (jobs, durations, waits, retries, active jobs,
  cost). ``conveyor worker --metrics-port`` serves them; Prometheus sums them over workers.
- `BackendCollector` (`exporter.py`), run once per backend by ``conveyor metrics --port``:
  gauges read from ``stats()`` and the worker registry (jobs by state, backlog age, live
  workers, open breakers).

Importing conveyor never needs prometheus-client; building either of these without it raises
`ConfigurationError` naming the extra.
"""

from __future__ import annotations

from .support import require_prometheus, serve

__all__ = ["BackendCollector", "PrometheusHook", "require_prometheus", "serve"]


def __getattr__(name: str) -> object:
    # Lazy: `conveyor.metrics` imports without prometheus-client; the classes need it.
    if name == "PrometheusHook":
        from .hook import PrometheusHook

        return PrometheusHook
    if name == "BackendCollector":
        from .exporter import BackendCollector

        return BackendCollector
    raise AttributeError(name)
