"""The history checker: pure functions from records (see `records`) and the backend's final state
of every job to a `Report`. Nothing here touches a backend or a process.

What it checks, per run:

- **lost**: an acknowledged job whose final state is not the expected one (``completed``, or
  what the scenario expects for it, e.g. ``failed`` for the poison job), or that is gone.
- **completed without a finished execution**: a ``completed`` job with no ``finish`` record of
  its final claim token (the backend says it ran, no handler says it returned).
- **duplicate executions**: every execution (one claim token) of a job other than the one that
  completed it. Each must be explained by a fault that hit it while it was active:
  its process was killed at or after its start and before its ``finish`` record was
  acknowledged (``ack_slack`` after the record), or it ran into a backend restart window, or its
  process was stopped (SIGTERM) and it was handed back unfinished (``abort`` or no record).
  An unexplained one is a violation.
- **early starts**: a ``start`` before the job's due time (``due`` of its acknowledgement) minus
  ``clock_slack``.
- **priority inversions**: a claim (``c``, the backend's claim time) of a job of priority *p*
  while a job of the same queue with a strictly higher priority had been ready for longer than
  ``window`` (one claim round plus the prefetch horizon) and had not been claimed yet. A job
  counts as ready from its acknowledgement or its due time, whichever is later, until its
  first claim (afterwards a re-queued job's readiness is not observable from records; a job
  whose first claim left no ``start`` record, token > 1 first seen, is left out); the due time is the later of the acknowledged one and the backend's ``scheduled_for``.
  Claim times come from the backend's clock and acknowledgements are written after the commit,
  so a correct engine has none however small the window; the window absorbs clock granularity
  and the claim that was already running when the higher job was committed.

It also measures **recovery**: for every kill, the time from the kill to the next claim of each
job the killed process held (started, not finished).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Execution:
    """One claim of one job, as its handler recorded it."""

    job: str
    token: int
    pid: int
    start: float
    claimed: float
    attempt: int = 0
    finish: float | None = None
    aborted: float | None = None


@dataclass(slots=True)
class Final:
    """A job as the backend holds it at the end of the run."""

    status: str
    token: int = 0
    attempt: int = 0
    stalls: int = 0
    scheduled_for: float | None = None  # the backend's due time, when it had one


@dataclass(slots=True)
class Ack:
    job: str
    queue: str
    priority: int
    due: float
    t: float


@dataclass(slots=True)
class Faults:
    kills: list[tuple[int, float]] = field(default_factory=list)  # (pid, time)
    stops: list[tuple[int, float]] = field(default_factory=list)  # (pid, SIGTERM time)
    restarts: list[tuple[float, float]] = field(default_factory=list)  # backend down t0..t1


@dataclass(slots=True)
class History:
    acks: dict[str, Ack]
    executions: list[Execution]
    faults: Faults


@dataclass(slots=True)
class Limits:
    """The tolerances of a check (seconds)."""

    window: float = 0.1  # one claim round + the prefetch horizon
    ack_slack: float = 1.0  # a finished attempt's acknowledgement is sent within this
    clock_slack: float = 0.002  # timestamps of different processes (one host clock)


@dataclass(slots=True)
class Report:
    jobs: int = 0
    executions: int = 0
    lost: list[str] = field(default_factory=list)
    completed_unfinished: list[str] = field(default_factory=list)
    duplicates: int = 0
    excused: dict[str, int] = field(default_factory=lambda: {"kill": 0, "restart": 0, "stop": 0})
    unexcused: list[str] = field(default_factory=list)
    kills_with_duplicates: int = 0
    early: list[str] = field(default_factory=list)
    inversions: list[str] = field(default_factory=list)
    recovery: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # scenario-level checks
    figures: dict[str, Any] = field(default_factory=dict)  # scenario-level measurements

    def violations(self) -> list[str]:
        out = [f"lost job {j}" for j in self.lost]
        out += [f"completed without a finished execution: {j}" for j in self.completed_unfinished]
        out += [f"unexplained duplicate execution: {d}" for d in self.unexcused]
        out += [f"started before due: {e}" for e in self.early]
        out += [f"priority inversion: {i}" for i in self.inversions]
        return out + self.problems

    @property
    def ok(self) -> bool:
        return not self.violations()

    def summary(self) -> dict[str, Any]:
        rec = sorted(self.recovery)
        return {
            "jobs": self.jobs,
            "executions": self.executions,
            "lost": len(self.lost),
            "completed_unfinished": len(self.completed_unfinished),
            "duplicates": self.duplicates,
            "excused": dict(self.excused),
            "unexcused": len(self.unexcused),
            "kills_with_duplicates": self.kills_with_duplicates,
            "early": len(self.early),
            "inversions": len(self.inversions),
            "recovery_p50": rec[len(rec) // 2] if rec else None,
            "recovery_max": rec[-1] if rec else None,
            "recovered": len(rec),
            **self.figures,
            "violations": self.violations()[:20],
        }


def build_history(records: Iterable[Mapping[str, Any]]) -> History:
    """Join the records of every process: acknowledgements by job, executions by (job, token)."""
    acks: dict[str, Ack] = {}
    execs: dict[tuple[str, int], Execution] = {}
    ends: list[Mapping[str, Any]] = []
    faults = Faults()
    for r in records:
        k = r["k"]
        if k == "ack":
            acks[r["job"]] = Ack(r["job"], r.get("q", "default"), r.get("p", 5), r["due"], r["t"])
        elif k == "start":
            key = (r["job"], r["tok"])
            execs[key] = Execution(
                r["job"], r["tok"], r["pid"], r["t"], r.get("c", r["t"]), r.get("att", 0)
            )
        elif k in ("finish", "abort"):
            ends.append(r)
        elif k == "kill":
            faults.kills.append((r["pid"], r["t"]))
        elif k == "stop":
            faults.stops.append((r["pid"], r["t"]))
        elif k == "restart":
            faults.restarts.append((r["t0"], r["t1"]))
    # A process dies once: its earliest kill record is its death (a poison job records its own,
    # exact; the harness's reaper records the same death later, when it notices it).
    first: dict[int, float] = {}
    for pid, t in faults.kills:
        first[pid] = min(t, first.get(pid, t))
    faults.kills = sorted(first.items(), key=lambda k: k[1])
    for r in ends:
        e = execs.get((r["job"], r["tok"]))
        if e is None:  # an end without a start cannot happen: keep it visible as its own run
            e = execs[(r["job"], r["tok"])] = Execution(
                r["job"], r["tok"], r["pid"], r["t"], r["t"]
            )
        if r["k"] == "finish":
            e.finish = r["t"]
        else:
            e.aborted = r["t"]
    return History(acks, sorted(execs.values(), key=lambda e: e.start), faults)


def _excuse(e: Execution, faults: Faults, lim: Limits) -> tuple[str, float | None] | None:
    """Which fault explains that this execution did not end its job (kind, kill time)."""
    acked_by = None if e.finish is None else e.finish + lim.ack_slack
    for pid, t in faults.kills:
        if pid == e.pid and t >= e.start - lim.clock_slack and (acked_by is None or t <= acked_by):
            return "kill", t
    end = (e.finish if e.finish is not None else e.aborted or float("inf")) + lim.ack_slack
    for t0, t1 in faults.restarts:
        if e.start <= t1 and end >= t0:
            return "restart", None
    for pid, t in faults.stops:
        if pid == e.pid and e.start <= t and e.finish is None:
            return "stop", None
    return None


def _unexplained(job: str, e: Execution, runs: list[Execution], faults: Faults) -> str:
    """A duplicate no fault explains, with what a reader needs to tell why: its times, the
    job's other executions, and the faults of the run."""

    def at(t: float | None) -> str:
        return "-" if t is None else f"{t:.3f}"

    others = "; ".join(f"token {o.token} pid {o.pid} claimed {at(o.claimed)} start "
                       f"{at(o.start)} finish {at(o.finish)}" for o in runs if o is not e)  # fmt: skip
    restarts = ", ".join(f"{at(t0)}..{at(t1)}" for t0, t1 in faults.restarts) or "none"
    kills = ", ".join(f"pid {p} at {at(t)}" for p, t in faults.kills) or "none"
    return (f"{job} token {e.token} pid {e.pid} at {e.start:.3f} (claimed {at(e.claimed)}, "
            f"finish {at(e.finish)}, aborted {at(e.aborted)}; other executions: {others or 'none'};"
            f" restarts {restarts}; kills {kills})")  # fmt: skip


