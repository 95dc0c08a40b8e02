"""The Redis backend's enqueue: one `enqueue.lua` per queue of the call, and backpressure.

A queue's ``max_queued`` is checked inside its enqueue script (`includes/backpressure.lua`),
atomically with the insert. A call spanning several queues cannot be one script (a queue is one
Cluster slot), so when any of its queues is limited it takes two steps: `admit.lua` reserves
room in every limited queue (one queue after the other, in name order); if one refuses, the reservations made are dropped
and `QueueFull` is raised with nothing stored; otherwise the enqueue scripts run with the
reservation's token, which they consume instead of checking again, so a producer racing in
between cannot make them refuse. A reservation left by a producer that died between the steps
expires after `RESERVATION_TTL` (until then it only keeps the queue fuller than it is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import ResponseError

from ...job import new_id
from ..base import EnqueueResult, NewJob
from .scripts import translate

if TYPE_CHECKING:
    from .backend import RedisBackend

RESERVATION_TTL = 60.0


def _rows(jobs: Sequence[NewJob], idx: list[int]) -> str:
    return orjson.dumps([
        (jobs[i].id, jobs[i].task, jobs[i].payload, jobs[i].priority, jobs[i].max_attempts,
         jobs[i].max_stalls, jobs[i].timeout, jobs[i].lease, jobs[i].delay, jobs[i].tenant,
         jobs[i].batch, jobs[i].workflow, jobs[i].parent, jobs[i].idempotency_key, jobs[i].flow,
         jobs[i].meta, jobs[i].step, jobs[i].steps)
        for i in idx
    ]).decode()  # fmt: skip


def _specs(jobs: Sequence[NewJob], idx: list[int]) -> str:
    # The gates' rules, once per call (the script upserts those of created jobs).
    specs = {g.name: g.spec for i in idx if jobs[i].flow is not None for g in jobs[i].gates}
    return orjson.dumps(specs).decode() if specs else ""


def _raise(res: Any, queue: str) -> None:
    if isinstance(res, ResponseError) and "BATCHLATE" in str(res):
        raise res
    if isinstance(res, ResponseError):
        raise translate(res, queue, "enqueue") from None
    if isinstance(res, BaseException):
        raise res


async def _admit(
    b: RedisBackend,
    jobs: Sequence[NewJob],
    by_queue: dict[str, list[int]],
    limits: Mapping[str, int],
) -> dict[str, str]:
    """Step one of a multi-queue call: reserve room in every limited queue, or none. Returns
    the token per queue that holds a reservation."""
    token = new_id()
    held: list[str] = []
    # One queue after the other, in name order, not one pipeline: a call refused by a queue
    # then holds no room in the queues after it. All at once, racing calls each held room in
    # one queue that made another refuse them in the next, and fewer calls were stored than
    # the limits allow (10 racing two-queue calls against a limit of 3 stored 1).
    for q in sorted(q for q in by_queue if q in limits):
        keys = [(jobs[i].tenant, jobs[i].idempotency_key, jobs[i].id) for i in by_queue[q]]
        args = [token, limits[q], RESERVATION_TTL, orjson.dumps(keys).decode()]
        (res,) = await b._pipeline([("admit", q, args)])
        if not isinstance(res, int):
            if held:  # best effort: an unreleased reservation expires by itself
                with contextlib.suppress(Exception):
                    await b._pipeline([("admit", h, [token, "release", 0, "[]"]) for h in held])
            _raise(res, q)
        if res > 0:
            held.append(q)
    return {q: token for q in held}


async def enqueue_jobs(
    b: RedisBackend,
    jobs: Sequence[NewJob],
    max_queued: Mapping[str, int] | None,
    *,
    batch_deadline: float | None = None,
    once_ttl: float | None = None,
) -> EnqueueResult:
    """Store ``jobs`` (one enqueue.lua per queue). ``batch_deadline``: members of a batch with
    callbacks, counted in their parts, refused after the batch reservation's deadline;
    ``once_ttl``: batch callbacks, whose ids are kept that long after them (`batches`)."""
    by_queue: dict[str, list[int]] = {}
    for i, j in enumerate(jobs):
        by_queue.setdefault(j.queue, []).append(i)
    ids = [j.id for j in jobs]
    created = [True] * len(jobs)
    now = b.now()
    new = [q for q in by_queue if q not in b._known_queues]
    if new:  # once per queue and process: not a round trip per enqueue
        await b._client().sadd(f"{b.prefix}:queues", *new)
        b._known_queues.update(new)
    limits = max_queued or {}
    tokens: dict[str, str] = {}
    if len(by_queue) > 1 and any(q in limits for q in by_queue):
        tokens = await _admit(b, jobs, by_queue, limits)
    calls = [
        ("enqueue", q, [_rows(jobs, idx), _specs(jobs, idx), limits.get(q, ""),
                        tokens.get(q, ""), "", "", "",
                        "" if batch_deadline is None else repr(batch_deadline),
                        "" if once_ttl is None else repr(once_ttl)])
        for q, idx in by_queue.items()
    ]  # fmt: skip
    results = await b._pipeline(calls)
    for (queue, idx), out in zip(by_queue.items(), results, strict=True):
        _raise(out, queue)
        now = b._saw_now(out[0])
        for n, i in enumerate(idx):
            ids[i] = out[1 + 2 * n]
            created[i] = out[2 + 2 * n] == 1
    return EnqueueResult(ids, created, now)
