"""`conveyor stats`: the flow-control table (rate limits, concurrency caps, breakers per queue)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from .backends.base import QueueStats


def _rate(per_second: float) -> str:
    for unit, secs in (("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        n = per_second * secs
        if n >= 1 and abs(n - round(n)) < 1e-6:
            return f"{round(n)}/{unit}"
    return f"{per_second:.3g}/s"


def describe(limit: dict[str, Any], now: float) -> tuple[str, str]:
    """(rule, live state) of one gate as `stats()` reports it."""
    kind = limit["kind"]
    if kind == "rate":
        rule = _rate(limit["per_second"]) + (
            f" burst {limit['burst']}" if limit["burst"] > 1 else ""
        )
        wait = limit["next_start_at"] - now
        return rule, "available" if wait <= 0 else f"next start in {wait:.2f}s"
    if kind == "conc":
        return f"max {limit['limit']} active", f"{limit['active']}/{limit['limit']} active"
    parts = []
    if limit.get("threshold"):
        parts.append(f"{limit['threshold']} failures")
    if limit.get("ratio"):
        parts.append(f"{limit['ratio']:.0%} failed")
    state = limit["state"]
    if state == "open" and limit.get("open_until"):
        state = f"open for {max(0.0, limit['open_until'] - now):.1f}s"
    elif state == "closed" and limit.get("failures"):
        state = f"closed ({limit['failures']} failing)"
    return "breaker: " + " or ".join(parts), state


def limits_table(stats: dict[str, QueueStats], now: float) -> Table | None:
    rows = [(q, g) for q, s in stats.items() for g in s.limits]
    if not rows:
        return None
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title="flow control")
    for col in ("queue", "limit", "rule", "state"):
        t.add_column(col, no_wrap=col != "state")
    for q, g in rows:
        t.add_row(q, g["name"], *describe(g, now))
    return t
