"""``BENCH_OTEL=1``: the bench app traced by `conveyor.otel.OpenTelemetryHook` into the SDK's
batch span processor and an exporter that drops the spans (the cost of tracing in the worker and
the producer, without a collector's network round trips)."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from conveyor.otel import OpenTelemetryHook


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def hook() -> OpenTelemetryHook:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Drop()))
    return OpenTelemetryHook(provider)
