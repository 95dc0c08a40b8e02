"""Reading a workflow back: `WorkflowInfo` from the jobs of one chain (`Backend.workflow_jobs`).

The state is derived from the jobs, never stored apart from them, so it cannot disagree with
them: the newest step decides. Progress spans the steps: the completed steps plus the current
step's own progress fraction, over the number of steps the workflow declared (a task's
``steps=`` option or ``Next(..., steps=)``; the newest declaration wins); without a declaration
the total is unknown and ``percent`` is None until the workflow is done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from .job import Job, JobState


class WorkflowState(StrEnum):
    RUNNING = "running"  # the current step is scheduled, queued or active (or handing over)
    AWAITING = "awaiting"  # the current step awaits input
    DONE = "done"  # a step completed without handing over
    FAILED = "failed"
    CANCELLED = "cancelled"


_OF_STEP = {
    JobState.COMPLETED: WorkflowState.DONE,
    JobState.FAILED: WorkflowState.FAILED,
    JobState.CANCELLED: WorkflowState.CANCELLED,
}


@dataclass(slots=True)
class WorkflowStep:
    """One step of a workflow: its job and how it went (error: type and message only)."""

    job_id: str
    task: str
    step: str
    status: JobState
    attempt: int
    max_attempts: int
    error: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: float | None  # the step's own percent, if it reported one
    next_jobs: tuple[str, ...] = ()


@dataclass(slots=True)
class WorkflowInfo:
    """A workflow (a chain of steps under one id: its first job's id), as stored now."""

    id: str
    status: WorkflowState
    current: str  # the step label of the newest step
    current_job: str
    steps: list[WorkflowStep]
    completed_steps: int
    total_steps: int | None  # declared; None: unknown
    percent: float | None  # over the declared steps; None when unknown
    tenant: str | None

    @property
    def labels(self) -> list[str]:
        """The step labels in order, e.g. ``["translating", "verifying", "reviewing"]``."""
        return [s.step for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the CLI's --json and the HTTP API print)."""
        data = asdict(self)
        data["status"] = self.status.value
        for s in data["steps"]:
            s["status"] = s["status"].value
            s["next_jobs"] = list(s["next_jobs"])
        return data


def workflow_of(data: dict[str, Any]) -> WorkflowInfo:
    """A `WorkflowInfo` from its JSON (`WorkflowInfo.to_dict`, the HTTP API's answer)."""
    steps = [WorkflowStep(**{**s, "status": JobState(s["status"]),
                             "next_jobs": tuple(s.get("next_jobs") or ())})
             for s in data["steps"]]  # fmt: skip
    return WorkflowInfo(**{**data, "status": WorkflowState(data["status"]), "steps": steps})


def _step(job: Job) -> WorkflowStep:
    err = None
    if job.error and job.status is not JobState.COMPLETED:
        err = {"type": job.error.get("type"), "message": job.error.get("message")}
    return WorkflowStep(
        job.id, job.task, job.step or job.task, job.status, job.attempt, job.max_attempts, err,
        job.created_at, job.started_at, job.finished_at, job.progress.percent, job.next_jobs,
    )  # fmt: skip


def workflow_info(workflow_id: str, jobs: list[Job]) -> WorkflowInfo:
    """The workflow of ``jobs`` (its root first, in creation order; at least one)."""
    steps = [_step(j) for j in jobs]
    last = jobs[-1]
    status = _OF_STEP.get(last.status, WorkflowState.RUNNING)
    if last.status is JobState.AWAITING:
        status = WorkflowState.AWAITING
    elif status is WorkflowState.DONE and last.next_jobs:
        status = WorkflowState.RUNNING  # handed over; the next step is being delivered
    completed = sum(1 for j in jobs if j.status is JobState.COMPLETED)
    total = next((j.steps for j in reversed(jobs) if j.steps), None)
    if status is WorkflowState.DONE:
        total = total if total is not None and total >= len(jobs) else len(jobs)
        percent: float | None = 100.0
    elif total is None:
        percent = None
    else:
        own = (last.progress.percent or 0.0) / 100 if last.status is JobState.ACTIVE else 0.0
        percent = round(min(100.0, 100.0 * (completed + own) / max(total, 1)), 2)
    return WorkflowInfo(workflow_id, status, steps[-1].step, last.id, steps, completed, total,
                        percent, last.tenant)  # fmt: skip


__all__ = ["WorkflowInfo", "WorkflowState", "WorkflowStep", "workflow_info", "workflow_of"]
