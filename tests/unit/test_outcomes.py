"""How an attempt's end becomes an outcome: completed, retry after a delay, or failed."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import Conveyor, Job, JobState, Permanent, Retry
from conveyor.backends.base import OutcomeKind
from conveyor.task import Task
from conveyor.worker.executor import (
    MAX_MESSAGE,
    MAX_TRACEBACK,
    JobTimeout,
    error_info,
    outcome_for_error,
    outcome_for_result,
)


def _task(**options: Any) -> Task:
    app = Conveyor("sqlite:///unused.db")

    @app.task(**options)
    async def t() -> None:
        return None

    return t


def _job(attempt: int, max_attempts: int) -> Job:
    return Job("j1", "default", "t", {}, 5, JobState.ACTIVE, attempt, max_attempts, token=7)


def test_result_becomes_completed() -> None:
    out = outcome_for_result(_job(1, 1), {"ok": [1, 2]})
    assert (out.kind, out.result, out.token) == (OutcomeKind.COMPLETED, {"ok": [1, 2]}, 7)


def test_a_result_json_cannot_hold_fails_the_job() -> None:
    out = outcome_for_result(_job(1, 3), {1, 2, 3})
    assert out.kind is OutcomeKind.FAILED
    assert out.error is not None and out.error["type"] == "ResultNotSerializable"


def test_error_with_attempts_left_retries_after_the_backoff() -> None:
    task = _task(retries=3, backoff_initial=2, backoff_factor=3, backoff_jitter=0)
    out = outcome_for_error(_job(2, 4), RuntimeError("boom"), task)
    assert out.kind is OutcomeKind.RETRY
    assert out.retry_in == 6.0
    assert out.error is not None and out.error["type"] == "RuntimeError"


def test_error_on_the_last_attempt_fails() -> None:
    out = outcome_for_error(_job(4, 4), RuntimeError("boom"), _task(retries=3))
    assert out.kind is OutcomeKind.FAILED
    assert out.error is not None and out.error["message"] == "boom"


def test_permanent_fails_even_with_attempts_left() -> None:
    out = outcome_for_error(_job(1, 10), Permanent("no"), _task(retries=9))
    assert out.kind is OutcomeKind.FAILED
    assert out.error is not None and out.error["type"] == "Permanent"


def test_retry_signal_sets_the_delay_and_overrides_the_backoff() -> None:
    out = outcome_for_error(_job(1, 3), Retry(after=42), _task(retries=2, backoff_initial=1))
    assert (out.kind, out.retry_in) == (OutcomeKind.RETRY, 42)
    # Without 'after' the backoff applies
    out = outcome_for_error(
        _job(1, 3), Retry(), _task(retries=2, backoff_initial=1, backoff_jitter=0)
    )
    assert out.retry_in == 1.0


def test_retry_signal_on_the_last_attempt_fails_saying_so() -> None:
    out = outcome_for_error(_job(2, 2), Retry(after=1, reason="upstream 429"), _task(retries=1))
    assert out.kind is OutcomeKind.FAILED
    assert out.error is not None and "used up" in out.error["message"]
    assert "upstream 429" in out.error["message"]


def test_unknown_task_retries_after_a_default_delay() -> None:
    out = outcome_for_error(_job(1, 2), LookupError("no handler"), None)
    assert out.kind is OutcomeKind.RETRY and out.retry_in > 0


def test_error_info_truncates_message_and_keeps_the_traceback_tail() -> None:
    try:
        raise ValueError("x" * (MAX_MESSAGE * 3))
    except ValueError as exc:
        info = error_info(exc)
    assert info["type"] == "ValueError"
    assert len(info["message"]) == MAX_MESSAGE
    assert len(info["traceback"]) <= MAX_TRACEBACK
    assert info["traceback"].rstrip().endswith("x")


def test_timeouts_and_retry_signals_store_no_traceback() -> None:
    for exc in (JobTimeout("timed out after 1s"), Retry(after=1)):
        out = outcome_for_error(_job(1, 2), exc, _task(retries=1))
        assert out.error is not None and "traceback" not in out.error


def test_retry_signal_rejects_a_negative_delay() -> None:
    from datetime import timedelta

    with pytest.raises(ValueError):
        Retry(after=-1)
    assert Retry(after=timedelta(minutes=1)).after == 60.0


def test_a_backoff_that_is_not_a_backoff_is_refused() -> None:
    from conveyor import ConfigurationError, Conveyor

    app = Conveyor("sqlite:///unused-outcomes.db")
    with pytest.raises(ConfigurationError, match="backoff_initial"):
        app.task(backoff=0.01)(lambda: None)


def test_an_outcome_that_cannot_be_computed_fails_the_job() -> None:
    # Given a task whose backoff raises (a broken custom object)
    task = _task(retries=3)

    class Broken:
        def delay(self, attempt: int) -> float:
            raise TypeError("broken backoff")

    object.__setattr__(task.options, "backoff", Broken())
    # Then the attempt fails for good, saying why, instead of raising in the worker
    out = outcome_for_error(_job(1, 3), RuntimeError("boom"), task)
    assert out.kind is OutcomeKind.FAILED
    assert "boom" in out.error["message"] and "broken backoff" in out.error["message"]
