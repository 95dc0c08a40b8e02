"""The worker's side of the Redis backend: claims, outcomes, lease renewals, progress and the
jobs each worker holds (outcomes name jobs; keys need their queues).

A claim of one queue is one ``claim`` script, pipelined behind the finish scripts of the
acknowledgements it carries (one round trip). A claim of several queues merges them by one
rule, the SQLite backend's (`plan`): ``peek`` on every queue behind the finish scripts, then
the claims of each queue's share (two round trips, whatever the number of queues).
"""

from __future__ import annotations

import heapq
import itertools
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
from . import outbox
from .codec import job_from_claim

if TYPE_CHECKING:
    from .backend import RedisBackend

log = logging.getLogger("conveyor.redis")
Call = tuple[str, str, list[Any]]  # (script, queue, arguments)
SCORE_SHIFT = 40  # ready score = (100 - priority) * 2^40 + the queue's FIFO sequence


def order(job: Job) -> tuple[int, str, str]:
    """The claim order across queues: priority, then job id (creation order; see plan)."""
    return (100 - job.priority, job.id, job.queue)


def plan(
    queues: list[str], peeked: list[list[Any]], limit: int
) -> tuple[dict[str, int], float | None]:
    """Each queue's share of a claim of ``limit`` jobs, from each queue's candidates (peek.lua,
    best first), and the earliest due time they reported.

    The rule (docs/architecture.md "One priority rule across queues"): highest priority first
    across every queue claimed; within a priority each queue keeps its own FIFO line, and the
    lines' heads go by job id, i.e. creation time (ids from one process in creation order),
    then queue name. A k-way merge of the heads, so no queue's line is reordered."""
    lines: list[list[tuple[int, str, str]]] = []
    due: float | None = None
    for queue, out in zip(queues, peeked, strict=True):
        if out[1] != "":
            due = float(out[1]) if due is None else min(due, float(out[1]))
        lines.append([(int(float(out[4 + 2 * k])) >> SCORE_SHIFT, out[3 + 2 * k], queue)
                      for k in range(int(out[2]))])  # fmt: skip
    shares = dict.fromkeys(queues, 0)
    for _, _, queue in itertools.islice(heapq.merge(*lines), limit):
        shares[queue] += 1
    return shares, due


class _Finish:
    """The arguments of one finish.lua call: completions without a result as one 'id token'
    list, those with one as (id, token, result) triples, the other outcomes as JSON."""

    __slots__ = ("costs", "handed", "others", "plain", "queue", "rest")

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.costs: list[tuple[str, int, dict[str, str]]] = []  # for cost.lua
        self.plain: list[str] = []
        self.rest: list[Any] = []
        self.others: list[tuple[Any, ...]] = []
        self.handed: dict[str, list[tuple[str, str]]] = {}  # job id -> outbox entries

    def add(self, o: Outcome) -> None:
        if o.cost:
            self.costs.append((o.job_id, o.token, {u: repr(a) for u, a in o.cost.items()}))
        if o.then:  # a fan-out's children carry their edge (parent queue, spawn index)
            fan = o.fanout is not None
            self.handed[o.job_id] = [(nj.id, outbox.entry(nj, (self.queue, i) if fan else None))
                                     for i, nj in enumerate(o.then)]  # fmt: skip
        elif o.kind is OutcomeKind.COMPLETED and o.result is None and o.job_id.isalnum():
            self.plain.append(f"{o.job_id} {o.token}")  # the common case, without encode()
            return
        e = encode(o)  # never raises: a bad outcome fails its own attempt
        if e.kind is OutcomeKind.COMPLETED:
            self.rest += (e.job_id, e.token, e.result or "null")
        elif e.kind is OutcomeKind.AWAIT:  # park_attempt (lua/includes/awaiting.lua)
            f = o.fanout  # a parent awaiting its children: includes/fanin.lua fan_park
            fan = (
                None
                if f is None
                else {
                    "p": f.policy,
                    "x": f.cancel_siblings,
                    "c": [(nj.id, nj.queue) for nj in o.then],
                }
            )
            self.others.append((e.job_id, e.token, "await", e.prompt, e.await_data,
                                e.timeout or 0, None, e.on_timeout, fan))  # fmt: skip
        else:
            self.others.append((e.job_id, e.token, e.kind.value, None, e.error, e.retry_in,
                                orjson.dumps(e.brief).decode()))  # fmt: skip

    def args(self, worker: str) -> list[Any]:
        others = orjson.dumps(self.others).decode() if self.others else ""
        handed = orjson.dumps(self.handed).decode() if self.handed else ""
        return [worker, others, " ".join(self.plain), handed, *self.rest]


