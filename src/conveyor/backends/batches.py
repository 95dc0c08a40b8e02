"""Batch records and their callbacks: what every backend stores and how it fires them.

A batch gets a **record** when ``enqueue_many`` names callbacks (``on_complete``,
``on_success``): its tenant, creation time, member total and final counts, the callbacks' job
templates, and whether they fired. Members update the record in the same atomic step as their own
transition to a final state, so the counts survive member retention; the record lives until
``ttl`` seconds after the callbacks fired. See docs/architecture.md, "Batches and callbacks".

Callbacks are jobs like any other (their task's queue, retries and timeouts), built from a
template stored with the record and given the payload `callback_payload`. Their ids are derived
from the batch id (`callback_id`): a second attempt to enqueue one creates nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:  # base.py imports this module (Backend is a BatchStore)
    from .base import EnqueueResult, NewJob

BATCH_TTL = 7 * 24 * 3600.0
"""Seconds a batch record is kept after its callbacks fired (default of ``batch_ttl``)."""

FINAL = ("completed", "failed", "cancelled")
CALLBACKS = ("on_complete", "on_success")


def callback_id(batch: str, name: str) -> str:
    """The job id of a batch's callback: derived from the batch id, so enqueuing it twice
    creates one job."""
    return f"{batch}-{name}"


def callback_payload(batch: str, counts: Mapping[str, int], total: int) -> dict[str, Any]:
    """What a callback task receives: ``batch`` (id), ``counts`` (members by final state) and
    ``total`` (members)."""
    return {"batch": batch, "counts": {s: int(counts.get(s, 0)) for s in FINAL}, "total": total}


@dataclass(slots=True)
class NewBatch:
    """A batch record to create (``callbacks`` given) or an existing one to add members to
    (``callbacks`` empty). ``callbacks``: (name, template job) with an empty payload."""

    id: str
    tenant: str | None
    callbacks: Sequence[tuple[str, NewJob]] = ()
    ttl: float = BATCH_TTL

    @property
    def create(self) -> bool:
        return bool(self.callbacks)


@dataclass(slots=True)
class BatchRecord:
    """The stored record of a batch with callbacks, as `Backend.batch_counts` reports it.

    ``callbacks``: per callback, ``name``, ``task``, ``queue``, ``job_id`` and ``state``:
    ``waiting`` (the batch is open), ``enqueued`` (the callback job exists, whatever it did
    since), or ``skipped`` (``on_success`` of a batch whose members did not all complete)."""

    created_at: float
    fired: bool
    fired_at: float | None
    expires_at: float | None
    callbacks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"created_at": self.created_at, "fired": self.fired, "fired_at": self.fired_at,
                "expires_at": self.expires_at, "callbacks": self.callbacks}  # fmt: skip


def encode_callbacks(callbacks: Sequence[tuple[str, NewJob]]) -> str:
    """The callbacks' templates as stored with the record (JSON)."""
    return orjson.dumps([
        {"name": name, "id": j.id, "queue": j.queue, "task": j.task, "priority": j.priority,
         "max_attempts": j.max_attempts, "max_stalls": j.max_stalls, "timeout": j.timeout,
         "lease": j.lease, "delay": j.delay, "tenant": j.tenant, "meta": j.meta}
        for name, j in callbacks
    ]).decode()  # fmt: skip


def decode_callbacks(text: str | bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = orjson.loads(text)
    return out


def callback_jobs(
    batch: str, stored: str | bytes, counts: Mapping[str, int], total: int
) -> list[NewJob]:
    """The callback jobs to enqueue now that every member ended: ``on_complete`` always,
    ``on_success`` only when every member completed."""
    from .base import NewJob

    payload = orjson.dumps(callback_payload(batch, counts, total)).decode()
    jobs = []
    for c in decode_callbacks(stored):
        if c["name"] == "on_success" and int(counts.get("completed", 0)) != total:
            continue
        jobs.append(
            NewJob(c["id"], c["queue"], c["task"], payload, c["priority"], c["max_attempts"],
                   c["max_stalls"], c["timeout"], c["lease"], c["delay"], c["tenant"],
                   meta=c["meta"])
        )  # fmt: skip
    return jobs


def callback_states(
    stored: str | bytes, fired: bool, counts: Mapping[str, int], total: int
) -> list[dict[str, Any]]:
    """What `BatchRecord.callbacks` shows of each callback."""
    out = []
    for c in decode_callbacks(stored):
        state = "waiting"
        if fired:
            ok = c["name"] != "on_success" or int(counts.get("completed", 0)) == total
            state = "enqueued" if ok else "skipped"
        out.append({"name": c["name"], "task": c["task"], "queue": c["queue"],
                    "job_id": c["id"], "state": state})  # fmt: skip
    return out


class BatchStore(Protocol):
    """The batch operations of `Backend` (see docs/architecture.md, "Batches and callbacks")."""

    async def enqueue_batch(
        self,
        batch: NewBatch,
        jobs: Sequence[NewJob],
        *,
        max_queued: Mapping[str, int] | None = None,
    ) -> EnqueueResult:
        """Store ``jobs`` as members of ``batch``, as `enqueue_jobs` does (all or none,
        idempotency keys, backpressure). With ``batch.callbacks`` the record is created with
        them (ValidationError when the id exists); without, the members join the open batch of
        that id and tenant: `BatchNotFound` when there is none (or it is another tenant's),
        `BatchClosed` when its callbacks fired (nothing stored either way). Only jobs this call
        creates count as members. When the batch has then no member left to end (e.g. every
        item matched an existing job), its callbacks fire at once."""

    async def settle_batches(self, queues: Sequence[str]) -> int:
        """Fire the callbacks of batches whose last member ended in ``queues`` but whose
        callbacks were not enqueued yet (the process that ended it died first). Every worker
        runs it periodically for its queues. Idempotent; returns how many batches it fired.
        A no-op where callbacks fire in the member's own atomic step (SQLite)."""
