"""OpenTelemetry tracing for conveyor, as a hook (``pip install 'conveyor[otel]'``).

``Conveyor(url, hooks=[OpenTelemetryHook()])`` traces jobs after the messaging semantic
conventions (https://opentelemetry.io/docs/specs/semconv/messaging/messaging-spans/):

- **Producer.** ``enqueue`` makes one PRODUCER span ``send {queue}``; its context goes into the
  job's ``meta`` through the global propagator (W3C ``traceparent`` by default), so it is the
  job's *creation context*. ``enqueue_many`` of several jobs follows the conventions' batch
  guidance: one PRODUCER span ``create {queue}`` per job (its creation context, injected into
  that job's ``meta``) and one CLIENT span ``send [{queue}]`` for the call, with
  ``messaging.batch.message_count`` and a link to each ``create`` span. A ``traceparent`` the
  producer put in ``meta`` itself is its own creation context: it is left as it is.
- **Consumer.** Each attempt is a CONSUMER span ``process {queue}`` around the handler, current
  while it runs (the handler's own spans are its children, in the thread pool too). The first
  attempt is a child of the job's creation context and carries a link to it; later attempts
  (retries after a backoff that may last hours) start a trace of their own and carry only the
  link, so that a trace does not span days. A failed attempt records the exception, sets
  ``error.type`` (the exception's qualified class name) and the span status to ERROR.

Limits: the hooks protocol has no hook after the backend call of an enqueue, so producer spans
mark the moment of sending and end before the call (their duration is not its latency, and an
enqueue the backend refuses is not marked failed on them). An attempt that returns a value the
backend cannot store fails after its span ended OK. Attributes carry ids, queue and task names,
never the payload, the result or the tenant.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import ConfigurationError
from .hooks import Hooks
from .logs import MAX_EXCEPTION, MAX_MESSAGE, truncate

if TYPE_CHECKING:
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, TracerProvider

    from .hooks import Enqueuing
    from .worker.context import Context

SYSTEM = "conveyor"
EXTRA = "pip install 'conveyor[otel]'"


def _api() -> Any:
    """The OpenTelemetry API modules, or a `ConfigurationError` naming the extra to install."""
    try:
        from opentelemetry import context, propagate, trace
    except ImportError as exc:
        raise ConfigurationError(
            f"OpenTelemetryHook needs the OpenTelemetry API: {EXTRA} ({exc})"
        ) from None
    return context, propagate, trace


def _text(exc: BaseException) -> str:
    """The exception's message, bounded; its ``str()`` may raise."""
    try:
        return truncate(str(exc), MAX_MESSAGE)
    except Exception:
        return f"<{type(exc).__name__} whose str() raises>"


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its fully qualified class name (``builtins`` left out)."""
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


class OpenTelemetryHook(Hooks):
    """Traces enqueues and attempts (see the module's docstring for the spans and their links).

    Args:
        tracer_provider: where spans go; the global provider (``trace.set_tracer_provider``)
            when None.
        propagator: how the creation context is written into and read from ``meta``; the
            global propagator (``propagate.set_global_textmap``, W3C trace context and baggage
            by default) when None, looked up at each use.

    Raises:
        ConfigurationError: OpenTelemetry is not installed (the ``otel`` extra).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        context, propagate, trace = _api()
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        self._context, self._propagate, self._trace = context, propagate, trace
        self._Link, self._Status, self._ERROR = Link, Status, StatusCode.ERROR
        self._PRODUCER, self._CONSUMER, self._CLIENT = (
            SpanKind.PRODUCER,
            SpanKind.CONSUMER,
            SpanKind.CLIENT,
        )
        self._tracer = trace.get_tracer("conveyor", __version__, tracer_provider=tracer_provider)
        self._propagator = propagator

    # -- producer ------------------------------------------------------------------------------

    def _inject(self, span: Span, meta: dict[str, Any]) -> None:
        if "traceparent" in meta:  # the producer's own creation context: not ours to replace
            return
        ctx = self._trace.set_span_in_context(span)
        if self._propagator is not None:
            self._propagator.inject(meta, context=ctx)
        else:
            self._propagate.inject(meta, context=ctx)

    def before_enqueue(self, jobs: Sequence[Enqueuing]) -> None:
        """One ``send`` span for one job; ``create`` spans and a ``send`` span for a batch."""
        if not jobs:
            return
        tracer = self._tracer
        if len(jobs) == 1:
            job = jobs[0]
            span = tracer.start_span(
                f"send {job.queue}", kind=self._PRODUCER, attributes=_message(job, "send")
            )
            self._inject(span, job.meta)
            span.end()
            return
        links = []
        queues = set()
        for job in jobs:
            span = tracer.start_span(
                f"create {job.queue}", kind=self._PRODUCER, attributes=_message(job, "create")
            )
            self._inject(span, job.meta)
            span.end()
            links.append(self._Link(span.get_span_context()))
            queues.add(job.queue)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.batch.message_count": len(jobs),
        }
        name = "send"
        if len(queues) == 1:  # a batch over several queues has no one destination
            name = f"send {jobs[0].queue}"
            attributes["messaging.destination.name"] = jobs[0].queue
        tracer.start_span(name, kind=self._CLIENT, links=links, attributes=attributes).end()

    # -- consumer ------------------------------------------------------------------------------

    def _creation(self, meta: dict[str, Any]) -> OtelContext | None:
        """The creation context stored in a job's ``meta``, or None."""
        if not meta:
            return None
        try:
            if self._propagator is not None:
                ctx = self._propagator.extract(meta)
            else:
                ctx = self._propagate.extract(meta)
        except Exception:  # e.g. a producer's {"traceparent": 5}: the propagators expect strings
            return None
        if not self._trace.get_current_span(ctx).get_span_context().is_valid:
            return None
        return ctx

    async def around_execute(self, ctx: Context, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """A CONSUMER span ``process {queue}`` around one attempt: a child of the creation
        context on the first attempt, a new trace with only a link to it on later ones."""
        job = ctx.job
        creation = self._creation(job.meta)
        links = []
        parent: OtelContext = self._context.Context()  # a root span, whatever is current
        if creation is not None:
            links.append(self._Link(self._trace.get_current_span(creation).get_span_context()))
            if job.attempt <= 1:
                parent = creation
        span = self._tracer.start_span(
            f"process {job.queue}",
            context=parent,
            kind=self._CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": job.id,
                "conveyor.job.task": job.task,
                "conveyor.job.attempt": job.attempt,
            },
            record_exception=False,
            set_status_on_exception=False,
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            return await call_next()
        except BaseException as exc:
            self._failed(span, exc)
            raise
        finally:
            self._context.detach(token)
            span.end()

    def _failed(self, span: Span, exc: BaseException) -> None:
        """Record how an attempt failed. Total: an exception whose ``str()`` raises or whose
        message is 10 MB still gives a bounded event, and the handler's exception propagates."""
        if isinstance(exc, asyncio.CancelledError):  # cancelled, lost or handed back at a stop
            span.set_attribute("error.type", "cancelled")
            span.set_status(self._Status(self._ERROR, "cancelled"))
            return
        kind = error_type(exc)
        try:
            stack = "".join(traceback.format_exception(exc))
        except Exception:
            stack = "<the traceback could not be formatted>"
        span.add_event("exception", {
            "exception.type": kind,
            "exception.message": _text(exc),
            "exception.stacktrace": truncate(stack, MAX_EXCEPTION),
        })  # fmt: skip
        span.set_attribute("error.type", kind)
        span.set_status(self._Status(self._ERROR, kind))


def _message(job: Enqueuing, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": job.queue,
        "messaging.message.id": job.id,
        "conveyor.job.task": job.task,
    }
