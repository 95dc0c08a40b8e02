"""`check_payload`: a payload checked against a task's published JSON Schema (no task code)
accepts and refuses what the app itself would, naming the same field."""

from __future__ import annotations

import enum
from typing import Any, Literal

import pydantic
import pytest

from conveyor import Context, ValidationError
from conveyor.schema_check import check_payload
from conveyor.task import PayloadSpec


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    city: str
    zip: str = pydantic.Field(pattern=r"^\d{5}$")


class Order(pydantic.BaseModel):
    sku: str = pydantic.Field(min_length=2)
    qty: int = pydantic.Field(ge=1, le=10)
    ship_to: Address | None = None


async def signup(ctx: Context, email: str, age: int, tags: list[str] = [],  # noqa: B006
                 plan: Literal["free", "pro"] = "free", color: Color = Color.RED,
                 ratio: float = 1.0, extra: dict[str, int] | None = None,
                 pair: tuple[int, str] | None = None) -> None: ...  # fmt: skip


async def order(o: Order) -> None: ...


async def nothing() -> None: ...


CASES: list[tuple[Any, dict[str, Any], str | None]] = [
    # (handler, payload, the field refused or None when accepted)
    (signup, {"email": "a@b", "age": 3}, None),
    (
        signup,
        {
            "email": "a@b",
            "age": 3,
            "tags": ["x"],
            "plan": "pro",
            "color": "blue",
            "ratio": 2,
            "extra": {"a": 1},
            "pair": [1, "x"],
        },
        None,
    ),
    (signup, {"email": "a@b"}, "payload.age"),
    (signup, {"email": "a@b", "age": 3, "bogus": 1}, "payload.bogus"),
    (signup, {"email": 5, "age": 3}, "payload.email"),
    (signup, {"email": "a@b", "age": 3, "tags": ["x", 2]}, "payload.tags[1]"),
    (signup, {"email": "a@b", "age": 3, "plan": "gold"}, "payload.plan"),
    (signup, {"email": "a@b", "age": 3, "color": "green"}, "payload.color"),
    (signup, {"email": "a@b", "age": 3, "extra": {"a": "x"}}, "payload.extra.a"),
    (signup, {"email": "a@b", "age": 3, "pair": [1, 2]}, "payload.pair[1]"),
    (order, {"sku": "ab", "qty": 2}, None),
    (order, {"sku": "ab", "qty": 2, "ship_to": {"city": "X", "zip": "12345"}}, None),
    (order, {"sku": "a", "qty": 2}, "payload.sku"),
    (order, {"sku": "ab", "qty": 11}, "payload.qty"),
    (order, {"sku": "ab", "qty": 2, "ship_to": {"city": "X", "zip": "1"}}, "payload.ship_to.zip"),
    (order, {"sku": "ab", "qty": 2, "ship_to": {"zip": "12345"}}, "payload.ship_to.city"),
    (order, {"sku": "ab", "qty": 2, "other": 1}, "payload.other"),
    (nothing, {}, None),
    (nothing, {"x": 1}, "payload.x"),
]


@pytest.mark.parametrize(("fn", "payload", "refused"), CASES)
def test_the_published_schema_accepts_and_refuses_what_the_app_does(
    fn: Any, payload: dict[str, Any], refused: str | None
) -> None:
    # Given a task's payload rule and the JSON Schema its worker publishes
    spec = PayloadSpec(fn, fn.__name__)
    schema = spec.json_schema()
    assert schema is not None
    # When a payload is checked against each
    if refused is None:
        # Then both accept it
        spec.validate(payload)
        check_payload(schema, payload, fn.__name__)
        return
    with pytest.raises(ValidationError) as by_app:
        spec.validate(payload)
    with pytest.raises(ValidationError) as by_schema:
        check_payload(schema, payload, fn.__name__)
    # Then both refuse it, naming the same field and the task
    assert by_schema.value.field == by_app.value.field == refused
    assert f"task {fn.__name__!r}" in str(by_schema.value) and refused in str(by_schema.value)


def test_no_coercion_a_string_a_float_or_a_bool_is_not_an_integer() -> None:
    # Given the schema of a task taking an integer (the app's lax mode would convert these)
    schema = PayloadSpec(signup, "signup").json_schema()
    assert schema is not None
    # Then only an integer is one: the stored payload is what the handler gets
    for age in ("5", 5.0, True):
        with pytest.raises(ValidationError, match="expected integer"):
            check_payload(schema, {"email": "e", "age": age}, "signup")


def test_unknown_keywords_and_remote_refs_are_left_to_the_worker() -> None:
    # Given keywords the checker does not know, and a schema that forbids a field outright
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "http://x/y"}, "b": {"format": "uuid"}},
    }
    check_payload(schema, {"a": 1, "b": "not-a-uuid"}, "t")
    with pytest.raises(ValidationError, match="not allowed"):
        check_payload({"properties": {"a": False}}, {"a": 1}, "t")
