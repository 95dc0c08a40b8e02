"""Job hashes to `Job`s: the short field names of the job hash (docs/architecture.md)."""

from __future__ import annotations

from typing import Any

import orjson

from ...job import Job, JobState, Progress

STATES = {s.value: s for s in JobState}


def float_or_none(v: str | None) -> float | None:
    return None if v is None else float(v)


_f = float_or_none


def job_from_hash(job_id: str, queue: str, h: dict[str, str]) -> Job:
    pg = h.get("pg")
    return Job(
        job_id, queue, h["t"], orjson.loads(h["p"]), int(h["pr"]), STATES[h["s"]],
        int(h.get("a", 0)), int(h["ma"]), int(h.get("st", 0)), int(h["ms"]), _f(h.get("to")),
        float(h["l"]), Progress(**orjson.loads(pg)) if pg else Progress(),
        orjson.loads(h["r"]) if "r" in h else None, orjson.loads(h["e"]) if "e" in h else None,
        h.get("tn"), h.get("b"), h.get("wf"), h.get("pa"), h.get("ik"), float(h["c"]),
        _f(h.get("sf")), _f(h.get("sa")), _f(h.get("fa")), _f(h.get("le")), h.get("w"),
        int(h.get("tk", 0)),
    )  # fmt: skip


def pairs(flat: list[Any]) -> dict[str, str]:
    """A flat HGETALL reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