def check(
    h: History,
    final: Mapping[str, Final],
    *,
    expect: Mapping[str, str] | None = None,
    limits: Limits | None = None,
) -> Report:
    """Check a run's history against the backend's final state (see the module docstring).
    ``expect`` maps job ids to a final status other than ``completed``."""
    lim = limits or Limits()
    expect = expect or {}
    rep = Report(jobs=len(h.acks), executions=len(h.executions))
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for e in h.executions:
        by_job[e.job].append(e)

    for job in h.acks:
        f = final.get(job)
        want = expect.get(job, "completed")
        if f is None or f.status != want:
            rep.lost.append(f"{job} ({f.status if f else 'gone'}, expected {want})")
    for job, f in final.items():
        if f.status == "completed" and not any(
            e.token == f.token and e.finish is not None for e in by_job.get(job, ())
        ):
            rep.completed_unfinished.append(f"{job} (token {f.token})")

    kills_hit: set[tuple[int, float]] = set()
    for job, runs in by_job.items():
        f = final.get(job)
        done = f.token if f is not None and f.status == "completed" else None
        for e in runs:
            if e.token == done:
                continue
            if f is not None and f.status != "completed" and e is runs[-1] and e.finish is not None:
                continue  # the last attempt of a job that failed for good: its outcome
            rep.duplicates += 1
            why = _excuse(e, h.faults, lim)
            if why is None:
                rep.unexcused.append(_unexplained(job, e, runs, h.faults))
                continue
            rep.excused[why[0]] += 1
            if why[1] is not None:
                kills_hit.add((e.pid, why[1]))
    rep.kills_with_duplicates = len(kills_hit)

    for e in h.executions:
        a = h.acks.get(e.job)
        if a is not None and e.start < a.due - lim.clock_slack:
            rep.early.append(f"{e.job} started {a.due - e.start:.3f}s before due")

    rep.inversions = inversions(h, lim.window, final)
    rep.recovery = recovery_times(h, lim)
    return rep


