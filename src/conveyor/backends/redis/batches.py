"""Batches with callbacks on Redis (and Redis Cluster): the record, the parts, and firing once.

A batch's members may live in several queues (slots), its callbacks in yet another, so no one
script can see the whole batch. The pieces (see docs/architecture.md, "Batches and callbacks"):

- **The record**, ``<prefix>:{b~<batch>}:r`` (a slot of its own): tenant, callbacks, generation,
  and once decided the counts given to the callbacks. ``adds`` holds the reservations of calls
  adding members (``badd.lua``), ``qs`` the queues that have parts.
- **Parts**: per queue, ``bp:<batch>`` counts the members stored there and those ended, updated
  by the script of each member's transition (enqueue, finish, cancel, retry, lease recovery).
  A part that ends is listed in the queue's ``bdirty`` set in the same script.
- **Deciding** (`check`): read the record's generation (no live reservation), read every part,
  and if all ended ask ``bfire.lua`` to decide with that generation: any reservation begun or
  ended meanwhile moved it and the decision is refused. The decision is stored once; every
  later check gets the same counts.
- **Enqueuing the callbacks**: deterministic ids (`callback_id`) and a ``once:<id>`` marker
  beside each, set by the enqueue script and kept for the record's ttl: enqueuing a callback
  again (two checkers, a crash before ``stored`` was noted) never creates a second job, even
  after retention deleted the first.
- **Who checks**: the worker whose finish ended a part, at once; the canceller; and every
  worker's maintenance pass sweeps ``bdirty`` of its queues (a process killed between the
  finish and the check).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import ResponseError

from ...errors import BatchClosed, BatchNotFound, ValidationError
from ...job import new_id
from ..base import BatchCounts, EnqueueResult, NewJob
from ..batches import FINAL, BatchRecord, NewBatch, callback_jobs, callback_states
from ..batches import encode_callbacks as encoded
from . import producer

if TYPE_CHECKING:
    from .backend import RedisBackend

log = logging.getLogger("conveyor.redis")

ADD_TTL = 60.0  # seconds an add's reservation lives (the enqueue is refused after it)
CLOCK_MARGIN = 5.0  # seconds past a reservation's deadline before a check ignores it
SWEEP_LIMIT = 100


def _prefix(b: RedisBackend, batch: str) -> str:
    return f"{b.prefix}:{{b~{batch}}}:"


async def _rec(b: RedisBackend, name: str, batch: str, *args: Any) -> Any:
    return await b._eval(name, "", *args, prefix=_prefix(b, batch))


async def enqueue_batch(
    b: RedisBackend,
    batch: NewBatch,
    jobs: Sequence[NewJob],
    max_queued: Mapping[str, int] | None,
) -> EnqueueResult:
    """`BatchStore.enqueue_batch`: reserve (badd), store the members, end the reservation
    (bdone), then check the batch (a batch with nothing left to end fires now)."""
    token = new_id()
    queues = sorted({j.queue for j in jobs})
    cbs = encoded(batch.callbacks) if batch.create else ""
    try:
        deadline = await _rec(b, "badd", batch.id, token, ADD_TTL, batch.tenant or "", cbs,
                              batch.ttl, *queues)  # fmt: skip
    except ResponseError as exc:
        code = str(exc).split()[0] if str(exc) else ""
        if code == "EXISTS":
            raise ValidationError(f"batch {batch.id!r} exists already", field="batch") from None
        if code == "NOTFOUND":
            raise BatchNotFound(batch.id) from None
        if code == "CLOSED":
            raise BatchClosed(batch.id) from None
        raise
    stored = False
    try:
        res = await producer.enqueue_jobs(b, jobs, max_queued, batch_deadline=float(deadline))
        stored = True
    except ResponseError as exc:
        if "BATCHLATE" in str(exc):
            raise ValidationError(
                f"batch {batch.id!r}: the members came after the reservation expired "
                f"({ADD_TTL:g} s); nothing was stored",
                field="batch",
            ) from None
        raise
    finally:
        drop = "drop" if batch.create and not stored else ""
        with contextlib.suppress(Exception):  # an unended reservation expires by itself
            await _rec(b, "bdone", batch.id, token, drop)
    await check(b, batch.id)
    return res


async def check(b: RedisBackend, batch: str) -> tuple[str, float | None]:
    """Fire the batch's callbacks if every member ended; idempotent. Returns ('fired', None),
    ('open', None), ('gone', None) or ('wait', until) when an add's reservation is live."""
    for _ in range(3):  # a generation that moved meanwhile: read again
        st = await _rec(b, "bstate", batch, CLOCK_MARGIN)
        if st == "" or st == b"":
            return "gone", None
        gen, fired, stored, cbs, fc, ft, wait = st[:7]
        queues = st[10:]
        if fired:
            if not stored:
                await _store_callbacks(b, batch, cbs, orjson.loads(fc), int(ft))
            return "fired", None
        if wait:
            return "wait", float(wait)
        parts = await b._pipeline([("bpart", q, ["read", batch]) for q in queues])
        counts = dict.fromkeys(FINAL, 0)
        total = 0
        for p in parts:
            if isinstance(p, BaseException):
                raise p
            if p == "" or p == b"":
                continue
            n, *ended = (int(x) for x in p)
            if sum(ended) < n:
                return "open", None
            total += n
            for s, x in zip(FINAL, ended, strict=True):
                counts[s] += x
        out = await _rec(b, "bfire", batch, "decide", gen, orjson.dumps(counts).decode(), total)
        if out[0] == "1":
            await _store_callbacks(b, batch, cbs, orjson.loads(out[1]), int(out[2]))
            for q in queues:  # the parts are done with: the record holds the counts now
                with contextlib.suppress(Exception):
                    await b._eval("bpart", q, "clear", batch, "", "drop")
            return "fired", None
    return "open", None


