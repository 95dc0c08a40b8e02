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

from ..backends.base import NewJob, Outcome, OutcomeKind
from ..chains import Next, check_step
from ..errors import ConveyorError, ValidationError
from ..meta import encoded_meta
from ..newjobs import JobBuilder
from ..options import check_options, check_queue_name
from .executor import MAX_MESSAGE, outcome_for_result

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..inputs import PayloadLimits
    from ..job import Job


class HandOver:
    """Builds the next step's job from a `Next`, with the catalog the producers use."""

    def __init__(self, catalog: Catalog, limits: PayloadLimits) -> None:
        self._builder = JobBuilder(catalog, limits)

    def result(self, job: Job, result: Any) -> Outcome:
        """The outcome of a handler that returned ``result``: a `Next` hands over."""
        if type(result) is Next:
            return self.outcome(job, result)
        return outcome_for_result(job, result)

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
