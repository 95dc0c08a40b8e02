"""`PrometheusHook`: per-process job metrics of a worker, as a hook (``hooks.py`` protocol).

Metrics (labels bounded: queue, task, outcome; ``tenant`` only with ``tenant_label=True``)::

    conveyor_jobs_total{queue,task,outcome}             attempts ended, by outcome kind
    conveyor_job_duration_seconds{queue,task,outcome}   handler time of an attempt (histogram)
    conveyor_job_wait_seconds{queue,task}               due time (or enqueue) -> start (histogram)
    conveyor_retries_total{queue,task}                  attempts that ended in a retry
    conveyor_active_jobs{queue}                         attempts running in this process now
    conveyor_rate_limited_total{queue}                  flows a rate gate held back at a claim
    conveyor_job_cost_total{task,unit}                  what handlers reported with ctx.cost

Per process: serve them from each worker (``conveyor worker --metrics-port``) and let
Prometheus sum over workers. Backend-wide gauges come from ``conveyor metrics`` instead.

The per-attempt cost is a few dict lookups and five metric updates: label children are
cached per label set, never looked up through ``labels()`` on the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..backends.base import Outcome, OutcomeKind
from ..hooks import Hooks
from ..job import Job
from ..worker.context import Context
from .support import BUCKETS, require_prometheus

if TYPE_CHECKING:
    from ..worker.runtime import Worker

_MAX_PENDING = 100_000  # attempts timed but not yet given an outcome (lost ones are dropped)


class PrometheusHook(Hooks):
    """Worker-side Prometheus metrics. ``registry``: where the metrics register (default: a
    new `CollectorRegistry`, so several apps in one process do not clash; pass
    ``prometheus_client.REGISTRY`` to share the global one). ``tenant_label``: add ``tenant``
    to the per-job metrics (off by default: tenants can be many, and a label per tenant is a
    series per tenant)."""

    def __init__(self, registry: Any = None, *, tenant_label: bool = False) -> None:
        prom = require_prometheus()
        self.registry = prom.CollectorRegistry() if registry is None else registry
        self.tenant_label = tenant_label
        t = ("tenant",) if tenant_label else ()
        reg = self.registry
        self.jobs = prom.Counter("conveyor_jobs_total", "Attempts ended, by outcome.",
                                 ("queue", "task", "outcome", *t), registry=reg)  # fmt: skip
        self.duration = prom.Histogram(
            "conveyor_job_duration_seconds", "Handler time of an attempt, by outcome.",
            ("queue", "task", "outcome", *t), buckets=BUCKETS, registry=reg)  # fmt: skip
        self.wait = prom.Histogram(
            "conveyor_job_wait_seconds", "From the job's due time (or enqueue) to its start.",
            ("queue", "task", *t), buckets=BUCKETS, registry=reg)  # fmt: skip
        self.retries = prom.Counter("conveyor_retries_total", "Attempts that ended in a retry.",
                                    ("queue", "task", *t), registry=reg)  # fmt: skip
        self.active = prom.Gauge("conveyor_active_jobs", "Attempts running in this process.",
                                 ("queue",), registry=reg)  # fmt: skip
        self.cost = prom.Counter("conveyor_job_cost", "Cost handlers reported (ctx.cost).",
                                 ("task", "unit"), registry=reg)  # fmt: skip
        self._workers: list[Worker] = []
        self.registry.register(_RateLimited(self._workers))
        self._children: dict[tuple[Any, ...], Any] = {}
        self._started: dict[tuple[str, int], float] = {}  # (job id, token) -> perf_counter

    def on_worker_start(self, worker: Worker) -> None:
        # Rate-gate refusals come back with the worker's claims (`ClaimResult.rate_limited`),
        # not with an attempt: read the worker's counts at scrape time (no hot-path cost).
        if worker not in self._workers:
            self._workers.append(worker)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _labels(self, job: Job) -> tuple[str, ...]:
        if self.tenant_label:
            return (job.queue, job.task, job.tenant or "")
        return (job.queue, job.task)

    async def around_execute(self, ctx: Context, call_next: Callable[[], Awaitable[Any]]) -> Any:
        job = ctx.job
        if job.started_at is not None:
            ready = job.scheduled_for or job.created_at
            self._child(self.wait, *self._labels(job)).observe(max(0.0, job.started_at - ready))
        active = self._child(self.active, job.queue)
        active.inc()
        started = time.perf_counter()
        try:
            return await call_next()
        finally:
            active.dec()
            if len(self._started) >= _MAX_PENDING:
                self._started.clear()  # outcomes never reported (lost attempts): forget them
            self._started[(job.id, job.token)] = time.perf_counter() - started

    def after_outcome(self, job: Job, outcome: Outcome) -> None:
        took = self._started.pop((job.id, job.token), None)
        kind = outcome.kind
        labels = self._labels(job)
        outcome_labels = (labels[0], labels[1], str(kind), *labels[2:])
        self._child(self.jobs, *outcome_labels).inc()
        if took is not None:
            self._child(self.duration, *outcome_labels).observe(took)
        if kind is OutcomeKind.RETRY:
            self._child(self.retries, *labels).inc()
        for unit, amount in _costs(job, outcome).items():
            self._child(self.cost, job.task, unit).inc(amount)


class _RateLimited:
    """``conveyor_rate_limited_total{queue}``: the started workers' counts, read at scrape."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("conveyor_rate_limited", "Flows a rate gate held back "
                                     "when this process claimed.", labels=("queue",))  # fmt: skip
        sums: dict[str, int] = {}
        for w in tuple(self.workers):
            for q, n in tuple(w.rate_limited.items()):
                sums[q] = sums.get(q, 0) + n
        for q, n in sorted(sums.items()):
            family.add_metric((q,), float(n))
        yield family


def _costs(job: Job, outcome: Outcome) -> dict[str, float]:
    """The cost this attempt reported, by unit (empty when none)."""
    cost = getattr(outcome, "cost", None)
    if not cost:
        return {}
    return {str(u): float(a) for u, a in cost.items() if isinstance(a, int | float) and a > 0}
