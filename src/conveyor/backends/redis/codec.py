"""Job hashes to `Job`s: the short field names of the job hash (docs/architecture.md)."""

from __future__ import annotations

from typing import Any

import orjson

from ...job import Job, JobState, Progress
from ...meta import decoded_meta

STATES = {s.value: s for s in JobState}


def float_or_none(v: str | None) -> float | None:
    return None if v is None else float(v)


_f = float_or_none


def job_from_hash(
    job_id: str, queue: str, h: dict[str, str], lease_expires_at: float | None = None
) -> Job:
    """The job of a hash. An active job's lease expiry is its score in the queue's ``active``
    set (pass it), not a field; a hash written before that change may still hold ``le``."""
    pg = h.get("pg")
    if lease_expires_at is None and h.get("s") == "active":
        lease_expires_at = _f(h.get("le"))
    return Job(
        job_id, queue, h["t"], orjson.loads(h["p"]), int(h["pr"]), STATES[h["s"]],
        int(h.get("a", 0)), int(h["ma"]), int(h.get("st", 0)), int(h["ms"]), _f(h.get("to")),
        float(h["l"]), Progress(**orjson.loads(pg)) if pg else Progress(),
        orjson.loads(h["r"]) if "r" in h else None, orjson.loads(h["e"]) if "e" in h else None,
        h.get("tn"), h.get("b"), h.get("wf"), h.get("pa"), h.get("ik"), float(h["c"]),
        _f(h.get("sf")), _f(h.get("sa")), _f(h.get("fa")), lease_expires_at, h.get("w"),
        int(h.get("tk", 0)), False, decoded_meta(h.get("m")),
        orjson.loads(h["co"]) if "co" in h else None, None, h.get("sl"),
        int(h["ns"]) if "ns" in h else None, tuple(orjson.loads(h["nx"])) if "nx" in h else (),
        prompt=orjson.loads(h["ap"]) if "ap" in h else None, await_deadline=_f(h.get("ad")),
        on_timeout=h.get("ao"), input=orjson.loads(h["ai"]) if "ai" in h else None,
        resumes=int(h.get("ar", 0)), fanin=_fanin(h) if "ft" in h else None,
    )  # fmt: skip


def _fanin(h: dict[str, str]) -> dict[str, Any]:
    """A fan-in parent's record (includes/fanin.lua fields fp fx ft fs ff fw)."""
    return {"policy": h.get("fp"), "cancel_siblings": h.get("fx") == "1", "total": int(h["ft"]),
            "settled": int(h.get("fs", 0)), "failed": int(h.get("ff", 0)),
            "waiting": h.get("fw") == "1"}  # fmt: skip


def pairs(flat: list[Any]) -> dict[str, str]:
    """A flat HGETALL reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


_ACTIVE = JobState.ACTIVE


def job_from_claim(job_id: str, queue: str, v: list[Any], now: float, worker: str) -> Job:
    """The job a claim returned: ``v`` holds claim.lua's CLAIMED fields by position (t p pr a
    ma st ms to l tn b wf pa ik c e tk m sf ap ai ar; None when absent; ``a`` and ``tk`` after
    the claim). Now active, started ``now`` by ``worker``, the lease until ``now`` + ``l``, no
    progress; ``scheduled_for`` is the due time it had (a delay or a retry's backoff), if any."""
    t, p, pr, a, ma, st, ms, to, lease, tn, b, wf, pa, ik, c, e, tk, m, sf, ap, ai, ar = v
    lease_s = float(lease)
    return Job(
        job_id, queue, t, orjson.loads(p), int(pr), _ACTIVE, int(a), int(ma),
        int(st) if st else 0, int(ms), None if to is None else float(to), lease_s, Progress(),
        None, None if e is None else orjson.loads(e), tn, b, wf, pa, ik, float(c), _f(sf), now,
        None, now + lease_s, worker, int(tk), False, decoded_meta(m) if m else {},
        prompt=None if ap is None else orjson.loads(ap),
        input=None if ai is None else orjson.loads(ai), resumes=int(ar) if ar else 0,
    )  # fmt: skip
