"""The worker's side of the Redis backend: claims, outcomes, lease renewals, progress and the
jobs each worker holds (outcomes name jobs; keys need their queues).

A claim of one queue is one ``claim`` script, pipelined behind the finish scripts of the
acknowledgements it carries (one round trip).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import BackendUnavailable
from ...job import Job
from ..base import ClaimParams, ClaimResult, Outcome, OutcomeKind
from ..outcomes import encode, finish_each
from .codec import job_from_hash, pairs

if TYPE_CHECKING:
    from .backend import RedisBackend

log = logging.getLogger("conveyor.redis")


class Attempts:
    """Claims and outcomes of one `RedisBackend`, and the jobs each of its workers holds."""

    def __init__(self, backend: RedisBackend) -> None:
        self._b = backend
        # worker -> {job id -> queue} of jobs it claimed
        self.held: dict[str, dict[str, str]] = {}

    async def claim_jobs(self, params: ClaimParams) -> ClaimResult:
        jobs: list[Job] = []
        next_due: float | None = None
        limit = params.limit
        for queue in params.queues:
            if limit <= 0:
                break
            cap = _cap(params, queue, limit)
            if cap <= 0:
                continue
            got, due = self._claimed(queue, await self._b._eval("claim", queue, params.worker, cap))
            if due is not None:
                next_due = due if next_due is None else min(next_due, due)
            jobs += got
            limit -= len(got)
        if jobs:
            self.remember(params.worker, jobs)
        return ClaimResult(jobs, next_due if len(jobs) < params.limit else None)

    async def _by_queue(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        """Which queue each held job lives in (the worker knows; this is for direct calls)."""
        queues = await self._b._queues()
        found: dict[str, list[str]] = {}
        for job_id in job_ids:
            q = await self._b._queue_of(job_id, queues)
            if q is not None:
                found.setdefault(q, []).append(job_id)
        return found

    async def _finish_calls(
        self, worker: str, outcomes: Sequence[Outcome]
    ) -> tuple[list[tuple[str, str, list[Any]]], list[str]]:
        """The finish script calls (one per queue) and the ids of unknown jobs (lost)."""
        by_queue = await self._group(worker, [o.job_id for o in outcomes])
        by_id = {o.job_id: o for o in outcomes}
        calls: list[tuple[str, str, list[Any]]] = []
        for queue, ids in by_queue.items():
            rows = []
            for job_id in ids:
                e = encode(by_id[job_id])  # never raises: a bad outcome fails its own attempt
                if e.kind is OutcomeKind.COMPLETED:
                    rows.append((job_id, e.token, "completed", e.result))
                else:
                    rows.append((job_id, e.token, e.kind.value, None, e.error, e.retry_in,
                                 orjson.dumps(e.brief).decode()))  # fmt: skip
            calls.append(("finish", queue, [worker, orjson.dumps(rows).decode()]))
        known = {i for ids in by_queue.values() for i in ids}
        return calls, [o.job_id for o in outcomes if o.job_id not in known]

    async def _finish_results(
        self, worker: str, outcomes: Sequence[Outcome], results: list[Any], lost: list[str]
    ) -> list[str]:
        """Collect lost ids from finish results; outcomes of a finish call that failed are
        applied again one by one (`finish_each`), so they cannot hold the others back."""
        failed = False
        for res in results:
            if isinstance(res, RedisConnectionError | RedisTimeoutError):
                raise BackendUnavailable(f"Redis at {self._b.url} unreachable: {res}") from res
            if isinstance(res, Exception):
                failed = True
                log.error("worker %s: a finish script failed (%s); applying its outcomes one "
                          "by one", worker, str(res)[:200])  # fmt: skip
            else:
                lost += res
        if failed:
            lost = await finish_each(lambda one: self._finish_plain(worker, one), outcomes)
        self._forget(worker, [o.job_id for o in outcomes])
        return lost

    async def _finish_plain(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        calls, lost = await self._finish_calls(worker, outcomes)
        for res in await self._b._pipeline(calls):
            if isinstance(res, Exception):
                raise res
            lost += res
        return lost

    async def finish_jobs(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        calls, lost = await self._finish_calls(worker, outcomes)
        return await self._finish_results(worker, outcomes, await self._b._pipeline(calls), lost)

    async def finish_and_claim(
        self, worker: str, outcomes: Sequence[Outcome], params: ClaimParams
    ) -> tuple[list[str], ClaimResult]:
        calls, lost = await self._finish_calls(worker, outcomes)
        first = params.queues[0]
        cap = _cap(params, first, params.limit)
        claim = [("claim", first, [worker, cap])] if cap > 0 else []
        results = await self._b._pipeline([*calls, *claim])
        jobs: list[Job] = []
        next_due: float | None = None
        if claim:
            if isinstance(results[-1], Exception):
                # The finish calls still count: apply their results before raising.
                await self._finish_results(worker, outcomes, results[: len(calls)], lost)
                raise results[-1]
            jobs, next_due = self._claimed(first, results[-1])
            self.remember(worker, jobs)
        lost = await self._finish_results(worker, outcomes, results[: len(calls)], lost)
        rest = [q for q in params.queues[1:]]
        if rest and len(jobs) < params.limit:
            try:
                more = await self.claim_jobs(
                    ClaimParams(rest, params.limit - len(jobs), worker, params.queue_limits)
                )
            except BackendUnavailable:
                if not jobs:
                    raise
                more = ClaimResult([], None)  # keep what was claimed; claim the rest next round
            jobs += more.jobs
            if more.next_due is not None:
                next_due = more.next_due if next_due is None else min(next_due, more.next_due)
        if jobs:
            self.remember(worker, jobs)
        return lost, ClaimResult(jobs, next_due if len(jobs) < params.limit else None)

    def _claimed(self, queue: str, out: list[Any]) -> tuple[list[Job], float | None]:
        self._b._saw_now(out[0])
        next_due = float(out[1]) if out[1] != "" else None
        n = int(out[2])
        return [
            job_from_hash(out[3 + 2 * k], queue, pairs(out[4 + 2 * k])) for k in range(n)
        ], next_due

    async def _group(self, worker: str, job_ids: Sequence[str]) -> dict[str, list[str]]:
        cached = self.held.get(worker, {})
        missing = [j for j in job_ids if j not in cached]
        out: dict[str, list[str]] = {}
        for j in job_ids:
            if j in cached:
                out.setdefault(cached[j], []).append(j)
        if missing:
            for q, ids in (await self._by_queue(missing)).items():
                out.setdefault(q, []).extend(ids)
        return out

    def _forget(self, worker: str, job_ids: Sequence[str]) -> None:
        held = self.held.get(worker)
        if held is not None:
            for j in job_ids:
                held.pop(j, None)

    def remember(self, worker: str, jobs: Sequence[Job]) -> None:
        held = self.held.setdefault(worker, {})
        for j in jobs:
            held[j.id] = j.queue

    async def release_jobs(self, worker: str, jobs: Sequence[tuple[str, int]]) -> int:
        n = 0
        tokens = dict(jobs)
        for queue, ids in (await self._group(worker, [j for j, _ in jobs])).items():
            held = orjson.dumps([(j, tokens[j]) for j in ids]).decode()
            n += int(await self._b._eval("release", queue, worker, held))
        self._forget(worker, [j for j, _ in jobs])
        return n

    async def extend_leases(self, worker: str, jobs: Sequence[tuple[str, int]]) -> list[str]:
        lost: list[str] = []
        tokens = dict(jobs)
        grouped = await self._group(worker, [j for j, _ in jobs])
        for queue, ids in grouped.items():
            held = orjson.dumps([(j, tokens[j]) for j in ids]).decode()
            lost += await self._b._eval("extend", queue, worker, held)
        known = {i for ids in grouped.values() for i in ids}
        lost += [j for j, _ in jobs if j not in known]
        self._forget(worker, lost)
        return lost

    async def set_progress(
        self, job_id: str, token: int, worker: str, progress: dict[str, Any]
    ) -> bool:
        grouped = await self._group(worker, [job_id])
        for queue in grouped:
            data = orjson.dumps(progress).decode()
            return bool(await self._b._eval("progress", queue, job_id, token, worker, data))
        return False


def _cap(params: ClaimParams, queue: str, remaining: int) -> int:
    """How many this claim may take from ``queue``: what is left, within its per-queue cap."""
    ql = params.queue_limits
    return remaining if ql is None or queue not in ql else min(remaining, ql[queue])
