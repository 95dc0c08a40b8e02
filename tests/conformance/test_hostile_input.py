"""Hostile producer input is refused cleanly, never half-taken, never rewritten.

The cases a fuzzer found (issue 11): each bad value raises conveyor's `ValidationError` naming
the field, with a short message, and stores nothing; what is accepted reads back equal.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conveyor import Conveyor, ValidationError

SURROGATE = "\ud800"


class Colour(enum.Enum):
    RED = "red"


class Size(enum.StrEnum):
    BIG = "big"


class Level(enum.IntEnum):
    HIGH = 7


def deep(levels: int, leaf: Any = 1) -> Any:
    """``levels`` nested lists around ``leaf`` (built without recursion)."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def _register(app: Conveyor) -> None:
    @app.task
    async def blob(data: Any) -> None:
        return None

    @app.task
    async def obj(data: object) -> None:
        return None

    @app.task
    async def named(name: str, n: int = 0, ratio: float = 0.0) -> None:
        return None

    @app.task
    async def listed(values: list[int]) -> None:
        return None

    app.declare("remote")


async def _stored(app: Conveyor) -> int:
    listed = len((await app.list(limit=1000)).jobs)
    counted = sum(sum(s.counts.values()) for s in (await app.stats()).values())
    assert listed == counted
    return listed


Call = Callable[[Conveyor], Awaitable[Any]]


def _blob(data: Any, **options: Any) -> Call:
    return lambda a: a.enqueue("blob", {"data": data}, **options)


REFUSED: list[tuple[str, Call, str]] = [
    # Lone surrogates: UTF-8 cannot hold them (a raw TypeError/UnicodeEncodeError before).
    ("surrogate tenant", _blob(1, tenant=SURROGATE), "tenant"),
    ("surrogate idempotency key", _blob(1, idempotency_key="k" + SURROGATE), "idempotency_key"),
    ("surrogate task name", lambda a: a.enqueue(SURROGATE, {}), "task"),
    ("a list as the task", lambda a: a.enqueue([], {}), "task"),
    ("a dict as the task", lambda a: a.enqueue({"blob": 1}, {}), "task"),
    ("a list as an item's task", lambda a: a.enqueue_many([([], {})]), "items[0].task"),
    ("surrogate payload key", _blob({"ok": 1, SURROGATE: 2}), "payload.data["),
    ("surrogate key, declared task", lambda a: a.enqueue("remote", {SURROGATE: 1}), "payload["),
    ("surrogate payload string", _blob(["fine", "x" + SURROGATE]), "payload.data[1]"),
    ("surrogate in a str field", lambda a: a.enqueue("named", {"name": SURROGATE}),
     "payload.name"),
    # NUL: SQLite cut stored tenants and keys at it.
    ("NUL in tenant", _blob(1, tenant="a\x00b"), "tenant"),
    ("NUL in idempotency key", _blob(1, idempotency_key="a\x00b"), "idempotency_key"),
    # Nesting beyond orjson's 254 levels (a raw "Maximum serialization depth"), and beyond ours.
    ("300-deep payload", _blob(deep(300)), "payload.data"),
    ("65-deep payload", _blob(deep(64)), "payload.data"),
    ("300-deep payload, declared task", lambda a: a.enqueue("remote", {"a": deep(300)}),
     "payload.a"),
    # A 5,000-deep option value: RecursionError while formatting the message before.
    ("5000-deep max_attempts", _blob(1, max_attempts=deep(5000)), "max_attempts"),
    ("5000-deep priority", _blob(1, priority=deep(5000)), "priority"),
    ("5000-deep delay", _blob(1, delay=deep(5000)), "delay"),
    ("5000-deep tenant", _blob(1, tenant=deep(5000)), "tenant"),
    ("huge max_attempts", _blob(1, max_attempts=2**70), "max_attempts"),
    ("huge priority", _blob(1, priority=10**5000), "priority"),
    ("huge delay", _blob(1, delay=10**400), "delay"),
    ("delay past 100 years", _blob(1, delay=1e300), "delay"),
    # object() in an object-typed field: a raw PydanticSerializationError before.
    ("object() in an object field", lambda a: a.enqueue("obj", {"data": object()}),
     "payload.data"),
    # Non-finite floats were stored as null.
    ("NaN", _blob(math.nan), "payload.data"),
    ("inf", _blob([1.0, math.inf]), "payload.data[1]"),
    ("-inf", _blob({"x": -math.inf}), "payload.data.x"),
    ("NaN in a float field", lambda a: a.enqueue("named", {"name": "n", "ratio": math.nan}),
     "payload.ratio"),
    ("NaN, declared task", lambda a: a.enqueue("remote", {"x": math.nan}), "payload.x"),
    # Values JSON cannot hold, or that would come back as something else.
    ("bytes", _blob(b"abc"), "payload.data"),
    ("bytes in a str field", lambda a: a.enqueue("named", {"name": b"abc"}), "payload.name"),
    ("tuple", _blob((1, 2)), "payload.data"),
    ("tuple in a list[int] field", lambda a: a.enqueue("listed", {"values": (1, 2)}),
     "payload.values"),
    ("set", _blob({1, 2}), "payload.data"),
    ("frozenset", _blob(frozenset({1})), "payload.data"),
    ("datetime", _blob(datetime.datetime(2026, 1, 1)), "payload.data"),
    ("date", _blob(datetime.date(2026, 1, 1)), "payload.data"),
    ("Decimal", _blob(decimal.Decimal("1.1")), "payload.data"),
    ("UUID", _blob(uuid.UUID(int=1)), "payload.data"),
    ("plain Enum", _blob(Colour.RED), "payload.data"),
    ("custom object", _blob(type("Thing", (), {})()), "payload.data"),
    ("int beyond 64 bits", _blob(2**64), "payload.data"),
    ("int below -2**63", _blob(-(2**63) - 1), "payload.data"),
    ("int key", _blob({1: "x"}), "payload.data"),
    ("int key, declared task", lambda a: a.enqueue("remote", {1: "x"}), "payload"),
    # Lookups with values the driver cannot send.
    ("surrogate job id", lambda a: a.get(SURROGATE), "job_id"),
    ("surrogate batch id", lambda a: a.batch(SURROGATE), "batch_id"),
    ("surrogate batch filter", lambda a: a.list(batch=SURROGATE), "batch"),
    ("surrogate queue filter", lambda a: a.list(queue=SURROGATE), "queue"),
    ("surrogate tenant of a cancel", lambda a: a.cancel("x", tenant=SURROGATE), "tenant"),
    ("job id not a string", lambda a: a.get(deep(5000)), "job_id"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "field"), [pytest.param(c, f, id=n) for n, c, f in REFUSED])
