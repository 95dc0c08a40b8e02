"""Redis transitions of one job named by its id (cancel, retry, resume: one script each) and the
per-queue sweeps (lease recovery, await deadlines) run on every known queue in one round trip.

A transition that may end a member of a batch with callbacks (a cancel; a sweep that fails or
cancels a job) has counted it in its batch part in the same script; the batch is then checked
at once here (`batches.settle`), and a failed check is left to the queue's ``bdirty`` sweep.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from ...errors import JobNotFound
from ...job import Job
from ..base import Recovered
from . import batches as bt
from . import reads
from .codec import STATES, job_from_hash, pairs
from .scripts import translate

if TYPE_CHECKING:
    from .backend import RedisBackend

log = logging.getLogger("conveyor.redis")


async def steer(
    b: RedisBackend, action: str, job_id: str, tenant: str | None, extra: Any = None
) -> Job:
    """Run the ``cancel``, ``retry`` or ``resume`` script on one job; it returns the changed
    job. ``extra``: the queues' max_queued (retry), the decision's JSON (resume)."""
    queue = await b._queue_of(job_id)
    if queue is None:  # a hand-over still in an outbox is a job too (reads.get_job)
        pending = await reads.deliver(b, await b._queues(), job_id, tenant)
        queue = await b._queue_of(job_id)
        if queue is None and pending:
            raise reads.undelivered(job_id)
    if queue is None:
        raise JobNotFound(job_id)
    args: list[Any] = [job_id, tenant or ""]
    if action == "retry":
        args.append((extra or {}).get(queue, ""))
    elif action == "resume":
        args.append(extra or "")
    try:
        out = await b._eval(action, queue, *args)
    except ResponseError as exc:
        raise translate(exc, queue if "QUEUEFULL" in str(exc) else job_id, action) from None
    job = job_from_hash(job_id, queue, pairs(out))
    if action == "cancel" and job.batch is not None:  # it may have been the last member to end
        await bt.settle(b, [job.queue])
    return job


async def sweep(b: RedisBackend, script: str) -> list[Recovered]:
    """Run ``recover`` or ``expire`` on every queue (each reads only its expired entries), in
    one round trip. A reply ending in '' ended a batch part there: those batches are checked."""
    queues = await b._queues()
    out: list[Recovered] = []
    ended: list[str] = []
    results = await b._pipeline([(script, q, []) for q in queues]) if queues else []
    for queue, flat in zip(queues, results, strict=True):
        if isinstance(flat, BaseException):
            raise flat
        if len(flat) % 2:  # the '' marker
            ended.append(queue)
        for k in range(0, len(flat) - 1, 2):
            out.append(Recovered(flat[k], queue, STATES[flat[k + 1]]))
    if ended:
        try:
            await bt.settle(b, ended)
        except Exception as exc:
            log.error("checking batch callbacks after the %s sweep failed (%s); the sweep of "
                      "bdirty retries", script, str(exc)[:200])  # fmt: skip
    return out
