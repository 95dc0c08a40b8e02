"""Retention of finished jobs on Redis: ``prune.lua`` per queue and state, in chunks, and the
rate buckets older than an hour. Called by `RedisBackend.apply_retention` and `cleanup`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...job import FINAL_STATES, JobState
from ..base import Retention
from .reads import RATE_BUCKET

if TYPE_CHECKING:
    from .backend import RedisBackend

PRUNE_CHUNK = 1000


async def _prune(
    b: RedisBackend, queue: str, state: str, age: float | None, keep: int | None
) -> int:
    total = 0
    while True:
        n = int(await b._eval("prune", queue, state, "" if age is None else repr(age),
                              "" if keep is None else keep, PRUNE_CHUNK))  # fmt: skip
        total += n
        if n < PRUNE_CHUNK:
            return total


async def apply(b: RedisBackend, queue: str, rule: Retention) -> int:
    """Delete finished jobs of ``queue`` beyond the rule; returns how many."""
    now = b.now()
    removed = 0
    for state, age, count in (
        ("completed", rule.completed_max_age, rule.completed_max_count),
        ("failed", rule.failed_max_age, rule.failed_max_count),
        ("cancelled", rule.cancelled_max_age, rule.cancelled_max_count),
    ):
        if age is not None or count is not None:
            removed += await _prune(b, queue, state, age, count)
    client = b._client()
    old = int((now - 3600) // RATE_BUCKET)
    fields = [f for f in await client.hkeys(b.key(queue, "rates")) if int(f.split(":")[1]) < old]
    if fields:
        await client.hdel(b.key(queue, "rates"), *fields)
    return removed


async def cleanup(b: RedisBackend, older_than: float, states: Sequence[JobState]) -> int:
    """Delete jobs in final ``states`` of every queue that ended ``older_than`` seconds ago."""
    removed = 0
    for q in await b._queues():
        for s in states:
            if s in FINAL_STATES:
                removed += await _prune(b, q, s.value, older_than, None)
    return removed
