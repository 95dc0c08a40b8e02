"""`PrometheusHook` alone: its methods called directly, values read from its registry."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor.backends.base import Outcome, OutcomeKind
from conveyor.errors import ConfigurationError
from conveyor.job import Job, JobState
from conveyor.metrics import PrometheusHook
from tests.workers import subprocess_env


def _job(**kw: Any) -> Job:
    base: dict[str, Any] = {"id": "j1", "queue": "q", "task": "t", "payload": {}, "priority": 5,
                            "status": JobState.ACTIVE, "attempt": 1, "token": 1,
                            "created_at": 100.0, "started_at": 102.5}  # fmt: skip
    return Job(**(base | kw))


async def _run(hook: PrometheusHook, job: Job, kind: OutcomeKind, **outcome: Any) -> None:
    # What the worker hands the hook at an attempt's outcome: the run time comes with it
    hook.after_outcome(job, Outcome(job.id, job.token, kind, seconds=0.004, **outcome))


async def test_each_outcome_is_counted_timed_and_the_wait_observed() -> None:
    # Given a hook, and attempts that end in each way
    hook = PrometheusHook()
    get = hook.registry.get_sample_value
    # When two complete, one retries (due at 110, started 111), one fails
    await _run(hook, _job(), OutcomeKind.COMPLETED)
    await _run(hook, _job(id="j2"), OutcomeKind.COMPLETED)
    await _run(hook, _job(id="j3", scheduled_for=110.0, started_at=111.0), OutcomeKind.RETRY)
    await _run(hook, _job(id="j4", task="u"), OutcomeKind.FAILED)
    # Then counters and histogram counts are exact, per label set
    assert get("conveyor_jobs_total", {"queue": "q", "task": "t", "outcome": "completed"}) == 2
    assert get("conveyor_jobs_total", {"queue": "q", "task": "t", "outcome": "retry"}) == 1
    assert get("conveyor_jobs_total", {"queue": "q", "task": "u", "outcome": "failed"}) == 1
    assert get("conveyor_retries_total", {"queue": "q", "task": "t"}) == 1
    assert get("conveyor_retries_total", {"queue": "q", "task": "u"}) is None
    labels = {"queue": "q", "task": "t", "outcome": "completed"}
    assert get("conveyor_job_duration_seconds_count", labels) == 2
    assert get("conveyor_job_duration_seconds_sum", labels) == pytest.approx(0.008)
    assert get("conveyor_job_duration_seconds_bucket", labels | {"le": "0.0025"}) == 0
    assert get("conveyor_job_duration_seconds_bucket", labels | {"le": "0.005"}) == 2
    assert get("conveyor_job_wait_seconds_count", {"queue": "q", "task": "t"}) == 3
    # the waits: 2.5, 2.5 (from enqueue) and 1.0 (from the due time)
    assert get("conveyor_job_wait_seconds_sum", {"queue": "q", "task": "t"}) == pytest.approx(6.0)
    assert get("conveyor_job_wait_seconds_bucket", {"queue": "q", "task": "t", "le": "1.0"}) == 1
    assert get("conveyor_job_wait_seconds_bucket", {"queue": "q", "task": "t", "le": "2.5"}) == 3
    assert get("conveyor_job_wait_seconds_bucket", {"queue": "q", "task": "t", "le": "+Inf"}) == 3


def test_an_attempt_handed_back_before_it_ran_is_counted_not_timed() -> None:
    # Given an outcome without a run time (released at shutdown before its handler started)
    hook = PrometheusHook()
    job = _job()
    hook.after_outcome(job, Outcome(job.id, job.token, OutcomeKind.RELEASED))
    # Then it is counted, and neither timed nor its wait observed
    get = hook.registry.get_sample_value
    labels = {"queue": "q", "task": "t", "outcome": "released"}
    assert get("conveyor_jobs_total", labels) == 1
    assert get("conveyor_job_duration_seconds_count", labels) is None
    assert get("conveyor_job_wait_seconds_count", {"queue": "q", "task": "t"}) is None


async def test_tenant_is_a_label_only_when_allowed_and_cost_is_summed() -> None:
    # Given a hook without and one with the tenant label
    plain, tenanted = PrometheusHook(), PrometheusHook(tenant_label=True)
    job = _job(tenant="acme")
    for hook in (plain, tenanted):
        await _run(hook, job, OutcomeKind.COMPLETED, cost={"usd": 0.25, "tokens": 120.0})
        await _run(hook, _job(id="j2"), OutcomeKind.COMPLETED, cost={"usd": 0.5})
    # Then only the second has tenant series, and cost is summed per task and unit
    names = {s.labels.get("tenant") for m in plain.registry.collect() for s in m.samples}
    assert names == {None}
    assert tenanted.registry.get_sample_value(
        "conveyor_jobs_total", {"queue": "q", "task": "t", "outcome": "completed", "tenant": "acme"}
    ) == 1  # fmt: skip
    get = plain.registry.get_sample_value
    assert get("conveyor_job_cost_total", {"task": "t", "unit": "usd"}) == pytest.approx(0.75)
    assert get("conveyor_job_cost_total", {"task": "t", "unit": "tokens"}) == 120


def test_conveyor_imports_without_prometheus_client_and_metrics_name_the_extra() -> None:
    # Given a Python where prometheus_client cannot be imported
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import conveyor, conveyor.cli, conveyor.metrics\n"
        "from conveyor.errors import ConfigurationError\n"
        "try:\n    conveyor.metrics.PrometheusHook()\n"
        "except ConfigurationError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    # Then conveyor imports, and asking for metrics names the extra
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "conveyor[metrics]" in out.stdout


def test_the_missing_extra_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"conveyor\[metrics\]"):
        PrometheusHook()


def test_rate_limited_claims_of_the_started_workers_are_summed_at_scrape() -> None:
    # Given a hook that saw two workers start (their claims' rate-gate refusals, per queue)
    hook = PrometheusHook()
    a = SimpleNamespace(rate_limited={"q": 2}, queues=["q"], running={})
    b = SimpleNamespace(rate_limited={"q": 1, "r": 4}, queues=["q", "r"], running={})
    hook.on_worker_start(a)  # type: ignore[arg-type]
    hook.on_worker_start(b)  # type: ignore[arg-type]
    a.rate_limited["q"] += 1
    # Then a scrape reads their current counts
    get = hook.registry.get_sample_value
    assert get("conveyor_rate_limited_total", {"queue": "q"}) == 4
    assert get("conveyor_rate_limited_total", {"queue": "r"}) == 4