def inversions(h: History, window: float, final: Mapping[str, Final] | None = None) -> list[str]:
    """Claims of a job while a strictly higher-priority job of its queue had been ready (and
    unclaimed) for longer than ``window``. A job is due at the later of its acknowledged due
    time and the backend's (``final``): a producer's retry after an outage may have stored it
    later than its first try. No claim can run while the backend is down and until the workers
    reconnect: a job waiting at a restart is ready again from the first claim after it (plus
    ``window``: that round's claims race, as the round after an enqueue does). O((jobs +
    claims) log jobs)."""
    final = final or {}
    first_claim: dict[str, float] = {}
    first_token: dict[str, int] = {}
    for e in h.executions:
        c = first_claim.get(e.job)
        if c is None or e.claimed < c:
            first_claim[e.job] = e.claimed
        first_token[e.job] = min(e.token, first_token.get(e.job, e.token))
    claims = sorted(e.claimed for e in h.executions)
    # (down from, claims ready again from) per restart
    outages = []
    for t0, t1 in h.faults.restarts:
        i = bisect.bisect_left(claims, t1)
        outages.append((t0, (claims[i] if i < len(claims) else float("inf")) + window))
    # per (queue, priority): the intervals during which some job of it waited too long
    waits: dict[tuple[str, int], list[tuple[float, float, str]]] = defaultdict(list)
    for a in h.acks.values():
        f = final.get(a.job)
        if first_token.get(a.job, f.token + 1 if f is not None else 1) > 1:
            continue  # claimed before by a process that died before its start record
        due = max(a.due, f.scheduled_for or 0.0) if f is not None else a.due
        since = max(a.t, due) + window
        until = first_claim.get(a.job, float("inf"))
        for t0, back in outages:  # not waiting while nothing could claim it
            if since < back and until > t0:
                if since < t0:
                    waits[(a.queue, a.priority)].append((since, t0, a.job))
                since = back
        if until > since:
            waits[(a.queue, a.priority)].append((since, until, a.job))
    spans: dict[tuple[str, int], tuple[list[float], list[float], list[str]]] = {}
    for key, iv in waits.items():
        iv.sort()
        starts, ends, jobs = [], [], []  # running max of ends: "is any interval open at t"
        top, top_job = float("-inf"), ""
        for s, u, j in iv:
            if u > top:
                top, top_job = u, j
            starts.append(s)
            ends.append(top)
            jobs.append(top_job)
        spans[key] = (starts, ends, jobs)
    out: list[str] = []
    for e in h.executions:
        a = h.acks.get(e.job)
        if a is None:
            continue
        for (queue, prio), (starts, ends, jobs) in spans.items():
            if queue != a.queue or prio <= a.priority:
                continue
            i = bisect.bisect_right(starts, e.claimed) - 1
            if i >= 0 and ends[i] > e.claimed:
                out.append(
                    f"{e.job} (priority {a.priority}) claimed at {e.claimed:.3f} while "
                    f"{jobs[i]} (priority {prio}) waited"
                )
    return out


def recovery_times(h: History, lim: Limits) -> list[float]:
    """Seconds from each kill to the next claim of each job the killed process held."""
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for e in h.executions:
        by_job[e.job].append(e)
    out: list[float] = []
    for pid, t in h.faults.kills:
        for runs in by_job.values():
            for i, e in enumerate(runs):
                if e.pid != pid or e.start > t + lim.clock_slack or e.finish is not None:
                    continue
                later = [r.claimed for r in runs[i + 1 :] if r.start >= e.start]
                if later:
                    out.append(max(0.0, min(later) - t))
    return out


def whole_batches(records: Iterable[Mapping[str, Any]], stored: Mapping[str, int]) -> list[str]:
    """All-or-none check of ``enqueue_many``: for every batch a producer began (``begin``
    records), the number of its jobs the backend holds (``stored``: batch label -> count) must
    be 0 or the batch's size. Returns the violations."""
    out = []
    for r in records:
        if r.get("k") == "begin":
            n = stored.get(r["b"], 0)
            if n not in (0, r["n"]):
                out.append(f"batch {r['b']}: {n} of {r['n']} jobs stored")
    return out
