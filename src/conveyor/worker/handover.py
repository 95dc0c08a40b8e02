"""The worker's side of a chain: a handler's `Next` turned into the job created with the current
job's completion (`Outcome.then`), validated here, before anything is sent.

The next job's id is assigned now, once per attempt's outcome: a resent or replayed outcome
carries the same id, and the backends store an id once, so it can never create a second job.
A `Next` that cannot be stored (unknown task, bad payload or options) fails the current attempt
for good with an ``InvalidNext`` error naming why: the same code would return the same `Next`,
and a lost step would be silent."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..awaiting import AwaitInput
from ..backends.base import NewJob, Outcome, OutcomeKind
from ..chains import Next, check_step
from ..errors import ConveyorError, ValidationError
from ..fanin import MAX_CHILDREN, AwaitChildren, FanOut
from ..meta import encoded_meta
from ..newjobs import JobBuilder
from ..options import check_options, check_queue_name
from .executor import MAX_MESSAGE, outcome_for_result

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..inputs import PayloadLimits
    from ..job import Job


# A children park reuses the await transition with no prompt and no deadline.
_NO_PROMPT = AwaitInput(None)


class HandOver:
    """Builds the next step's job from a `Next`, with the catalog the producers use."""

    def __init__(self, catalog: Catalog, limits: PayloadLimits) -> None:
        self._builder = JobBuilder(catalog, limits)

    def result(
        self, job: Job, result: Any, spawned: list[NewJob] | None = None,
        fanout: FanOut | None = None,
    ) -> Outcome:  # fmt: skip
        """The outcome of a handler that returned ``result``: a `Next` hands over; an
        `AwaitChildren` parks the job with the children it ``spawned`` (``ctx.spawn_many``)."""
        if spawned or type(result) is AwaitChildren:
            return self.park(job, result, spawned or [], fanout or FanOut())
        if type(result) is Next:
            return self.outcome(job, result)
        return outcome_for_result(job, result)

    @staticmethod
    def park(job: Job, result: Any, spawned: list[NewJob], fanout: FanOut) -> Outcome:
        """The parking outcome of a fan-out (children in ``then``), or a failure for good
        naming why it cannot be: no child spawned, or children spawned but not awaited."""
        if type(result) is not AwaitChildren:
            error = {"type": "ChildrenNotAwaited",
                     "message": f"the handler spawned {len(spawned)} children but returned "
                                f"{type(result).__name__}, not AwaitChildren(): no child was "
                                "created"}  # fmt: skip
            return Outcome(job.id, job.token, OutcomeKind.FAILED, error=error)
        if not spawned:
            error = {"type": "NoChildren",
                     "message": "the handler returned AwaitChildren() without spawning a child "
                                "(ctx.spawn_many / ctx.spawn)"}  # fmt: skip
            return Outcome(job.id, job.token, OutcomeKind.FAILED, error=error)
        out = Outcome(job.id, job.token, OutcomeKind.AWAIT, wait=_NO_PROMPT, fanout=fanout)
        out.then = tuple(spawned)
        return out

    def children(self, job: Job, items: Any, already: int) -> list[NewJob]:
        """The children of ``job`` built from ``enqueue_many``-like ``items`` with the
        producers' own builder (no I/O): ``parent`` = the job, its tenant, workflow and meta.
        Raises `ValidationError` / `UnknownTask` naming the item."""
        if isinstance(items, str | bytes | dict):
            raise ValidationError(
                "spawn_many takes a list of (task, payload) or dicts, not a single item",
                field="items",
            )
        jobs = self._builder.many(items, None, 0.0, job.tenant, "", time.time())
        if already + len(jobs) > MAX_CHILDREN:
            raise ValidationError(
                f"a job may spawn at most {MAX_CHILDREN:,} children per attempt",
                field="items",
            )
        meta = encoded_meta(job.meta) if job.meta else None
        for i, nj in enumerate(jobs):
            if nj.tenant != job.tenant:
                raise ValidationError(
                    f"items[{i}]: a child runs under its parent's tenant",
                    field=f"items[{i}].tenant",
                )
            nj.batch = None
            nj.workflow = job.workflow or job.id
            nj.parent = job.id
            if meta is not None and nj.meta is None:
                nj.meta = meta
        return jobs

    def outcome(self, job: Job, nxt: Next) -> Outcome:
        """The current attempt's outcome: completed with ``nxt.result`` and the next job in
        ``then``, or failed for good when the next job cannot be stored. Never raises."""
        try:
            nj = self.next_job(job, nxt)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ConveyorError) else f"{type(exc).__name__}"
            error = {"type": "InvalidNext",
                     "message": f"the handler returned Next({str(nxt.task)[:100]!r}, ...) that "
                                f"cannot be stored: {reason}"[:MAX_MESSAGE]}  # fmt: skip
            return Outcome(job.id, job.token, OutcomeKind.FAILED, error=error)
        out = outcome_for_result(job, nxt.result)
        if out.kind is OutcomeKind.COMPLETED:
            out.then = (nj,)
        return out

    def next_job(self, job: Job, nxt: Next) -> NewJob:
        """The next step's job: the task's defaults, the `Next`'s overrides, and the current
        job's workflow (its own id when it starts one), tenant and meta; ``parent`` = it."""
        t = self._builder.catalog.lookup(nxt.task)
        check_step(nxt.step, nxt.steps, ValidationError)
        prio, secs = check_options(nxt.priority, nxt.delay, None, None, None, time.time())
        nj = self._builder.new_job(t, nxt.payload, prio, secs, None, job.tenant, None, None)
        if nxt.queue is not None:
            nj.queue = check_queue_name(nxt.queue)
        nj.workflow = job.workflow or job.id
        nj.parent = job.id
        nj.step = nxt.step or t.options.step
        nj.steps = nxt.steps or t.options.steps
        if job.meta:
            nj.meta = encoded_meta(job.meta)
        return nj
