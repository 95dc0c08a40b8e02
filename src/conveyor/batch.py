"""`Batch`: a handle on jobs enqueued together, with counts, progress and an ETA."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backends.batches import BatchRecord
from .job import FINAL_STATES

if TYPE_CHECKING:
    from .producer import Producer

_FINAL = {s.value for s in FINAL_STATES}


@dataclass(slots=True)
class BatchStatus:
    """``eta``: seconds until every member ended, at the rate members ended so far (from the
    first start; with a record, from the batch's creation). ``record``: the batch record of a
    batch with callbacks (callbacks' job ids and states, fired, expiry), else None."""

    id: str
    total: int
    counts: dict[str, int]
    done: int
    percent: float
    eta: float | None  # seconds, from the rate jobs finished so far
    record: BatchRecord | None = None

    @property
    def finished(self) -> bool:
        if self.record is not None and self.record.fired:
            return True
        return self.total > 0 and self.done >= self.total

    def to_dict(self) -> dict[str, Any]:
        rec = self.record.to_dict() if self.record is not None else None
        return {"id": self.id, "total": self.total, "counts": self.counts, "done": self.done,
                "percent": self.percent, "eta": self.eta, "record": rec}  # fmt: skip


class Batch:
    """Jobs enqueued by one `enqueue_many` call. ``ids`` lists them in input order (the existing
    job's id where an idempotency key matched). With ``tenant`` the handle sees that tenant's
    jobs of the batch only (its items may have named several tenants): `status` counts them
    alone, and a batch with none of them reads as unknown (total 0)."""

    def __init__(
        self,
        app: Producer,
        id: str,
        ids: list[str],
        created: list[bool],
        *,
        tenant: str | None = None,
    ) -> None:
        self.app = app
        self.id = id
        self.ids = ids
        self.created = created
        self.tenant = tenant
        self.spooled = False  # True: kept in the app's spool until the backend is back

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"<Batch {self.id} jobs={len(self.ids)}>"

    async def status(self) -> BatchStatus:
        c = await self.app.backend.batch_counts(self.id, tenant=self.tenant)
        done = sum(n for s, n in c.counts.items() if s in _FINAL)
        percent = 100.0 * done / c.total if c.total else 0.0
        eta = None
        if c.first_started_at is not None and 0 < done < c.total:
            elapsed = max(1e-6, c.now - c.first_started_at)
            eta = elapsed / done * (c.total - done)
        elif c.total and done >= c.total:
            eta = 0.0
        return BatchStatus(self.id, c.total, c.counts, done, percent, eta, c.record)

    async def add(self, items: Any, **options: Any) -> Batch:
        """Add members to this open batch: ``app.enqueue_many(items, batch=self.id,
        tenant=self.tenant, **options)`` (the same call; raises `BatchClosed` once the batch's
        callbacks fired). Returns the handle of the added jobs."""
        return await self.app.enqueue_many(items, batch=self.id, tenant=self.tenant, **options)

    async def wait(self, timeout: float | None = None, poll: float = 0.1) -> BatchStatus:
        """Wait until every job of the batch is finished; raises TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            st = await self.status()
            if st.finished or st.total == 0:
                return st
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(
                    f"batch {self.id}: {st.done}/{st.total} finished after {timeout}s"
                )
            await asyncio.sleep(poll)