async def test_hostile_value_is_refused_naming_the_field(
    app: Conveyor, call: Call, field: str
) -> None:
    # Given tasks of every payload rule (and one job stored)
    _register(app)
    await app.enqueue("blob", {"data": "existing"})
    # When a producer call carries a value storage cannot hold as given
    with pytest.raises(ValidationError) as err:
        await call(app)
    # Then it is conveyor's ValidationError naming the field, with a short message, and
    # nothing new was stored
    assert err.value.field is not None and err.value.field.startswith(field), err.value.field
    assert len(str(err.value)) < 300, str(err.value)
    assert await _stored(app) == 1


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"task": "blob", "payload": {"data": math.nan}}, id="NaN payload"),
        pytest.param({"task": "blob", "payload": {"data": 1}, "tenant": SURROGATE}, id="tenant"),
        pytest.param(("blob", {"data": deep(300)}), id="deep payload"),
        pytest.param({"task": "blob", "max_attempts": deep(5000)}, id="deep max_attempts"),
        pytest.param(("blob", {"data": b"x"}), id="bytes"),
        pytest.param({"task": "blob", "payload": {"data": 1}, "x" * 10_000_000: 1}, id="big key"),
        pytest.param(7, id="not an item"),
    ],
)
async def test_one_bad_item_refuses_the_whole_enqueue_many(app: Conveyor, bad: Any) -> None:
    # Given a batch whose third item is bad
    _register(app)
    items = [("blob", {"data": 1}), {"task": "blob", "payload": {"data": 2}}, bad, ("blob", None)]
    # When it is enqueued, then the error names the item, nothing is stored
    with pytest.raises(ValidationError) as err:
        await app.enqueue_many(iter(items))
    assert err.value.field is not None and err.value.field.startswith("items[2]"), err.value.field
    assert len(str(err.value)) < 300
    assert await _stored(app) == 0


async def test_enqueue_many_of_a_non_iterable_is_refused(app: Conveyor) -> None:
    _register(app)
    with pytest.raises(ValidationError) as err:
        await app.enqueue_many(42)  # type: ignore[arg-type]
    assert err.value.field == "items"


