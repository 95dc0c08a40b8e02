"""Request and response models (pydantic v2): they are the OpenAPI schema at ``/openapi.json``.
Field checks that the producer API already makes (priority names, delay range, payload size,
idempotency key shape) are left to it, so the API and the library refuse the same input with the
same message."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class ProgressOut(BaseModel):
    percent: float | None = None
    message: str | None = None
    stage: str | None = None
    meta: dict[str, Any] | None = None
    updated_at: float | None = None


class FanInOut(BaseModel):
    """A fan-in parent's children (its last ``spawn_many`` round; their ids are ``next_jobs``)."""

    policy: str = Field(description="fail_parent, ignore or continue")
    cancel_siblings: bool
    total: int = Field(description="children spawned")
    settled: int = Field(description="children final (completed, failed or cancelled)")
    failed: int = Field(description="children failed or cancelled")
    waiting: bool = Field(description="the parent is still parked for its children")


class JobOut(BaseModel):
    id: str
    queue: str
    task: str
    payload: dict[str, Any]
    priority: int
    status: str
    attempt: int
    max_attempts: int
    progress: ProgressOut
    result: Any = None
    error: dict[str, Any] | None = None
    tenant: str | None = None
    batch: str | None = None
    workflow: str | None = None
    parent: str | None = None
    idempotency_key: str | None = None
    created_at: float
    scheduled_for: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    meta: dict[str, Any] | None = None
    cost: dict[str, float] | None = None
    eta: float | None = Field(None, description="seconds until an active job should finish")
    step: str | None = Field(None, description="chains: the step label (null: the task's name)")
    steps: int | None = Field(None, description="chains: the steps its workflow declares")
    next_jobs: list[str] = Field(
        default_factory=list, description="chains: jobs created with its outcome (its Next)"
    )
    prompt: Any = Field(None, description="the prompt of the job's last await (AwaitInput)")
    await_deadline: float | None = Field(
        None, description="while awaiting: when on_timeout applies (epoch seconds; null: never)"
    )
    on_timeout: str | None = Field(None, description="fail, cancel or resume")
    input: Any = Field(None, description="the decision of the job's last resume")
    resumes: int = Field(0, description="how many times the job was resumed")
    fanin: FanInOut | None = Field(
        None, description="fan-in: its children's state (null: it never spawned children)"
    )


class ResumeJob(BaseModel):
    """The body of ``POST /v1/jobs/{id}/resume`` (optional: no body resumes with no data)."""

    model_config = ConfigDict(extra="forbid")

    data: Any = Field(None, description="the decision (any JSON, up to 64 KiB)")


class Estimate(BaseModel):
    """When the job should start and finish, from the queue's depth ahead of it, the measured
    run time of its queue and the live capacity (see `conveyor.server.estimate`)."""

    start_at: float = Field(description="epoch seconds")
    finish_at: float = Field(description="epoch seconds")
    # The figures behind it sum up every tenant's work: admin keys only (null for tenant keys,
    # as in /v1/stats).
    ahead: int | None = Field(None, description="jobs of the queue ahead of this one (admin)")
    run_seconds: float | None = Field(None, description="the queue's measured run time (admin)")
    capacity: int | None = Field(None, description="live workers' slots for the queue (admin)")


class SubmitJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int | str | None = None
    delay: float | None = Field(None, description="seconds from now")
    idempotency_key: str | None = Field(
        None, description="also accepted as the Idempotency-Key header"
    )
    max_attempts: int | None = None
    tenant: str | None = Field(None, description="admin keys only; a tenant key's own tenant")
    meta: dict[str, Any] | None = None


class Submitted(BaseModel):
    job: JobOut
    created: bool = Field(description="false when the idempotency key matched an existing job")
    estimate: Estimate | None = None
