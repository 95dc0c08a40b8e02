"""The jobs list's filters, kept in the URL: parsed and checked once, for the list, the bulk
confirmation and the bulk action (a crafted URL or form gets a clear 422, never a 500)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlencode

from ..app import Conveyor
from ..job import JobState
from ..server.errors import ApiError
from ..server.models_jobs import BulkFilter
from .web import Viewer

MAX_NAME = 512
FULL_ID = re.compile(r"[0-9a-f]{26}")
ID_PREFIX = re.compile(r"[0-9a-f]{1,26}")
#: Jobs the list scans for an id prefix (newest first, within the other filters).
ID_SCAN = 2000
#: Jobs a bulk confirmation counts one by one when no backend count answers exactly.
COUNT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class JobFilter:
    status: JobState | None = None
    queue: str | None = None
    task: str | None = None
    tenant: str | None = None
    batch: str | None = None
    id: str | None = None

    @classmethod
    def parse(cls, params: Mapping[str, object]) -> JobFilter:
        """From query or form fields; empty fields are no filter."""
        values: dict[str, str | None] = {}
        for f in fields(cls):
            raw = params.get(f.name)
            if raw is not None and not isinstance(raw, str):
                raise ApiError(422, "invalid", f"{f.name} must be text")
            text = (raw or "").strip() or None
            if text is not None and len(text) > MAX_NAME:
                raise ApiError(422, "invalid", f"{f.name} is longer than {MAX_NAME} characters")
            values[f.name] = text
        status = None
        if values["status"] is not None:
            try:
                status = JobState(values["status"])
            except ValueError:
                names = ", ".join(s.value for s in JobState)
                raise ApiError(422, "invalid", f"unknown status: use one of {names}") from None
        ident = values["id"]
        if ident is not None:
            ident = ident.lower()
            if not ID_PREFIX.fullmatch(ident):
                raise ApiError(422, "invalid", "id: a job id or its first hex digits (0-9, a-f)")
        return cls(status, values["queue"], values["task"], values["tenant"], values["batch"],
                   ident)  # fmt: skip

    def query(self, **extra: str | None) -> str:
        """The URL query of these filters (and ``extra``), empty fields left out."""
        pairs = {f.name: getattr(self, f.name) for f in fields(self)}
        pairs["status"] = self.status.value if self.status else None
        pairs.update(extra)
        return urlencode({k: v for k, v in pairs.items() if v})

    def given(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def bulk(self) -> BulkFilter:
        if self.id is not None:
            raise ApiError(422, "invalid", "bulk actions take status, queue, task, tenant or "
                           "batch filters, not an id prefix")  # fmt: skip
        return BulkFilter(status=self.status, queue=self.queue, task=self.task,
                          batch=self.batch, tenant=self.tenant)  # fmt: skip


async def count_matching(
    app: Conveyor, viewer: Viewer, filt: JobFilter, statuses: tuple[JobState, ...],
    tenant: str | None,
) -> tuple[int, bool]:  # fmt: skip
    """How many jobs of ``statuses`` match ``filt`` within ``tenant``: ``(n, exact)``. Exact
    from the backend's counts where they answer it (a batch's counts; a queue's counts for an
    admin without task or tenant filter); otherwise counted by listing, up to `COUNT_CAP`
    (``exact`` False beyond it)."""
    wanted = {s.value for s in statuses}
    if filt.batch is not None and filt.queue is None and filt.task is None:
        c = await app.backend.batch_counts(filt.batch, tenant=tenant)
        if c.record is None:
            return sum(n for s, n in c.counts.items() if s in wanted), True
    if tenant is None and filt.task is None and filt.batch is None:
        stats = await app.stats([filt.queue] if filt.queue else None)
        total = sum(st.counts.get(s, 0) for st in stats.values() for s in wanted)
        return total, True
    n = 0
    for status in statuses:
        cursor: str | None = None
        while n < COUNT_CAP:
            page = await app.list(status=status, queue=filt.queue, task=filt.task,
                                  batch=filt.batch, tenant=tenant, limit=1000,
                                  cursor=cursor)  # fmt: skip
            n += len(page.jobs)
            cursor = page.next_cursor
            if cursor is None:
                break
        if n >= COUNT_CAP:
            return n, False
    return n, True


__all__ = ["COUNT_CAP", "FULL_ID", "ID_SCAN", "JobFilter", "count_matching"]