async def test_messages_never_repr_an_unbounded_value(app: Conveyor) -> None:
    # Given values of 10 MB and 5,000 levels in every place an error could show them
    _register(app)
    big = "x" * 10_000_000
    calls: list[Call] = [
        _blob(1, max_attempts=big),
        _blob(1, priority=big),
        _blob(1, tenant=big),
        _blob(1, idempotency_key=big),
        lambda a: a.enqueue(big, {}),
        lambda a: a.enqueue("named", {"name": "n", big: 1}),
        lambda a: a.enqueue("blob", {"data": 1, big: 1}),
        lambda a: a.list(status=big),
        lambda a: a.list(limit=deep(5000)),
        lambda a: a.enqueue_many([{"task": "blob", big: 1}]),
    ]
    for call in calls:
        # When each is refused, then the message stays short
        with pytest.raises(ValidationError) as err:
            await call(app)
        assert len(str(err.value)) < 300, str(err.value)[:300]
        assert err.value.field is None or len(err.value.field) < 200
    assert await _stored(app) == 0


async def test_sync_facade_raises_the_same_errors(app: Conveyor) -> None:
    # Given the sync facade (it wraps the async calls)
    _register(app)

    def produce() -> list[ValidationError]:
        errors = []
        for call in (
            lambda: app.sync.enqueue("blob", {"data": math.inf}),
            lambda: app.sync.enqueue("blob", {"data": 1}, tenant=SURROGATE),
            lambda: app.sync.enqueue_many([("blob", {"data": 1}), ("blob", {"data": {1, 2}})]),
        ):
            try:
                call()
            except ValidationError as exc:
                errors.append(exc)
        return errors

    import asyncio

    errors = await asyncio.to_thread(produce)
    # Then each call raised ValidationError naming the field, and nothing was stored
    assert [e.field for e in errors] == ["payload.data", "tenant", "items[1].payload.data"]
    assert await _stored(app) == 0


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("64-bit integer edges", {"data": [2**64 - 1, -(2**63), 2**53 + 1, 0]}),
    ("float edges", {"data": [-0.0, 1e308, 5e-324, 0.1, -1.5e-10]}),
    ("awkward strings", {"data": ["a\x00b", "\u2028", "😀", "", " ", "\x7f", '"\\']}),
    ("awkward keys", {"data": {"": 1, "a.b": 2, "[0]": 3, "😀": 4, "\x00": 5}}),
    ("64 levels", {"data": deep(62, {})}),
    ("enum members that equal their value", {"data": [Size.BIG, Level.HIGH]}),
]


@pytest.mark.parametrize("payload", [pytest.param(p, id=n) for n, p in ACCEPTED])
async def test_accepted_awkward_payloads_read_back_equal(
    app: Conveyor, payload: dict[str, Any]
) -> None:
    # Given an awkward but valid JSON payload
    _register(app)
    # When it is enqueued (alone and in a batch), then each reads back equal to what was sent
    job = await app.enqueue("blob", payload)
    assert (await app.get(job.id)).payload == payload
    assert job.payload == payload
    batch = await app.enqueue_many([("blob", payload), {"task": "remote", "payload": payload}])
    for job_id in batch.ids:
        assert (await app.get(job_id)).payload == payload
    assert await _stored(app) == 3


async def test_awkward_tenant_and_key_read_back_equal(app: Conveyor) -> None:
    # Given tenants and keys that are valid but unusual
    _register(app)
    for text in ("😀", "\u2028", "a" * 512, "{q}", " x "):
        # When a job carries them, then they read back as sent
        job = await app.enqueue("blob", {"data": 1}, tenant=text, idempotency_key=text)
        got = await app.get(job.id)
        assert (got.tenant, got.idempotency_key) == (text, text)


async def test_payload_limits_are_configurable(make_app: Callable[..., Conveyor]) -> None:
    # Given an app with small payload limits
    app = make_app(max_payload_bytes=100, max_payload_depth=3)
    _register(app)
    # When payloads sit at and just past each limit
    await app.enqueue("blob", {"data": "x" * (100 - len('{"data":""}'))})
    await app.enqueue("blob", {"data": [[1]]})
    with pytest.raises(ValidationError) as size:
        await app.enqueue("blob", {"data": "x" * (101 - len('{"data":""}'))})
    with pytest.raises(ValidationError) as depth:
        await app.enqueue("blob", {"data": [[[1]]]})
    # Then the ones past are refused, naming the limit, and only the others were stored
    assert size.value.field == "payload" and "max_payload_bytes=100" in str(size.value)
    assert depth.value.field == "payload.data" and "max_payload_depth=3" in str(depth.value)
    assert await _stored(app) == 2


async def test_default_payload_size_limit(app: Conveyor) -> None:
    # Given the default limit of 1 MiB
    _register(app)
    # When a payload is 2 MiB, then it is refused with a short message
    with pytest.raises(ValidationError) as err:
        await app.enqueue("blob", {"data": "x" * 2_097_152})
    assert "max_payload_bytes=1,048,576" in str(err.value) and len(str(err.value)) < 200
    assert await _stored(app) == 0
