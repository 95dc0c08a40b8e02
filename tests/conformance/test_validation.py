"""Producer input is validated before anything is stored: a bad call stores nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
import pytest

from conveyor import Conveyor, UnknownTask, ValidationError


class Order(pydantic.BaseModel):
    order_id: int
    note: str = ""


def _register(app: Conveyor) -> None:
    @app.task
    async def enrich(session_id: str, include_audio: bool = True) -> None:
        return None

    @app.task
    async def blob(data: Any) -> None:
        return None

    @app.task
    async def ship(order: Order) -> None:
        return None


async def _stored(app: Conveyor) -> int:
    """Jobs stored, by two independent reads: the listing and the per-state counts."""
    listed = len((await app.list(limit=1000)).jobs)
    counted = sum(sum(s.counts.values()) for s in (await app.stats()).values())
    assert listed == counted
    return listed


Call = Callable[[Conveyor], Awaitable[Any]]

BAD_CALLS: list[tuple[str, Call, type[Exception], str]] = [
    ("missing field", lambda a: a.enqueue("enrich", {}), ValidationError, "payload.session_id"),
    ("unknown field", lambda a: a.enqueue("enrich", {"session_id": "s", "bogus": 1}),
     ValidationError, "payload.bogus"),
    ("ill-typed field", lambda a: a.enqueue("enrich", {"session_id": 123}),
     ValidationError, "payload.session_id"),
    ("ill-typed optional field",
     lambda a: a.enqueue("enrich", {"session_id": "s", "include_audio": "perhaps"}),
     ValidationError, "payload.include_audio"),
    ("payload not an object", lambda a: a.enqueue("enrich", ["s"]), ValidationError, "payload"),
    ("pydantic model field", lambda a: a.enqueue("ship", {"order_id": "abc"}),
     ValidationError, "payload.order_id"),
    ("pydantic model missing field", lambda a: a.enqueue("ship", {"note": "x"}),
     ValidationError, "payload.order_id"),
    ("set is not JSON", lambda a: a.enqueue("blob", {"data": {1, 2}}), ValidationError, "payload"),
    ("object is not JSON", lambda a: a.enqueue("blob", {"data": object()}),
     ValidationError, "payload"),
    ("unknown task", lambda a: a.enqueue("nope", {}), UnknownTask, "task"),
    ("negative delay", lambda a: a.enqueue("enrich", {"session_id": "s"}, delay=-1),
     ValidationError, "delay"),
    ("delay of the wrong type", lambda a: a.enqueue("enrich", {"session_id": "s"}, delay="soon"),
     ValidationError, "delay"),
    ("unknown priority name", lambda a: a.enqueue("enrich", {"session_id": "s"}, priority="asap"),
     ValidationError, "priority"),
    ("priority 101", lambda a: a.enqueue("enrich", {"session_id": "s"}, priority=101),
     ValidationError, "priority"),
    ("priority -1", lambda a: a.enqueue("enrich", {"session_id": "s"}, priority=-1),
     ValidationError, "priority"),
    ("priority bool", lambda a: a.enqueue("enrich", {"session_id": "s"}, priority=True),
     ValidationError, "priority"),
    ("max_attempts 0", lambda a: a.enqueue("enrich", {"session_id": "s"}, max_attempts=0),
     ValidationError, "max_attempts"),
    ("empty idempotency key",
     lambda a: a.enqueue("enrich", {"session_id": "s"}, idempotency_key=""),
     ValidationError, "idempotency_key"),
    ("tenant too long", lambda a: a.enqueue("enrich", {"session_id": "s"}, tenant="t" * 513),
     ValidationError, "tenant"),
    ("bad item in enqueue_many",
     lambda a: a.enqueue_many([("enrich", {"session_id": "ok"}), ("enrich", {"session_id": 1})]),
     ValidationError, "items[1].payload.session_id"),
    ("unknown task in enqueue_many",
     lambda a: a.enqueue_many([("enrich", {"session_id": "ok"}), ("nope", {})]),
     ValidationError, "items[1].task"),
    ("bad dict item in enqueue_many",
     lambda a: a.enqueue_many([{"task": "enrich", "payload": {"session_id": "a"}},
                               {"task": "enrich", "payload": {"session_id": "b"}, "priority": 500}]),
     ValidationError, "items[1].priority"),
    ("unknown key in an enqueue_many item",
     lambda a: a.enqueue_many([{"task": "enrich", "payload": {"session_id": "a"}, "colour": 1}]),
     ValidationError, "items[0]"),
    ("item neither tuple nor dict", lambda a: a.enqueue_many([("enrich", {"session_id": "a"}), 7]),
     ValidationError, "items[1]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "exc_type", "field"),
    [pytest.param(c, e, f, id=name) for name, c, e, f in BAD_CALLS],
)
async def test_bad_enqueue_raises_naming_the_field_and_stores_nothing(
    app: Conveyor, call: Call, exc_type: type[Exception], field: str
) -> None:
    # Given tasks with typed parameters (and one job already stored)
    _register(app)
    await app.enqueue("enrich", {"session_id": "existing"})
    # When a producer call is invalid
    with pytest.raises(exc_type) as err:
        await call(app)
    # Then the error names the offending field (or a part of it), and nothing new was stored
    assert isinstance(err.value, ValidationError)
    assert err.value.field is not None and err.value.field.startswith(field), err.value.field
    assert await _stored(app) == 1


async def test_valid_payloads_are_stored_in_json_form(app: Conveyor) -> None:
    # Given tasks with typed parameters
    _register(app)
    # When valid payloads are enqueued (a model parameter takes the model's fields)
    a = await app.enqueue("enrich", {"session_id": "s-1"})
    b = await app.enqueue("ship", {"order_id": 42})
    c = await app.enqueue("blob", {"data": {"nested": [1, 2.5, None, "x"]}})
    # Then they are stored as given (JSON)
    assert (await app.get(a.id)).payload == {"session_id": "s-1"}
    assert (await app.get(b.id)).payload["order_id"] == 42
    assert (await app.get(c.id)).payload == {"data": {"nested": [1, 2.5, None, "x"]}}
    assert await _stored(app) == 3


async def test_a_model_parameter_reaches_the_handler_as_the_model(app: Conveyor) -> None:
    # Given a task taking a pydantic model
    @app.task
    async def ship(order: Order) -> str:
        assert isinstance(order, Order)
        return f"{order.order_id}:{order.note}"

    # When a job runs, then the handler got the model built from the payload
    async with app.worker(concurrency=1):
        job = await app.enqueue("ship", {"order_id": 7, "note": "fragile"})
        assert await app.wait(job.id, timeout=5) == "7:fragile"
