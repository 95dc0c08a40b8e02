"""`conveyor.otel.OpenTelemetryHook` called directly: what it puts in ``meta``, the spans of
odd failures, and the error without the ``otel`` extra. End to end: tests/conformance/test_tracing.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import ConfigurationError, Context, Job, JobState
from conveyor.hooks import Enqueuing
from conveyor.otel import OpenTelemetryHook, error_type
from tests.workers import subprocess_env


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


@pytest.fixture
def hook(exporter: InMemorySpanExporter) -> Iterator[OpenTelemetryHook]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield OpenTelemetryHook(provider)
    provider.shutdown()


def enqueuing(i: int = 0, **meta: Any) -> Enqueuing:
    return Enqueuing(f"j{i}", "q", "t", None, None, 5, 0.0, dict(meta))


def job(meta: dict[str, Any], attempt: int = 1) -> Job:
    return Job("j0", "q", "t", {"secret": "s3cr3t"}, 5, JobState.ACTIVE, attempt=attempt,
               meta=meta)  # fmt: skip


async def attempt(hook: OpenTelemetryHook, j: Job, exc: BaseException) -> None:
    async def call_next() -> Any:
        raise exc

    ctx = Context(j, None, asyncio.get_running_loop())  # type: ignore[arg-type]
    with pytest.raises(type(exc)) as raised:
        await hook.around_execute(ctx, call_next)
    assert raised.value is exc  # the handler's own exception goes on, untouched


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def test_a_traceparent_the_producer_set_is_left_as_it_is(
    hook: OpenTelemetryHook, exporter: InMemorySpanExporter
) -> None:
    # Given a job whose producer stored its own creation context
    mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    item = enqueuing(traceparent=mine, order="o-1")
    # When the hook sees it
    hook.before_enqueue([item])
    # Then the send span exists but the meta is unchanged
    assert item.meta == {"traceparent": mine, "order": "o-1"}
    assert only(exporter).kind is SpanKind.PRODUCER


def test_enqueue_many_of_one_job_is_a_plain_send(
    hook: OpenTelemetryHook, exporter: InMemorySpanExporter
) -> None:
    items = [enqueuing()]
    hook.before_enqueue(items)
    span = only(exporter)
    assert span.name == "send q" and "messaging.batch.message_count" not in (span.attributes or {})
    assert items[0].meta["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


def test_a_batch_over_two_queues_has_no_destination(
    hook: OpenTelemetryHook, exporter: InMemorySpanExporter
) -> None:
    items = [enqueuing(0), Enqueuing("j1", "other", "t", None, None, 5, 0.0, {})]
    hook.before_enqueue(items)
    (send,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert send.name == "send" and "messaging.destination.name" not in (send.attributes or {})
    assert len(send.links) == 2


async def test_an_exception_whose_str_raises_still_gives_a_bounded_error_span(
    hook: OpenTelemetryHook, exporter: InMemorySpanExporter
) -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    await attempt(hook, job({}), Weird())
    span = only(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"].endswith("Weird")
    (event,) = span.events
    assert (event.attributes or {})["exception.message"] == "<Weird whose str() raises>"


async def test_a_huge_message_is_truncated_and_the_payload_is_not_on_the_span(
    hook: OpenTelemetryHook, exporter: InMemorySpanExporter
) -> None:
    await attempt(hook, job({}), ValueError("x" * 1_000_000))
    span = only(exporter)
    (event,) = span.events
    attributes = event.attributes or {}
    assert len(str(attributes["exception.message"])) < 4200
    assert len(str(attributes["exception.stacktrace"])) < 4200
    assert "s3cr3t" not in repr(span.to_json())


async def test_a_cancelled_attempt_is_an_error_without_an_exception_event(
    hook: OpenTelemetryHook, exporter: InMemorySpanExporter
) -> None:
    await attempt(hook, job({}), asyncio.CancelledError())
    span = only(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "cancelled" and not span.events


async def test_a_malformed_traceparent_gives_a_root_span_without_links(
    hook: OpenTelemetryHook, exporter: InMemorySpanExporter
) -> None:
    await attempt(hook, job({"traceparent": "not-a-traceparent"}), KeyError("k"))
    span = only(exporter)
    assert span.parent is None and not span.links


async def test_a_traceparent_that_is_not_a_string_gives_a_root_span(
    hook: OpenTelemetryHook, exporter: InMemorySpanExporter
) -> None:
    await attempt(hook, job({"traceparent": 5, "baggage": ["x"]}), KeyError("k"))
    span = only(exporter)
    assert span.parent is None and not span.links


def test_error_type_is_the_qualified_class_name() -> None:
    assert error_type(ValueError()) == "ValueError"
    assert error_type(ConfigurationError("x")) == "conveyor.errors.ConfigurationError"


def test_without_opentelemetry_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an interpreter where OpenTelemetry cannot be imported
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    # When the hook is made, then a ConfigurationError names the extra to install
    with pytest.raises(ConfigurationError, match=r"pip install 'conveyor\[otel\]'"):
        OpenTelemetryHook()


def test_conveyor_imports_without_opentelemetry() -> None:
    # Given a fresh interpreter where OpenTelemetry cannot be imported, then conveyor and
    # conveyor.otel import, and only making the hook fails, naming the extra
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import conveyor, conveyor.otel\n"
        "try:\n    conveyor.otel.OpenTelemetryHook()\n"
        "except conveyor.ConfigurationError as e:\n    print(e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=subprocess_env(), timeout=60, check=True)  # fmt: skip
    assert "pip install 'conveyor[otel]'" in res.stdout, res.stderr