def _sid(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Attempts:
    """Claims and outcomes of one `RedisBackend`, and the jobs each of its workers holds."""

    def __init__(self, backend: RedisBackend) -> None:
        self._b = backend
        # worker -> {job id -> queue} of jobs it claimed
        self.held: dict[str, dict[str, str]] = {}
        # worker -> the newest event its claims wrote (stream id, queue): its next claim's
        # events in another queue's stream sort after it (claim.lua), also when that queue's
        # node has a slower clock (Cluster)
        self.last_event: dict[str, tuple[str, str]] = {}

    async def claim_jobs(self, params: ClaimParams) -> ClaimResult:
        _, res = await self._claim(params, [])
        if isinstance(res, BaseException):
            raise res
        return res

    async def _claim(
        self, params: ClaimParams, calls: list[Call]
    ) -> tuple[list[Any], ClaimResult | BaseException]:
        """Run ``calls`` (finish scripts) and a claim across ``params.queues``: the results of
        ``calls``, and the claim's result or the error that stopped it (the caller applies
        the finish results either way).

        One queue: its claim script behind ``calls``, one round trip. Several: ``peek`` on
        each behind ``calls``, the candidates merged by the rule (`plan`), then each queue's
        share claimed in a second pipeline: two round trips however many queues."""
        worker = params.worker
        caps = {q: c for q in params.queues if (c := _cap(params, q, params.limit)) > 0}
        newest, where = self.last_event.get(worker, ("", ""))
        if len(caps) <= 1:
            # (within one queue's stream ids follow claim order anyway)
            claims: list[Call] = [("claim", q, [worker, c, newest if q != where else ""])
                                  for q, c in caps.items()]  # fmt: skip
            results = await self._b._pipeline([*calls, *claims])
            return results[: len(calls)], self._collect(params, claims, results[len(calls) :])
        peeks: list[Call] = [("peek", q, [c]) for q, c in caps.items()]
        results = await self._b._pipeline([*calls, *peeks])
        done, peeked = results[: len(calls)], results[len(calls) :]
        failed = next((r for r in peeked if isinstance(r, BaseException)), None)
        if failed is not None:
            return done, failed
        for out in peeked:
            self._b._saw_now(out[0])
        shares, due = plan(list(caps), peeked, params.limit)
        claims = [("claim", q, [worker, k, newest]) for q, k in shares.items() if k > 0]
        try:
            got = await self._b._pipeline(claims) if claims else []
        except BackendUnavailable as exc:
            return done, exc
        return done, self._collect(params, claims, got, due, merged=True)

    def _collect(
        self, params: ClaimParams, claims: list[Call], results: list[Any],
        due: float | None = None, merged: bool = False,
    ) -> ClaimResult | BaseException:  # fmt: skip
        """The jobs of ``claims`` in claim order (a queue's own order kept, queues merged by
        `order`), remembered as held, and when more may be claimable."""
        lines: list[list[Job]] = []
        limited: dict[str, int] = {}
        errors: list[BaseException] = []
        short = False
        for (_, queue, args), out in zip(claims, results, strict=True):
            if isinstance(out, BaseException):
                errors.append(out)
                continue
            jobs, d = self._claimed(params.worker, queue, out)
            if len(out) > 4 + 2 * len(jobs):  # claim.lua: flows a rate gate held back
                limited[queue] = int(out[4 + 2 * len(jobs)])
            if d is not None:
                due = d if due is None else min(due, d)
            short = short or len(jobs) < args[1]
            lines.append(jobs)
        jobs = lines[0] if len(lines) == 1 else list(heapq.merge(*lines, key=order))
        if jobs:
            self.remember(params.worker, jobs)
        if errors:
            if not jobs:
                return errors[0]
            log.error("worker %s: a claim failed (%s); keeping the %d jobs claimed",
                      params.worker, str(errors[0])[:200], len(jobs))  # fmt: skip
            due = self._b.now()
        elif merged and short:
            # A queue gave fewer than its share (taken meanwhile, or refused by its gates):
            # another queue may have more than this merge planned for it. Look again now.
            due = self._b.now()
        return ClaimResult(jobs, due if len(jobs) < params.limit else None, limited)

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
    ) -> tuple[list[Call], list[str]]:
        """The finish script calls (one per queue) and the ids of unknown jobs (lost)."""
        held = self.held.get(worker, {})
        batches: dict[str, _Finish] = {}
        unknown: list[Outcome] = []
        for o in outcomes:
            queue = held.get(o.job_id)
            if queue is None:
                unknown.append(o)
            else:
                (batches.get(queue) or batches.setdefault(queue, _Finish(queue))).add(o)
        lost: list[str] = []
        if unknown:  # not claimed through this backend object (direct calls): look them up
            found = await self._by_queue([o.job_id for o in unknown])
            where = {job_id: q for q, ids in found.items() for job_id in ids}
            for o in unknown:
                queue = where.get(o.job_id)
                if queue is None:
                    lost.append(o.job_id)
                else:
                    batches.setdefault(queue, _Finish(queue)).add(o)
        # A queue's costs go before its finish (same slot, in order): a reader that sees the
        # job ended then sees its cost too. After it, a `get` between the two scripts saw a
        # completed job without its last attempt's cost.
        calls: list[Call] = [
            ("cost", q, [orjson.dumps(f.costs).decode()]) for q, f in batches.items() if f.costs
        ]
        calls += [("finish", q, f.args(worker)) for q, f in batches.items()]
        return calls, lost

    async def _finish_results(
        self, worker: str, outcomes: Sequence[Outcome], results: list[Any], lost: list[str]
    ) -> list[str]:
        """Collect lost ids from finish results; outcomes of a finish call that failed are
        applied again one by one (`finish_each`), so they cannot hold the others back."""
        failed = False
        ended = False  # a finish ended a batch's part: check its batch now
        for res in results:
            if isinstance(res, RedisConnectionError | RedisTimeoutError):
                raise BackendUnavailable(
                    f"Redis at {self._b.options.where} unreachable: {res}"
                ) from res
            if isinstance(res, Exception):
                failed = True
                log.error("worker %s: a finish script failed (%s); applying its outcomes one "
                          "by one", worker, str(res)[:200])  # fmt: skip
            else:
                if "" in res:
                    ended = True
                    res = [r for r in res if r != ""]
                lost += res
        if ended:
            await self._settle([o.job_id for o in outcomes], worker)
        if failed:
            lost = await finish_each(lambda one: self._finish_plain(worker, one), outcomes)
        self._forget(worker, [o.job_id for o in outcomes])
        return lost

    async def _finish_plain(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        calls, lost = await self._finish_calls(worker, outcomes)
        ended = False
        for res in await self._b._pipeline(calls):
            if isinstance(res, Exception):
                raise res
            ended = ended or "" in res
            lost += [r for r in res if r != ""]
        if ended:
            await self._settle([o.job_id for o in outcomes], worker)
        return lost

    async def _settle(self, job_ids: Sequence[str], worker: str) -> None:
        """Check the batches whose parts these finishes ended (fire their callbacks). A
        failure is logged: the queue's sweep checks them again (`batches.settle`)."""
        held = self.held.get(worker, {})
        queues = {held[j] for j in job_ids if j in held}
        if not queues:
            queues = set(await self._by_queue(job_ids))
        try:
            await self._b.settle_batches(sorted(queues))
        except Exception as exc:
            log.error("worker %s: checking batch callbacks failed (%s); the sweep retries",
                      worker, str(exc)[:200])  # fmt: skip

    async def finish_jobs(self, worker: str, outcomes: Sequence[Outcome]) -> list[str]:
        calls, lost = await self._finish_calls(worker, outcomes)
        return await self._finish_results(worker, outcomes, await self._b._pipeline(calls), lost)

    async def finish_and_claim(
        self, worker: str, outcomes: Sequence[Outcome], params: ClaimParams
    ) -> tuple[list[str], ClaimResult]:
        calls, lost = await self._finish_calls(worker, outcomes)
        done, res = await self._claim(params, calls)
        # The finish calls count whatever happened to the claim.
        lost = await self._finish_results(worker, outcomes, done, lost)
        if isinstance(res, BaseException):
            raise res
        return lost, res

    def _claimed(self, worker: str, queue: str, out: list[Any]) -> tuple[list[Job], float | None]:
        self._b._saw_now(out[0])
        next_due = float(out[1]) if out[1] != "" else None
        if out[3] != "":
            newest = self.last_event.get(worker)
            if newest is None or _sid(out[3]) > _sid(newest[0]):
                self.last_event[worker] = (out[3], queue)
        now = float(out[0])
        return [
            job_from_claim(out[4 + 2 * k], queue, out[5 + 2 * k], now, worker)
            for k in range(int(out[2]))
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
