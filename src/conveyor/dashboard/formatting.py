"""Pure helpers of the dashboard's templates: redaction of secret-looking fields, times,
durations, numbers, ETAs in words, and the points of the small inline SVG charts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from .redaction import REDACTED, redact

MAX_SHOWN = 20_000  # characters of one JSON value shown on a page


def pretty(value: Any) -> str:
    """Redacted, indented JSON (cut at `MAX_SHOWN` characters) for a ``<pre>``; the template
    escapes it."""
    text = orjson.dumps(redact(value), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
                        default=str).decode()  # fmt: skip
    if len(text) > MAX_SHOWN:
        return text[:MAX_SHOWN] + f"\n… ({len(text) - MAX_SHOWN:,} more characters)"
    return text


def when(ts: float | None) -> str:
    """An epoch time as UTC ``YYYY-MM-DD HH:MM:SS``."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(ts: float | None, now: float | None = None) -> str:
    """``12 s ago``, ``3 min ago``, ``in 5 s`` ..."""
    if ts is None:
        return "—"
    delta = (time.time() if now is None else now) - ts
    text = duration(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def eta_words(seconds: float | None) -> str:
    """What an end user reads: "~2 minutes remaining", "less than a minute remaining"."""
    if seconds is None:
        return "estimating time remaining…"
    if seconds < 60:
        return "less than a minute remaining"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"~{minutes} minute{'s' if minutes != 1 else ''} remaining"
    hours = round(seconds / 3600)
    return f"~{hours} hour{'s' if hours != 1 else ''} remaining"


def number(n: float | None) -> str:
    if n is None:
        return "—"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.2f}"
    return f"{int(n):,}"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def chart_points(values: Sequence[float], width: int = 160, height: int = 36) -> str:
    """The ``points`` of an SVG polyline drawing ``values`` left to right, scaled to the box
    (0 at the bottom)."""
    if not values:
        return ""
    top = max(max(values), 1e-9)
    step = width / max(1, len(values) - 1)
    pts = (f"{i * step:.1f},{height - (v / top) * (height - 2) - 1:.1f}"
           for i, v in enumerate(values))  # fmt: skip
    return " ".join(pts)


def percent(n: float | None) -> str:
    return "—" if n is None else f"{n:.0f}%"


FILTERS: dict[str, Callable[..., Any]] = {
    "pretty": pretty,
    "when": when,
    "ago": ago,
    "duration": duration,
    "eta_words": eta_words,
    "number": number,
    "plural": plural,
    "chart_points": chart_points,
    "percent": percent,
}

__all__ = ["FILTERS", "REDACTED", "chart_points", "eta_words", "pretty", "redact"]
