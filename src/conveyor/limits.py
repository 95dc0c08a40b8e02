"""Flow control declared on tasks and queues: rate limits, concurrency caps, circuit breakers.

A limit declared here becomes a *gate* in the backend: a named record with a spec (the rule) and
a state (GCRA's theoretical arrival time, active count, breaker state). At enqueue every job is
given the sorted list of gate names it must pass (its *flow*); jobs sharing a flow wait in one
FIFO-by-priority line, and the backend claims from a flow only what its gates allow, so a limited
job is never claimed (it holds no slot and burns no attempt) and other flows keep moving.

Gate names are scoped to the queue: ``rate:task:enrich``, ``conc:task:enrich[tenant=acme]``,
``breaker:task:enrich``, ``rate:queue`` ... (``name=`` replaces ``task:<name>`` to share a budget
between tasks of one queue). See docs/architecture.md, "Flow control".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import ConfigurationError, ValidationError

KeySpec = str | Callable[[Mapping[str, Any]], Any] | None
MAX_KEY_VALUE = 200
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
            "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}  # fmt: skip
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def parse_rate(rate: str) -> tuple[int, float]:
    """``"30/m"`` -> (30, 60.0). Accepts /s /m /h /d (and /10s, /second, /minute ...)."""
    m = _RATE.fullmatch(rate) if isinstance(rate, str) else None
    if m is None or m.group(3) not in _PERIODS:
        raise ConfigurationError(
            f"rate {rate!r} is invalid: use '<count>/<period>' such as '30/m', '5/s', '1000/h'"
        )
    count = float(m.group(1))
    period = float(m.group(2) or 1) * _PERIODS[m.group(3)]
    if count <= 0 or count != int(count) or period <= 0:
        raise ConfigurationError(f"rate {rate!r} is invalid: the count must be a whole number > 0")
    return int(count), period


def _check_key(key: KeySpec) -> KeySpec:
    if key is None or callable(key):
        return key
    if isinstance(key, str) and key:
        return key
    raise ConfigurationError(f"limit key must be a payload field name or a function, got {key!r}")


def _check_name(name: str | None) -> str | None:
    if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        raise ConfigurationError(
            f"limit name {name!r} is invalid: use 1-100 letters, digits, '_', '-', '.', ':'"
        )
    return name


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``rate`` job starts (``"30/m"``), exact over any window (GCRA), across all workers.

    ``burst`` lets that many start back to back after an idle spell (default 1: evenly spaced).
    ``key``: a payload field name (``"provider"``) or a function of the payload, evaluated at
    enqueue; each value gets its own budget. ``key="tenant"`` falls back to the job's tenant.
    ``name``: share one budget between tasks of a queue (default: per task).
    """

    rate: str
    key: KeySpec = None
    burst: int = 1
    name: str | None = None

    def __post_init__(self) -> None:
        parse_rate(self.rate)
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigurationError(f"burst must be an integer >= 1, got {self.burst!r}")
        _check_key(self.key)
        _check_name(self.name)

    @property
    def interval(self) -> float:
        """Seconds between evenly spaced starts."""
        count, period = parse_rate(self.rate)
        return period / count

    def spec(self) -> dict[str, Any]:
        return {"k": "rate", "i": self.interval, "b": self.burst}


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most ``limit`` jobs active at once across all workers (per ``key`` value if given).
    A slot is freed when its job ends, is cancelled, or its lease expires (dead worker)."""

    limit: int
    key: KeySpec = None
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigurationError(
                f"concurrency limit must be an integer >= 1, got {self.limit!r}"
            )
        _check_key(self.key)
        _check_name(self.name)

    def spec(self) -> dict[str, Any]:
        return {"k": "conc", "n": self.limit}


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Pause a task's claims after ``failures`` consecutive failed attempts, or when at least
    ``ratio`` of the attempts in a ``window``-second window failed (with ``min_calls`` or more);
    after ``cooldown`` seconds one probe job runs (half-open): success closes the breaker,
    failure opens it again. Emits ``breaker_opened`` / ``breaker_closed``."""

    failures: int | None = 5
    ratio: float | None = None
    window: float = 60.0
    min_calls: int = 10
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        if self.failures is None and self.ratio is None:
            raise ConfigurationError("circuit breaker needs failures=N and/or ratio=0..1")
        if self.failures is not None and (
            isinstance(self.failures, bool)
            or not isinstance(self.failures, int)
            or self.failures < 1
        ):
            raise ConfigurationError(
                f"breaker failures must be an integer >= 1, got {self.failures!r}"
            )
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ConfigurationError(f"breaker ratio must be in (0, 1], got {self.ratio!r}")
        for fname in ("window", "cooldown"):
            v = getattr(self, fname)
            if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
                raise ConfigurationError(f"breaker {fname} must be > 0 seconds, got {v!r}")
        if (
            isinstance(self.min_calls, bool)
            or not isinstance(self.min_calls, int)
            or self.min_calls < 1
        ):
            raise ConfigurationError(
                f"breaker min_calls must be an integer >= 1, got {self.min_calls!r}"
            )

    def spec(self) -> dict[str, Any]:
        return {"k": "breaker", "f": self.failures or 0, "r": self.ratio or 0,
                "w": float(self.window), "m": self.min_calls, "c": float(self.cooldown)}  # fmt: skip