async def _store_callbacks(
    b: RedisBackend, batch: str, cbs: str, counts: dict[str, int], total: int
) -> None:
    jobs = callback_jobs(batch, cbs, counts, total)
    if jobs:
        ttl = float(await b._client().hget(_prefix(b, batch) + "r", "ttl") or 0) + 3600
        await producer.enqueue_jobs(b, jobs, None, once_ttl=ttl)
    await _rec(b, "bfire", batch, "stored")


async def settle(b: RedisBackend, queues: Sequence[str]) -> int:
    """`BatchStore.settle_batches`: check every batch listed in ``bdirty`` of ``queues`` that
    is due, and clear the entries that need no more checks."""
    fired = 0
    client = b._client()
    for q in queues:
        # An entry is scored on the queue node's clock; ``b.now()`` estimates the server's
        # time from a reply that came after its script ran (and, on Cluster, maybe another
        # node's clock): without the margin, the check right after the transition that listed
        # the batch could find it not yet due and leave it to the next sweep.
        now = b.now() + CLOCK_MARGIN
        due = await client.zrangebyscore(
            b.key(q, "bdirty"), "-inf", now, start=0, num=SWEEP_LIMIT, withscores=True
        )
        for batch, score in due:
            try:
                state, until = await check(b, batch)
            except Exception as exc:
                log.error("batch %s: checking its callbacks failed: %s", batch, str(exc)[:200])
                continue
            if state == "wait":
                await b._eval("bpart", q, "later", batch, repr(until))
                continue
            fired += state == "fired"
            await b._eval("bpart", q, "clear", batch, repr(score), "")
    return fired


async def counts(b: RedisBackend, batch: str, tenant: str | None) -> BatchCounts | None:
    """The counts of a batch with a record (None: no record)."""
    st = await _rec(b, "bstate", batch, CLOCK_MARGIN)
    if st == "" or st == b"":
        return None
    _, fired, _, cbs, fc, ft, _, owner, created, expires = st[:10]
    now = b.now()
    if tenant is not None and owner != tenant:
        return BatchCounts(batch, {}, 0, None, None, now)
    c: dict[str, int] = {}
    if fired:
        c = orjson.loads(fc)
        total = int(ft)
    else:
        total = 0
        for q in st[10:]:
            part = await b._eval("bpart", q, "read", batch)
            if part not in ("", b""):
                n, *ended = (int(x) for x in part)
                total += n
                for s, x in zip(FINAL, ended, strict=True):
                    c[s] = c.get(s, 0) + x
            out = await b._eval("batch", q, batch, "")
            for k in range(2, len(out), 2):
                if out[k] not in FINAL:
                    c[out[k]] = c.get(out[k], 0) + int(out[k + 1])
    rec = BatchRecord(float(created), bool(fired), float(fired) if fired else None,
                      float(expires) if expires else None,
                      callback_states(cbs, bool(fired), c, total))  # fmt: skip
    counted = {s: n for s, n in c.items() if n}
    return BatchCounts(batch, counted, total, float(created),
                       float(fired) if fired else None, now, rec)  # fmt: skip
