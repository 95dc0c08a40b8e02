"""`Schedule`: one cron or periodic schedule of an app (``@app.cron`` / ``@app.periodic``), and
the tick arithmetic the scheduler needs (pure: no I/O, no clock of its own).

Ticks are integer epoch **milliseconds** (exact in SQLite, in Redis' Lua doubles and as JSON):

- a cron schedule's ticks are the instants its expression matches in its time zone, as
  ``croniter`` computes them on zone-aware datetimes. Daylight saving time: a wall time that does
  not exist (02:30 on the spring-forward night in Europe/Paris) fires at the first valid time
  after it (03:00); a wall time that occurs twice (02:30 on the fall-back night) fires once, at
  its first occurrence, when the expression names fixed hours — an expression whose hour field
  is ``*`` fires at each real occurrence, as a job every 30 minutes should (Vixie cron's rule);
- a periodic schedule's ticks are the multiples of its period since the Unix epoch, so every
  process computes the same ticks without talking to the others.

`plan` decides what to fire after the last claimed tick, per the catch-up policy (see its
docstring). A tick is *on time* when it is at most `grace` old: min(`MISFIRE_GRACE`, half the
period around it); older due ticks were missed (the schedulers were down, or too late)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import ConfigurationError
from .options import MAX_KEY_LEN, text_problem

MISFIRE_GRACE_MS = 60_000
"""The most a tick may be late and still count as on time (capped at half its period)."""
MAX_FIRES_PER_PASS = 1000
"""At most this many ticks of one schedule are fired in one pass (``catch_up="all"``); the next
pass goes on from there."""
DEFAULT_WINDOW = timedelta(days=1)


class CatchUp(StrEnum):
    """What to do with ticks missed while no scheduler ran."""

    SKIP = "skip"  # none: only a tick that is on time fires
    LATEST = "latest"  # one job for the gap: the latest due tick
    ALL = "all"  # every due tick within the window, oldest first


class Overlap(StrEnum):
    ALLOW = "allow"  # fire whatever the previous run's state
    SKIP = "skip"  # no job for a tick while the previous run is not final


def _choice(kind: type[StrEnum], value: Any, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)  # type: ignore[attr-defined]
        raise ConfigurationError(f"{what} must be one of {allowed}, got {value!r}") from None


def _millis(value: timedelta | float | int, what: str) -> int:
    if isinstance(value, timedelta):
        secs = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        secs = float(value)
    else:
        raise ConfigurationError(f"{what} must be a timedelta or seconds, got {value!r}")
    ms = round(secs * 1000)
    if not secs > 0 or ms <= 0:
        raise ConfigurationError(f"{what} must be positive (at least 1 ms), got {value!r}")
    return ms


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule: fire a job of ``task`` at each tick. Build with `Schedule.cron` or
    `Schedule.periodic` (they check every field and raise `ConfigurationError`)."""

    name: str
    task: str
    expression: str | None  # cron expression, or None for a periodic schedule
    every_ms: int | None  # period of a periodic schedule
    tz: str
    catch_up: CatchUp
    window_ms: int
    overlap: Overlap
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None  # None: the task's queue
    priority: int | None = None  # None: the task's priority
    _zone: ZoneInfo = field(default=ZoneInfo("UTC"), repr=False, compare=False)
    _fixed_hours: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def cron(cls, name: str, task: str, expression: str, *, tz: str = "UTC",
             **policies: Any) -> Schedule:  # fmt: skip
        """A cron schedule; ``expression`` has 5 fields (minute hour day month weekday), or 6
        with seconds last (croniter's form)."""
        if not isinstance(expression, str) or not croniter.is_valid(expression):
            raise ConfigurationError(f"schedule {name!r}: invalid cron expression {expression!r}")
        zone = _zone(name, tz)
        fields = expression.split()
        fixed = len(fields) >= 2 and fields[1] != "*"
        return cls._make(name, task, expression, None, tz, zone, fixed, policies)

    @classmethod
    def periodic(cls, name: str, task: str, every: timedelta | float, **policies: Any) -> Schedule:
        """A schedule firing every ``every`` (ticks at multiples of it since the epoch)."""
        ms = _millis(every, f"schedule {name!r}: every")
        return cls._make(name, task, None, ms, "UTC", ZoneInfo("UTC"), False, policies)

    @classmethod
    def _make(cls, name: str, task: str, expression: str | None, every_ms: int | None, tz: str,
              zone: ZoneInfo, fixed: bool, p: dict[str, Any]) -> Schedule:  # fmt: skip
        bad = text_problem(name) if isinstance(name, str) else "it is not a string"
        if bad is not None or len(name) > MAX_KEY_LEN - 40:
            raise ConfigurationError(f"schedule name {name!r:.80} is invalid: "
                                     f"{bad or 'it is too long'}")  # fmt: skip
        window = p.get("window")
        payload = p.get("payload") or {}
        if not isinstance(payload, dict):
            raise ConfigurationError(
                f"schedule {name!r}: payload must be a dict, got {type(payload).__name__}"
            )
        return cls(
            name, task, expression, every_ms, tz,
            _choice(CatchUp, p.get("catch_up", "latest"), f"schedule {name!r}: catch_up"),
            _millis(DEFAULT_WINDOW if window is None else window, f"schedule {name!r}: window"),
            _choice(Overlap, p.get("overlap", "allow"), f"schedule {name!r}: overlap"),
            payload, p.get("queue"), p.get("priority"), zone, fixed,
        )  # fmt: skip

    # -- ticks -----------------------------------------------------------------------------------

    def describe(self) -> str:
        """The expression, or ``every <seconds>s``."""
        if self.expression is not None:
            return self.expression
        assert self.every_ms is not None
        return f"every {self.every_ms / 1000:g}s"

    def next_after(self, t: int) -> int:
        """The first tick strictly after ``t`` (ms)."""
        if self.every_ms is not None:
            return (t // self.every_ms + 1) * self.every_ms
        it = croniter(self.expression, _aware(t, self._zone))
        while True:
            d = it.get_next(datetime)
            tick = _ms(d)
            if tick > t and not self._repeated(d):
                return tick

    def latest_at_or_before(self, t: int) -> int:
        """The last tick at or before ``t`` (ms)."""
        if self.every_ms is not None:
            return (t // self.every_ms) * self.every_ms
        it = croniter(self.expression, _aware(t + 1, self._zone))
        while True:
            d = it.get_prev(datetime)
            tick = _ms(d)
            if tick <= t and not self._repeated(d):
                return tick

    def ticks(self, after: int, until: int, limit: int = MAX_FIRES_PER_PASS) -> list[int]:
        """The ticks in (``after``, ``until``], oldest first, at most ``limit``."""
        out: list[int] = []
        t = after
        while len(out) < limit:
            t = self.next_after(t)
            if t > until:
                break
            out.append(t)
        return out

    def grace(self, tick: int) -> int:
        """How late ``tick`` may fire and still be on time (ms)."""
        return min(MISFIRE_GRACE_MS, (self.next_after(tick) - tick) // 2)

    def _repeated(self, d: datetime) -> bool:
        """Whether ``d`` is the second occurrence of a wall time (fall-back night) that a
        fixed-hour expression already fired at its first occurrence."""
        if not self._fixed_hours:
            return False
        naive = d.replace(tzinfo=None)
        first = naive.replace(tzinfo=self._zone, fold=0).timestamp()
        second = naive.replace(tzinfo=self._zone, fold=1).timestamp()
        return first != second and d.timestamp() == second


def idempotency_key(schedule: str, tick: int) -> str:
    """``cron:<schedule>:<tick in epoch seconds>``: the key of the job of one tick."""
    secs = str(tick // 1000) if tick % 1000 == 0 else f"{tick / 1000:.3f}"
    return f"cron:{schedule}:{secs}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What one scheduler pass does for one schedule: claim ``skip_to`` without a job (ticks
    the policy does not fire), then fire each tick of ``fire`` in order."""

    fire: tuple[int, ...] = ()
    skip_to: int | None = None


def plan(s: Schedule, last: int, now: int) -> Plan:
    """What to fire for the ticks due after ``last`` (the last tick claimed) at ``now`` (ms):

    - ``skip``: only a tick that is on time; the missed ones are claimed without a job.
    - ``latest``: the latest due tick, if within the window (one job for a whole gap).
    - ``all``: every due tick within the window, oldest first (`MAX_FIRES_PER_PASS` a pass).
    """
    latest = s.latest_at_or_before(now)
    if latest <= last:
        return Plan()
    if s.catch_up is CatchUp.SKIP:
        on_time = now - latest <= s.grace(latest)
        return Plan((latest,)) if on_time else Plan(skip_to=latest)
    if s.catch_up is CatchUp.LATEST:
        return Plan((latest,)) if now - latest <= s.window_ms else Plan(skip_to=latest)
    due = s.ticks(max(last, now - s.window_ms), now)
    return Plan(tuple(due)) if due else Plan(skip_to=latest)


def _aware(t: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(t / 1000, zone)


def _ms(d: datetime) -> int:
    return round(d.timestamp() * 1000)


def _zone(name: str, tz: str) -> ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise ConfigurationError(f"schedule {name!r}: tz must be a time zone name, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"schedule {name!r}: unknown time zone {tz!r}") from None
