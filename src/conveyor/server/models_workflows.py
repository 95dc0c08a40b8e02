"""Response models of ``GET /v1/workflows/{id}`` (`conveyor.workflows.WorkflowInfo`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class WorkflowStepOut(BaseModel):
    job_id: str
    task: str
    step: str = Field(description="the step label (the task's name when none was given)")
    status: str = Field(description="the step job's state")
    attempt: int
    max_attempts: int
    error: dict[str, Any] | None = Field(None, description="type and message of its error")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: float | None = Field(None, description="the step's own percent, if reported")
    next_jobs: list[str] = Field(default_factory=list)


class WorkflowOut(BaseModel):
    id: str = Field(description="the workflow id: its first job's id")
    status: str = Field(description="running, awaiting, done, failed or cancelled")
    current: str = Field(description="the step label of the newest step")
    current_job: str
    steps: list[WorkflowStepOut] = Field(description="in order, first step first")
    completed_steps: int
    total_steps: int | None = Field(None, description="as declared; null: unknown")
    percent: float | None = Field(
        None, description="completed steps plus the current one's fraction, over total_steps"
    )
    tenant: str | None = None
