"""The job record, its states and transitions, and the exception tree."""

from __future__ import annotations

import orjson
import pytest

from conveyor import (
    BackendCorrupt,
    BackendError,
    BackendLocked,
    BackendUnavailable,
    ConfigurationError,
    ConveyorError,
    Job,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobState,
    JobStateError,
    Progress,
    UnknownTask,
    ValidationError,
)
from conveyor.job import FINAL_STATES, TRANSITIONS


def _job(**kw: object) -> Job:
    base: dict[str, object] = {
        "id": "j", "queue": "q", "task": "t", "payload": {}, "priority": 5,
        "status": JobState.ACTIVE,
    }  # fmt: skip
    return Job(**(base | kw))  # type: ignore[arg-type]


def test_final_states_allow_only_manual_retry() -> None:
    assert {s for s in JobState if s.is_final} == set(FINAL_STATES)
    assert TRANSITIONS[JobState.COMPLETED] == frozenset()
    assert TRANSITIONS[JobState.FAILED] == {JobState.QUEUED}
    assert TRANSITIONS[JobState.CANCELLED] == {JobState.QUEUED}
    # And every state can be cancelled until it is final
    for s in JobState:
        assert (JobState.CANCELLED in TRANSITIONS[s]) is (not s.is_final)


def test_eta_from_progress_rate() -> None:
    # Given an active job 25% done after 10 s
    job = _job(started_at=100.0, progress=Progress(percent=25, updated_at=110.0))
    # Then it expects 30 s more
    assert job.eta == pytest.approx(30.0)
    assert _job(started_at=100.0, progress=Progress(percent=100, updated_at=110.0)).eta == 0.0


@pytest.mark.parametrize(
    "job",
    [
        _job(started_at=100.0),  # no progress yet
        _job(started_at=100.0, progress=Progress(percent=0, updated_at=110.0)),
        _job(status=JobState.COMPLETED, started_at=100.0, progress=Progress(percent=50)),
        _job(progress=Progress(percent=50, updated_at=110.0)),  # never started
    ],
)
def test_eta_is_unknown_without_a_rate(job: Job) -> None:
    assert job.eta is None


def test_to_dict_is_json_ready() -> None:
    job = _job(started_at=1.0, progress=Progress(percent=50, updated_at=2.0, meta={"k": 1}))
    data = job.to_dict()
    assert data["status"] == "active"
    assert data["eta"] == pytest.approx(1.0)
    assert data["progress"]["meta"] == {"k": 1}
    assert orjson.loads(orjson.dumps(data)) == data


def test_exception_tree() -> None:
    assert issubclass(ConfigurationError, ConveyorError) and issubclass(
        ConfigurationError, ValueError
    )
    assert issubclass(UnknownTask, ValidationError) and issubclass(ValidationError, ValueError)
    assert issubclass(JobNotFound, KeyError) and issubclass(JobNotFound, ConveyorError)
    for exc in (BackendUnavailable, BackendLocked, BackendCorrupt):
        assert issubclass(exc, BackendError)
    for exc in (JobStateError, JobFailed, JobCancelled, BackendError):
        assert issubclass(exc, ConveyorError)


def test_error_messages_name_the_job() -> None:
    assert str(JobNotFound("abc")) == "job 'abc' not found"
    assert (
        str(JobStateError("abc", "completed", "cancel"))
        == "cannot cancel job 'abc': it is completed"
    )
    failed = JobFailed("abc", {"type": "KeyError", "message": "k"})
    assert "KeyError" in str(failed) and failed.error["message"] == "k"
    assert JobFailed("abc", None).error == {}
    unknown = UnknownTask("nope", ["b", "a"])
    assert unknown.field == "task" and "a, b" in str(unknown)
