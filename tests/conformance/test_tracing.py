"""OpenTelemetry (`conveyor.otel`): producer and consumer spans after the messaging semantic
conventions, their parent and links across attempts, and failures, on every backend."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from conveyor import Context, Conveyor, Permanent
from conveyor.otel import OpenTelemetryHook
from tests.conftest import eventually, finished


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def ids(ctx: SpanContext | None) -> tuple[int, int] | None:
    """A span context as (trace id, span id): one read back from meta is remote, the original
    is not, and SpanContext's equality counts that."""
    return None if ctx is None else (ctx.trace_id, ctx.span_id)


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def test_first_attempt_is_a_child_of_the_send_span_and_a_retry_only_links_to_it(
    app: Conveyor, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    # Given an app traced into an in-memory exporter, and a handler that fails once
    provider, exporter = spans
    app.add_hook(OpenTelemetryHook(provider))
    tracer = provider.get_tracer("test")
    calls: Counter[str] = Counter()

    @app.task(queue="mail", retries=1, backoff_initial=0.01, backoff_jitter=0)
    async def send_mail(to: str) -> str:
        calls[to] += 1
        with tracer.start_as_current_span("smtp"):
            if calls[to] == 1:
                raise ConnectionError("smtp down")
        return "sent"

    # When a request enqueues it inside its own span, and a worker runs it twice
    with tracer.start_as_current_span("request") as request:
        job = await send_mail.enqueue(to="a@example.com")
    async with app.worker(concurrency=2):
        assert await app.wait(job.id, timeout=10) == "sent"
    # Then one PRODUCER span 'send mail', a child of the request, is in the job's meta
    (send,) = named(exporter, "send mail")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "conveyor",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "mail",
        "messaging.message.id": job.id,
        "conveyor.job.task": "send_mail",
    }
    stored = await app.get(job.id)
    assert stored.meta["traceparent"] == traceparent(send)
    # And one CONSUMER span 'process mail' per attempt, in order
    first, second = sorted(named(exporter, "process mail"), key=lambda s: s.start_time or 0)
    send_ctx = send.get_span_context()
    for span, attempt in ((first, 1), (second, 2)):
        assert span.kind is SpanKind.CONSUMER
        assert (
            dict(span.attributes or {}).items()
            >= {
                "messaging.system": "conveyor",
                "messaging.operation.type": "process",
                "messaging.destination.name": "mail",
                "messaging.message.id": job.id,
                "conveyor.job.task": "send_mail",
                "conveyor.job.attempt": attempt,
            }.items()
        )
        # each links to the send span
        assert [ids(link.context) for link in span.links] == [ids(send_ctx)]
    # And the first attempt is the send span's child, in its trace
    assert first.parent is not None and first.parent.span_id == send_ctx.span_id
    assert first.context.trace_id == send_ctx.trace_id
    # And the retry starts a trace of its own: no parent, only the link
    assert second.parent is None and second.context.trace_id != send_ctx.trace_id
    # And the failed attempt recorded the exception, error.type and an ERROR status
    assert first.status.status_code is StatusCode.ERROR
    assert (first.attributes or {})["error.type"] == "ConnectionError"
    (event,) = [e for e in first.events if e.name == "exception"]
    assert (event.attributes or {})["exception.type"] == "ConnectionError"
    assert (event.attributes or {})["exception.message"] == "smtp down"
    assert "Traceback" in str((event.attributes or {})["exception.stacktrace"])
    assert second.status.status_code is StatusCode.UNSET
    assert "error.type" not in (second.attributes or {})
    # And the handler's own spans are children of its attempt's span
    smtp = sorted(named(exporter, "smtp"), key=lambda s: s.start_time or 0)
    assert [s.parent.span_id for s in smtp if s.parent] == [
        first.context.span_id,
        second.context.span_id,
    ]


async def test_enqueue_many_creates_a_span_per_job_and_one_send_span_linking_them(
    app: Conveyor, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    # Given a traced app with a sync handler (it runs in the worker's thread pool)
    provider, exporter = spans
    app.add_hook(OpenTelemetryHook(provider))
    tracer = provider.get_tracer("test")

    @app.task(queue="thumbs")
    def thumbnail(ctx: Context, n: int) -> int:
        with tracer.start_as_current_span("resize"):
            return n

    # When three jobs are enqueued in one call and run
    batch = await app.enqueue_many([{"task": "thumbnail", "payload": {"n": i}} for i in range(3)])
    job_ids = batch.ids
    async with app.worker(concurrency=3):
        for job_id in job_ids:
            await app.wait(job_id, timeout=10)
    # Then each job has a PRODUCER 'create' span, its creation context, in its meta
    creates = {
        (s.attributes or {})["messaging.message.id"]: s for s in named(exporter, "create thumbs")
    }
    assert sorted(creates) == sorted(job_ids)
    assert all(s.kind is SpanKind.PRODUCER for s in creates.values())
    for job_id in job_ids:
        assert (await app.get(job_id)).meta["traceparent"] == traceparent(creates[job_id])
    # And one CLIENT 'send' span for the call links to every create span
    (send,) = named(exporter, "send thumbs")
    assert send.kind is SpanKind.CLIENT
    assert (send.attributes or {})["messaging.batch.message_count"] == 3
    assert {ids(link.context) for link in send.links} == {ids(s.context) for s in creates.values()}
    # And each job's process span is a child of its own create span, with a link to it
    for span in named(exporter, "process thumbs"):
        create = creates[str((span.attributes or {})["messaging.message.id"])]
        assert span.parent is not None and span.parent.span_id == create.context.span_id
        assert [ids(link.context) for link in span.links] == [ids(create.context)]
    # And the sync handler's span (in a pool thread) is a child of its attempt's span
    process_ids = {s.context.span_id for s in named(exporter, "process thumbs")}
    resize = named(exporter, "resize")
    assert len(resize) == 3 and {s.parent.span_id for s in resize if s.parent} == process_ids


async def test_a_permanent_failure_and_an_untraced_job(
    app: Conveyor, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    # Given a job enqueued before tracing was on, and a traced worker
    provider, exporter = spans

    @app.task(retries=3)
    async def refuse() -> None:
        raise Permanent("no such account")

    job = await refuse.enqueue()
    app.add_hook(OpenTelemetryHook(provider))
    # When it fails for good
    async with app.worker(concurrency=1):
        await eventually(lambda: finished(app, job.id), what="the job to fail")
    # Then its one process span is a root with no link, with error.type the qualified name
    (span,) = named(exporter, "process default")
    assert span.parent is None and not span.links
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "conveyor.errors.Permanent"
    assert span.kind is SpanKind.CONSUMER


async def test_a_sync_callers_span_is_the_parent_of_its_enqueue(
    app: Conveyor, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    # Given a traced app and sync code (a Flask view, say) inside a span of its own
    provider, exporter = spans
    app.add_hook(OpenTelemetryHook(provider))
    tracer = provider.get_tracer("test")

    @app.task()
    async def noop() -> None:
        return None

    def view() -> tuple[str, int]:
        with tracer.start_as_current_span("view") as span:
            return app.sync.enqueue("noop").id, span.get_span_context().span_id

    # When it enqueues through app.sync (the facade's own loop, in another thread)
    job_id, view_span = await asyncio.to_thread(view)
    # Then the send span is still a child of the caller's span
    (send,) = named(exporter, "send default")
    assert send.parent is not None and send.parent.span_id == view_span
    assert (await app.get(job_id)).meta["traceparent"] == traceparent(send)
