"""Property: whatever a buggy producer sends, enqueue either stores it exactly or refuses it.

Hypothesis generates enqueue and enqueue_many calls with awkward payloads and options (NaN,
bytes, tuples, sets, dates, huge ints, lone surrogates, deep nesting, wrong types, out of range
numbers) on every backend. For each call: anything accepted reads back (``app.get``) equal to
what was sent, options included; anything refused raises conveyor's `ValidationError` and
stores nothing; ``stats()`` counts exactly the jobs accepted.

The calls go through ``app.sync`` (its own loop in a thread): hypothesis drives a sync function,
so the function-scoped ``app`` fixture is set up once per backend, outside ``@given``.
Deterministic (``derandomize``), no example database (nothing written to ``.hypothesis/``), and
bounded: a few seconds per backend.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import math
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from conveyor import Conveyor, ValidationError
from conveyor.job import PRIORITY_NAMES

EXAMPLES = 150
# Hypothesis caches constants it found in the code under its home directory even without an
# example database: keep that out of the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "conveyor-hypothesis")
QUEUE_DEFAULTS = {"priority": 5, "max_attempts": 4}


class Colour(enum.Enum):
    RED = "red"


class Size(enum.StrEnum):
    BIG = "big"


def deep(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


SURROGATES = st.sampled_from(["\ud800", "x\udfffy", "\udbff"])
TEXT = st.text(max_size=12) | SURROGATES | st.sampled_from(["", "a\x00b", "\u2028", "😀", "{q}"])
ODD = st.sampled_from(
    [b"bytes", bytearray(b"x"), (1, 2), {1, 2}, frozenset(), datetime.datetime(2026, 1, 1),
     datetime.date(2026, 1, 1), decimal.Decimal("1.5"), uuid.UUID(int=7), object(), Colour.RED,
     Size.BIG, math.nan, math.inf, -math.inf, 2**64, -(2**63) - 1, 2**100]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
VALUES = st.recursive(
    SCALARS | ODD,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(TEXT | st.integers(0, 2), kids, max_size=4)
    ),
    max_leaves=10,
) | st.integers(55, 300).map(deep)
AWKWARD = st.sampled_from(
    [[], [[1]], deep(5000), object(), b"x", "\ud800", math.nan, math.inf, 2**70, -1, 0, True, 1.5,
     "x" * 100_000]
)  # fmt: skip
TENANTS = st.none() | st.text(min_size=1, max_size=8) | TEXT | st.just("t" * 513) | AWKWARD
PRIORITIES = (
    st.none()
    | st.integers(-2, 102)
    | st.sampled_from(["high", "LOW", "Critical", "asap", ""])
    | AWKWARD
)
DELAYS = (
    st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-3, 3)
    | st.timedeltas()
    | st.datetimes(timezones=st.none() | st.just(datetime.UTC))
    | AWKWARD
)
ATTEMPTS = st.none() | st.integers(-1, 2**32) | AWKWARD
OPTIONS = st.fixed_dictionaries(
    {},
    optional={"priority": PRIORITIES, "delay": DELAYS, "idempotency_key": TENANTS,
              "tenant": TENANTS, "max_attempts": ATTEMPTS},
)  # fmt: skip

# What a careful producer sends: JSON (awkward but valid) and options in range. Half of the
# calls use only these, so that many are accepted and read back.
JSON_TEXT = st.text(max_size=12) | st.sampled_from(["", "a\x00b", "\u2028", "😀", '"\\'])
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | JSON_TEXT,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(JSON_TEXT, kids, max_size=4),
    max_leaves=10,
)
KEYS = st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=8)
CLEAN_OPTIONS = st.fixed_dictionaries(
    {},
    optional={"priority": st.integers(0, 100) | st.sampled_from(list(PRIORITY_NAMES)),
              "delay": st.none() | st.floats(0, 5) | st.timedeltas(max_value=datetime.timedelta(1)),
              "idempotency_key": KEYS, "tenant": KEYS, "max_attempts": st.integers(1, 50)},
)  # fmt: skip


def payloads(values: st.SearchStrategy[Any], buggy: bool) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(st.just("blob"), st.fixed_dictionaries({"data": values})),
        st.tuples(st.just("named"), st.fixed_dictionaries({"name": values})),
        st.tuples(st.just("remote"), st.none() | st.dictionaries(TEXT, values, max_size=3)),
        # unknown or ill-typed task names
        st.tuples(TEXT | AWKWARD, st.none()) if buggy else st.nothing(),
    )


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, Any]:
    buggy = draw(st.booleans())
    contents = payloads(VALUES if buggy else JSON_VALUES, buggy)
    options = OPTIONS if buggy else CLEAN_OPTIONS
    if draw(st.booleans()):
        task, payload = draw(contents)
        return "one", (task, payload, draw(options))
    items = []
    for _ in range(draw(st.integers(0, 4))):
        task, payload = draw(contents)
        if draw(st.booleans()):
            items.append((task, payload))
        else:
            items.append({"task": task, "payload": payload, **draw(options)})
    shared = {k: v for k, v in draw(options).items() if k in ("priority", "delay", "tenant")}
    return "many", (items, shared)


@dataclass
class Sent:
    """What one stored job was sent with."""

    task: str
    payload: dict[str, Any]
    options: dict[str, Any]


def _expected_option(name: str, options: dict[str, Any]) -> Any:
    value = options.get(name)
    if name == "priority":
        if value is None:
            return QUEUE_DEFAULTS["priority"]
        return PRIORITY_NAMES[value.lower()] if isinstance(value, str) else value
    if name == "max_attempts":
        return QUEUE_DEFAULTS["max_attempts"] if value is None else value
    return value


def _check_stored(app: Conveyor, job_id: str, sent: Sent) -> None:
    job = app.sync.get(job_id)
    assert job.task == sent.task
    assert job.payload == sent.payload, (job.payload, sent.payload)
    for name in ("priority", "max_attempts", "tenant", "idempotency_key"):
        assert getattr(job, name) == _expected_option(name, sent.options), name


def _register(app: Conveyor) -> None:
    @app.task
    async def blob(data: Any) -> None:
        return None

    @app.task
    async def named(name: str) -> None:
        return None

    app.declare("remote")


def _run_property(app: Conveyor) -> int:
    stored: dict[str, Sent] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(calls(), min_size=1, max_size=3))
    def producer_calls(batch: list[tuple[str, Any]]) -> None:
        before = len(stored)
        for kind, args in batch:
            try:
                if kind == "one":
                    task, payload, options = args
                    job = app.sync.enqueue(task, payload, **options)
                    results = [(job.id, Sent(task, payload or {}, options))]
                else:
                    items, shared = args
                    out = app.sync.enqueue_many(items, **shared)
                    assert len(out.ids) == len(items)
                    results = []
                    for job_id, item in zip(out.ids, items, strict=True):
                        if isinstance(item, tuple):
                            task, payload, options = *item, {}
                        else:
                            task, payload = item["task"], item["payload"]
                            options = {
                                k: v for k, v in item.items() if k not in ("task", "payload")
                            }
                        options = {**shared, **options}
                        results.append((job_id, Sent(task, payload or {}, options)))
            except ValidationError:
                continue  # refused: conveyor's own error (anything else fails the property)
            for job_id, sent in results:
                # A repeated idempotency key returns the job stored first, as it was sent then
                stored.setdefault(job_id, sent)
                _check_stored(app, job_id, stored[job_id])
        if len(stored) != before:
            counted = sum(sum(s.counts.values()) for s in app.sync.stats().values())
            assert counted == len(stored)

    producer_calls()
    counted = sum(sum(s.counts.values()) for s in app.sync.stats().values())
    assert counted == len(stored)
    return len(stored)


async def test_enqueue_stores_exactly_or_refuses_cleanly(app: Conveyor) -> None:
    # Given tasks of every payload rule
    _register(app)
    # When hypothesis sends awkward enqueue and enqueue_many calls through the sync facade,
    # then each is stored exactly or refused with ValidationError, and stats count what was
    # stored (checked inside the property)
    accepted = await asyncio.to_thread(_run_property, app)
    # And the run did store jobs (the strategies are not all refusals)
    assert accepted > 20