Limit = RateLimit | Concurrency


@dataclass(frozen=True, slots=True)
class Gate:
    """One gate a job must pass: its queue-scoped name and its rule as stored by backends."""

    name: str
    spec: str  # JSON, see the spec() methods above


def as_rate_limits(value: Any, where: str) -> tuple[RateLimit, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (RateLimit(value),)
    if isinstance(value, RateLimit):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, RateLimit | str) for v in value):
        return tuple(RateLimit(v) if isinstance(v, str) else v for v in value)
    raise ConfigurationError(f"{where} rate_limit must be '30/m', a RateLimit or a list of them")


def as_concurrency(value: Any, where: str) -> tuple[Concurrency, ...]:
    if value is None:
        return ()
    if isinstance(value, int) and not isinstance(value, bool):
        return (Concurrency(value),)
    if isinstance(value, Concurrency):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, Concurrency | int) for v in value):
        return tuple(Concurrency(v) if isinstance(v, int) else v for v in value)
    raise ConfigurationError(
        f"{where} concurrency must be an integer, a Concurrency or a list of them, got {value!r}"
    )


def as_breaker(value: Any) -> CircuitBreaker | None:
    if value is None or value is False:
        return None
    if value is True:
        return CircuitBreaker()
    if isinstance(value, CircuitBreaker):
        return value
    raise ConfigurationError(f"breaker must be True or a CircuitBreaker, got {value!r}")


@dataclass(frozen=True, slots=True)
class FlowRules:
    """The limits that apply to one task's jobs: its own plus its queue's."""

    task: str
    task_limits: tuple[Limit, ...] = ()
    queue_limits: tuple[Limit, ...] = ()
    breaker: CircuitBreaker | None = None
    _plan: tuple[tuple[str, KeySpec, str], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Per limit: its gate name (without the key's value), key and rule text, worked out
        # once per task rather than for every enqueued job.
        plan: list[tuple[str, KeySpec, str]] = []
        for scope, limits in (
            (f"task:{self.task}", self.task_limits),
            ("queue", self.queue_limits),
        ):
            for lim in limits:
                kind = "rate" if isinstance(lim, RateLimit) else "conc"
                plan.append((f"{kind}:{lim.name or scope}", lim.key, _spec_json(lim.spec())))
        if self.breaker is not None:
            plan.append((f"breaker:task:{self.task}", None, _spec_json(self.breaker.spec())))
        object.__setattr__(self, "_plan", tuple(plan))

    def __bool__(self) -> bool:
        return bool(self.task_limits or self.queue_limits or self.breaker)

    def gates(self, payload: Mapping[str, Any], tenant: str | None) -> list[Gate]:
        out: list[Gate] = []
        for name, key, spec in self._plan:
            if key is not None:
                name += f"[{_key_label(key)}={_key_value(key, payload, tenant)}]"
            out.append(Gate(name, spec))
        return out


def flow_of(gates: Sequence[Gate]) -> str | None:
    """The flow id of a job: the JSON array of its sorted gate names (None when unlimited)."""
    if not gates:
        return None
    return orjson.dumps(sorted({g.name for g in gates})).decode()


def _spec_json(spec: dict[str, Any]) -> str:
    return orjson.dumps(spec).decode()


def _key_label(key: KeySpec) -> str:
    if isinstance(key, str):
        return key
    return getattr(key, "__name__", "key")


def _key_value(key: KeySpec, payload: Mapping[str, Any], tenant: str | None) -> str:
    if isinstance(key, str):
        if key in payload:
            value = payload[key]
        elif key == "tenant" and tenant is not None:
            value = tenant
        else:
            raise ValidationError(
                f"limit key field 'payload.{key}' is missing (the job's limits are keyed by it)",
                field=f"payload.{key}",
            )
    else:
        assert key is not None
        try:
            value = key(payload)
        except Exception as exc:
            raise ValidationError(
                f"limit key function {_key_label(key)!r} failed: {type(exc).__name__}: {exc}",
                field="payload",
            ) from None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(
            f"limit key {_key_label(key)!r} must be a string or an integer, got "
            f"{type(value).__name__}",
            field="payload",
        )
    text = str(value)
    if not text or len(text) > MAX_KEY_VALUE or any(c in text for c in "[]=\n"):
        raise ValidationError(
            f"limit key {_key_label(key)!r} value must be 1-{MAX_KEY_VALUE} characters without "
            "'[', ']', '=' or newlines",
            field="payload",
        )
    return text


# -- the arithmetic every backend shares (the Redis Lua scripts mirror it) ----------------------


def gcra(tat: float, now: float, interval: float, burst: int) -> tuple[int, float]:
    """How many starts a rate gate allows now, and when the next one is allowed if none.

    GCRA: each start pushes the theoretical arrival time ``tat`` by ``interval``; a start is
    allowed while ``tat - (burst - 1) * interval <= now``.
    """
    tau = (burst - 1) * interval
    base = max(tat, now)
    if base - tau > now + 1e-9:
        return 0, base - tau
    return math.floor((now + tau - base) / interval + 1e-9) + 1, now


__all__ = [
    "CircuitBreaker",
    "Concurrency",
    "FlowRules",
    "Gate",
    "RateLimit",
    "as_breaker",
    "as_concurrency",
    "as_rate_limits",
    "flow_of",
    "gcra",
    "parse_rate",
]
