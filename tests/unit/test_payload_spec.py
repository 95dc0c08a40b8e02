"""`PayloadSpec`: a handler's signature as the payload schema (checked at enqueue)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pydantic
import pytest

from conveyor import ConfigurationError, Context, ValidationError
from conveyor.task import PayloadSpec


def spec(fn: Any) -> PayloadSpec:
    return PayloadSpec(fn, fn.__name__)


async def enrich(ctx: Context, session_id: str, include_audio: bool = True) -> None: ...


def test_context_parameter_is_detected_by_name_or_annotation() -> None:
    def by_name(ctx, x: int) -> None: ...  # type: ignore[no-untyped-def]
    def by_other_name(context, x: int) -> None: ...  # type: ignore[no-untyped-def]
    def by_annotation(c: Context, x: int) -> None: ...
    def without(x: int) -> None: ...

    assert spec(by_name).wants_ctx
    assert spec(by_other_name).wants_ctx
    assert spec(by_annotation).wants_ctx
    assert not spec(without).wants_ctx
    # And the context is never a payload field
    assert spec(by_annotation).field_names == ["x"]


def test_valid_payload_is_returned_as_given() -> None:
    s = spec(enrich)
    assert s.validate({"session_id": "s-1"}) == {"session_id": "s-1"}
    assert s.validate({"session_id": "s-1", "include_audio": False}) == {
        "session_id": "s-1", "include_audio": False,
    }  # fmt: skip


def test_defaults_are_not_stored() -> None:
    # Then an omitted optional parameter is not written into the stored payload
    assert "include_audio" not in spec(enrich).validate({"session_id": "s"})


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({}, "payload.session_id", "missing"),
        ({"session_id": "s", "extra": 1}, "payload.extra", "unknown"),
        ({"session_id": 5}, "payload.session_id", "invalid"),
        ({"session_id": "s", "include_audio": "maybe"}, "payload.include_audio", "invalid"),
        (["s"], "payload", "dict"),
        ("s", "payload", "dict"),
    ],
)
def test_bad_payloads_name_the_field(payload: Any, field: str, words: str) -> None:
    with pytest.raises(ValidationError, match=words) as err:
        spec(enrich).validate(payload)
    assert err.value.field == field
    assert "enrich" in str(err.value)


def test_several_problems_are_summarised() -> None:
    def two(a: int, b: int) -> None: ...

    with pytest.raises(ValidationError, match="1 more problem"):
        spec(two).validate({})


def test_none_payload_is_an_empty_one() -> None:
    def nothing() -> None: ...

    assert spec(nothing).validate(None) == {}
    with pytest.raises(ValidationError) as err:
        spec(nothing).validate({"x": 1})
    assert err.value.field == "payload.x"


def test_lax_values_are_coerced_to_their_json_form() -> None:
    # Given a handler taking a datetime and a Literal
    def when(at: datetime, mode: Literal["fast", "slow"] = "fast") -> None: ...

    s = spec(when)
    # When the payload gives an ISO string, then it is stored as JSON and handed back as datetime
    stored = s.validate({"at": "2030-01-02T03:04:05+00:00", "mode": "slow"})
    assert stored == {"at": "2030-01-02T03:04:05Z", "mode": "slow"}
    kwargs = s.to_kwargs(stored)
    assert kwargs["at"] == datetime.fromisoformat("2030-01-02T03:04:05+00:00")
    assert kwargs["mode"] == "slow"
    with pytest.raises(ValidationError) as err:
        s.validate({"at": "2030-01-02T03:04:05Z", "mode": "medium"})
    assert err.value.field == "payload.mode"


def test_native_payloads_pass_through_to_kwargs_unchanged() -> None:
    payload = {"session_id": "s", "include_audio": True}
    s = spec(enrich)
    assert s.native
    assert s.to_kwargs(s.validate(payload)) == payload


class Order(pydantic.BaseModel):
    order_id: int
    items: list[str] = []


def test_a_single_model_parameter_takes_the_payload_as_its_fields() -> None:
    def ship(order: Order) -> None: ...

    s = spec(ship)
    assert s.model_param == "order"
    stored = s.validate({"order_id": "12", "items": ["a"]})
    assert stored == {"order_id": 12, "items": ["a"]}
    kwargs = s.to_kwargs(stored)
    assert kwargs == {"order": Order(order_id=12, items=["a"])}
    with pytest.raises(ValidationError) as err:
        s.validate({"items": []})
    assert err.value.field == "payload.order_id"


def test_a_model_among_other_parameters_is_a_nested_field() -> None:
    def ship(order: Order, express: bool = False) -> None: ...

    s = spec(ship)
    assert s.model_param is None
    stored = s.validate({"order": {"order_id": 1}})
    assert s.to_kwargs(stored)["order"] == Order(order_id=1)
    with pytest.raises(ValidationError) as err:
        s.validate({"order": {"order_id": "x"}})
    assert err.value.field == "payload.order.order_id"


@pytest.mark.parametrize(
    "source",
    [
        "def f(*args): ...",
        "def f(**kwargs): ...",
        "def f(a, /, b): ...",
        "def f(ctx, *rest): ...",
    ],
)
def test_signatures_a_payload_cannot_fill_are_configuration_errors(source: str) -> None:
    ns: dict[str, Any] = {}
    exec(source, ns)
    with pytest.raises(ConfigurationError, match="plain keyword parameter"):
        spec(ns["f"])
