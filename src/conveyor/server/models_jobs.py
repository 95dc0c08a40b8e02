"""Request and response models of the job listing, batch and bulk routes (``/v1/jobs``,
``/v1/jobs/batch``, ``/v1/batches/{id}``, ``/v1/jobs/cancel|retry``). As in `server.models`,
checks the producer API already makes are left to it so both refuse the same input alike."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..job import JobState
from .models import Estimate, JobOut

#: The most jobs one ``POST /v1/jobs/batch`` may carry (larger sets: several batches).
MAX_BATCH = 10_000


class JobPageOut(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(
        None, description="pass as `cursor` for the next page; null on the last page"
    )


class BatchItem(BaseModel):
    """One job of a batch: the fields of ``POST /v1/jobs`` but the tenant (a batch has one)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int | str | None = None
    delay: float | None = Field(None, description="seconds from now")
    idempotency_key: str | None = Field(
        None, description="not with the Idempotency-Key header (which keys every item)"
    )
    max_attempts: int | None = None
    meta: dict[str, Any] | None = None


class BatchCallback(BaseModel):
    """A batch callback with options (its task's queue and other options are the task's)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200)
    priority: int | str | None = None
    max_attempts: int | None = None
    meta: dict[str, Any] | None = None


class AddToBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)
    priority: int | str | None = Field(None, description="for items that set none")
    delay: float | None = Field(None, description="seconds from now, for items that set none")
    tenant: str | None = Field(None, description="admin keys only; a tenant key's own tenant")


class SubmitBatch(AddToBatch):
    on_complete: str | BatchCallback | None = Field(
        None, description="task enqueued once when every job ended (completed, failed, cancelled)"
    )
    on_success: str | BatchCallback | None = Field(
        None, description="task enqueued once when every job completed (else never)"
    )
    batch_ttl: float | None = Field(
        None, description="seconds the batch record is kept after its callbacks fired (7 days)"
    )


class BatchRecordOut(BaseModel):
    created_at: float
    fired: bool = Field(description="the callbacks fired: the batch takes no more jobs")
    fired_at: float | None = None
    expires_at: float | None = None
    callbacks: list[dict[str, Any]] = Field(
        default_factory=list,
        description="name, task, queue, job_id, state (waiting, enqueued or skipped)",
    )


class BatchRef(BaseModel):
    id: str
    total: int = Field(description="jobs in this request")
    created: int = Field(description="jobs stored by this request (0: an idempotent replay)")


class BatchSubmitted(BaseModel):
    batch: BatchRef
    jobs: list[str] = Field(description="job ids in item order")
    estimate: Estimate | None = Field(
        None, description="when the batch's first job should start and its last finish"
    )


class BatchOut(BaseModel):
    id: str
    total: int
    counts: dict[str, int]
    done: int = Field(description="jobs in a final state")
    percent: float
    eta: float | None = Field(None, description="seconds until the batch should be done")
    record: BatchRecordOut | None = Field(
        None, description="the record of a batch with callbacks (null: no callbacks)"
    )


class BulkFilter(BaseModel):
    """Which jobs a bulk action applies to: every field given must match (at least one)."""

    model_config = ConfigDict(extra="forbid")

    status: JobState | None = Field(
        None,
        description="cancel: scheduled, queued, awaiting or active (default: all four); "
        "retry: failed or cancelled (default: both)",
    )
    queue: str | None = Field(None, min_length=1, max_length=512)
    task: str | None = Field(None, min_length=1, max_length=512)
    batch: str | None = Field(None, min_length=1, max_length=512)
    tenant: str | None = Field(
        None, min_length=1, max_length=512, description="admin keys only (others: their own)"
    )

    def given(self) -> bool:
        return any(
            v is not None for v in (self.status, self.queue, self.task, self.batch, self.tenant)
        )


class BulkResult(BaseModel):
    matched: int = Field(description="jobs that matched the filter when listed")
    changed: int = Field(description="jobs this request cancelled or requeued")
