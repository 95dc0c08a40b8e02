"""`conveyor.inputs`: payload limits as settings, bounded reprs, field paths."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor
from conveyor.inputs import PayloadLimits, brief, field_path


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_payload_bytes": 0},
        {"max_payload_bytes": -1},
        {"max_payload_bytes": 1.5},
        {"max_payload_bytes": True},
        {"max_payload_bytes": 2**40},
        {"max_payload_bytes": "1MB"},
        {"max_payload_depth": 0},
        {"max_payload_depth": 255},
        {"max_payload_depth": None},
    ],
)
def test_bad_payload_limits_are_configuration_errors(tmp_path: Any, kwargs: dict[str, Any]) -> None:
    # Given a bad limit, when an app is built with it, then ConfigurationError names it
    with pytest.raises(ConfigurationError) as err:
        Conveyor(f"sqlite:///{tmp_path}/c.db", **kwargs)
    assert next(iter(kwargs)) in str(err.value)
    assert len(str(err.value)) < 200


def test_default_limits() -> None:
    assert PayloadLimits() == PayloadLimits(1_048_576, 64)


def test_brief_is_short_whatever_the_value() -> None:
    class Loud:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    nested: Any = 1
    for _ in range(5000):
        nested = [nested]
    for value in ("x" * 10_000_000, nested, 10**5000, -(10**5000), Loud(), {"k" * 10**6: 1}):
        assert len(brief(value)) <= 100


@pytest.mark.parametrize(
    ("parts", "path"),
    [
        (["items", 3, "name"], "payload.items[3].name"),
        (["a.b"], "payload['a.b']"),
        ([""], "payload['']"),
        (["\ud800"], "payload['\\ud800']"),
    ],
)
def test_field_paths(parts: list[object], path: str) -> None:
    assert field_path("payload", parts) == path
    path.encode()  # always encodable: it may go into JSON and logs


def test_a_long_key_is_cut_short_in_a_path() -> None:
    path = field_path("payload", ["k" * 10_000_000, 0])
    assert path.startswith("payload['kkk") and path.endswith("'][0]") and len(path) < 60


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"name": "\ud800"}, "surrogate"),
        ({"name": "a\x00b"}, "NUL"),
        ({"name": "t" * 513}, "longer"),
        ({"queue": "q\ud800"}, "queue name"),
    ],
)
def test_task_and_queue_names_storage_cannot_keep_are_refused_at_registration(
    tmp_path: Any, options: dict[str, Any], word: str
) -> None:
    # Given an app, when a task is registered under a name storage cannot keep exactly
    app = Conveyor(f"sqlite:///{tmp_path}/c.db")
    with pytest.raises(ConfigurationError) as err:

        @app.task(**options)
        async def t() -> None:
            return None

    # Then registration fails saying why, briefly
    assert word in str(err.value) and len(str(err.value)) < 200
