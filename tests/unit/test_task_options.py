"""Task options: validated when the task is registered, naming the bad option."""

from __future__ import annotations

import math
from typing import Any

import pytest

from conveyor import Backoff, ConfigurationError, Conveyor


def _register(**options: Any) -> Any:
    app = Conveyor("sqlite:///unused.db")

    @app.task(**options)
    async def t() -> None:
        return None

    return t


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"retries": True}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -3}, "timeout"),
        ({"lease": 0.1}, "lease"),
        # not finite: nan passes every comparison, and inf is not "no limit" (None is); stored
        # as JSON (PostgreSQL's enqueue), both would become null
        ({"timeout": math.inf}, "timeout must be a finite"),
        ({"timeout": math.nan}, "timeout must be a finite"),
        ({"lease": math.inf}, "lease must be a finite"),
        ({"lease": math.nan}, "lease must be a finite"),
        ({"max_stalls": -1}, "max_stalls"),
        ({"priority": "asap"}, "priority"),
        ({"priority": 1000}, "priority"),
        ({"queue": ""}, "queue"),
        ({"queue": "has space"}, "queue"),
        ({"queue": "{tag}"}, "queue"),
        ({"queue": "a/b"}, "queue"),
        ({"backoff_factor": 0.5}, "factor"),
        ({"backoff_jitter": 2}, "jitter"),
    ],
)
def test_impossible_options_are_configuration_errors(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        _register(**options)


def test_unknown_option_is_refused() -> None:
    with pytest.raises(TypeError):
        _register(retry=3)


def test_defaults() -> None:
    t = _register()
    o = t.options
    assert (o.queue, o.priority, o.retries, o.max_attempts, o.timeout) == ("default", 5, 3, 4, None)
    assert o.backoff == Backoff()


def test_backoff_parts_override_the_default_or_given_backoff() -> None:
    t = _register(backoff=Backoff(initial=2, factor=3, max=60, jitter=0), backoff_max=30)
    assert t.options.backoff == Backoff(initial=2, factor=3, max=30, jitter=0)


def test_task_name_is_the_function_name_or_given() -> None:
    app = Conveyor("sqlite:///unused.db")

    @app.task
    async def resize_image() -> None:
        return None

    @app.task(name="media.thumbnail")
    async def thumb() -> None:
        return None

    assert set(app.tasks) == {"resize_image", "media.thumbnail"}
    assert app.queues() == ["default"]


def test_two_tasks_with_one_name_are_refused() -> None:
    app = Conveyor("sqlite:///unused.db")

    @app.task
    async def dup() -> None:
        return None

    with pytest.raises(ConfigurationError, match="already registered"):

        @app.task(name="dup")
        async def other() -> None:
            return None


def test_a_task_is_still_callable_directly() -> None:
    app = Conveyor("sqlite:///unused.db")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    assert add(a=2, b=3) == 5
