"""Tasks: a handler plus its options, and validation of payloads against its signature."""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic

from .chains import check_step
from .errors import ConfigurationError, ValidationError
from .inputs import brief, field_path
from .job import parse_priority
from .limits import (
    CircuitBreaker,
    Concurrency,
    FlowRules,
    RateLimit,
    as_breaker,
    as_concurrency,
    as_rate_limits,
)
from .options import QUEUE_NAME, QUEUE_NAME_RULE
from .retry import Backoff

if TYPE_CHECKING:
    from .app import Conveyor
    from .batch import Batch
    from .job import Job

# Annotations whose JSON form is already the value the handler expects: no re-validation needed
# when the worker calls the handler (the fast path).
_JSON_NATIVE: set[Any] = {str, int, float, bool, dict, list, Any, object, inspect.Parameter.empty,
                          type(None)}  # fmt: skip
_CTX_NAMES = ("ctx", "context")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Per-task defaults; `enqueue` may override priority and attempts per job."""

    queue: str = "default"
    priority: int = 5
    retries: int = 3  # max_attempts = retries + 1
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None  # seconds per attempt; None = no limit
    lease: float = 30.0  # seconds; renewed by heartbeat while the job runs
    max_stalls: int = 3
    rate_limit: tuple[RateLimit, ...] = ()
    concurrency: tuple[Concurrency, ...] = ()
    breaker: CircuitBreaker | None = None
    step: str | None = None  # chains: the step label of its jobs (None: the task's name)
    steps: int | None = None  # chains: the number of steps of the workflow it starts

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not QUEUE_NAME.fullmatch(self.queue):
            raise ConfigurationError(f"queue name {self.queue!r} is invalid: use {QUEUE_NAME_RULE}")
        if self.retries < 0:
            raise ConfigurationError(f"retries must be >= 0, got {self.retries}")
        # Finite only: nan passes every comparison, and inf is not "no limit" (None is).
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigurationError(
                f"timeout must be a finite number of seconds > 0 (None for no limit), "
                f"got {self.timeout}"
            )
        if not (math.isfinite(self.lease) and self.lease >= 0.5):
            raise ConfigurationError(
                f"lease must be a finite number of seconds >= 0.5, got {self.lease}"
            )
        if self.max_stalls < 0:
            raise ConfigurationError(f"max_stalls must be >= 0, got {self.max_stalls}")
        check_step(self.step, self.steps, ConfigurationError)

    @property
    def max_attempts(self) -> int:
        return self.retries + 1


class PayloadSpec:
    """Validates a payload against a handler's parameters (pydantic), at enqueue time.

    Parameters become fields; a handler whose only parameter is a pydantic model takes the
    payload as that model's fields. Unknown fields are rejected.
    """

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # unresolvable forward references: fall back to raw annotations
            hints = {}
        params = list(sig.parameters.values())
        self.wants_ctx = False
        if params and (params[0].name in _CTX_NAMES or _is_context(hints.get(params[0].name))):
            self.wants_ctx = True
            params = params[1:]
        fields: dict[str, Any] = {}
        self.native = True
        self.model_param: str | None = None
        json_fields: set[str] = set()  # fields whose value is stored and handed over as given
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise ConfigurationError(
                    f"task {name!r}: parameter {p.name!r} must be a plain keyword parameter "
                    "(no *args, **kwargs or positional-only)"
                )
            ann = hints.get(p.name, p.annotation)
            ann = Any if ann is inspect.Parameter.empty else ann
            if ann not in _JSON_NATIVE:
                self.native = False
            if _json_shaped(ann):
                json_fields.add(p.name)
            fields[p.name] = (ann, ... if p.default is p.empty else p.default)
        self.model_type: type[pydantic.BaseModel] | None = None
        if len(params) == 1 and _is_model(fields[params[0].name][0]):
            self.model_param = params[0].name
            self.model_type = fields[params[0].name][0]
            self.native = False
            json_fields = set()
        # Which raw values must be JSON already (`conveyor.inputs.check_payload_input`): all of
        # them for a JSON-typed signature; a field of a declared type (datetime, a model) may
        # take what that type accepts and is stored in its JSON form.
        self.json_fields: bool | frozenset[str] = True if self.native else frozenset(json_fields)
        self.field_names = list(fields)
        self.model: type[pydantic.BaseModel] | None = None
        if self.model_type is None and fields:
            self.model = pydantic.create_model(  # type: ignore[call-overload]
                f"{name}_payload", __config__=pydantic.ConfigDict(extra="forbid"), **fields
            )
        self._name = name

    def validate(self, payload: Any) -> dict[str, Any]:
        """Return the payload in its stored (JSON) form; raise ValidationError naming the field."""
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ValidationError(
                f"payload of task {self._name!r} must be a JSON object (dict), "
                f"got {type(payload).__name__}",
                field="payload",
            )
        if self.model_type is not None:
            unknown = [k for k in payload if k not in self.model_type.model_fields]
            if unknown:  # even when the model itself would ignore extras
                raise ValidationError(
                    f"task {self._name!r}: unknown field 'payload.{unknown[0]}'",
                    field=f"payload.{unknown[0]}",
                )
            try:
                return _dump(self._name, self.model_type.model_validate(payload), False)
            except pydantic.ValidationError as exc:
                raise _to_error(self._name, exc) from None
        if self.model is None:
            if payload:
                first = next(iter(payload))
                raise ValidationError(
                    f"task {self._name!r} takes no arguments, got {len(payload)} "
                    f"(first: {brief(first)})",
                    field=field_path("payload", [first]),
                )
            return payload
        if self.native and _fast_ok(payload, self.field_names):
            # Still validate types, but keep the caller's dict when nothing needed coercion.
            try:
                self.model.model_validate(payload, strict=True)
                return payload
            except pydantic.ValidationError:
                pass
        try:
            return _dump(self._name, self.model.model_validate(payload), True)
        except pydantic.ValidationError as exc:
            raise _to_error(self._name, exc) from None

    def json_schema(self) -> dict[str, Any] | None:
        """The payload's JSON Schema, as far as JSON Schema can say what `validate` accepts
        (None when pydantic cannot express a parameter's type)."""
        try:
            if self.model_type is not None:
                schema = self.model_type.model_json_schema()
                schema["additionalProperties"] = False  # validate() refuses unknown fields
                return schema
            if self.model is not None:
                return self.model.model_json_schema()
        except Exception:  # e.g. PydanticInvalidForJsonSchema for arbitrary types
            return None
        return {"type": "object", "properties": {}, "additionalProperties": False}

    def to_kwargs(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Turn a stored payload into the handler's keyword arguments (worker side)."""
        if self.native:
            return payload
        if self.model_type is not None:
            assert self.model_param is not None
            return {self.model_param: self.model_type.model_validate(payload)}
        assert self.model is not None
        validated = self.model.model_validate(payload)
        return {name: getattr(validated, name) for name in self.field_names}


class AnyPayload:
    """The payload rule of a task defined elsewhere: any JSON object."""

    wants_ctx = True
    native = True
    json_fields: bool | frozenset[str] = True

    def __init__(self, name: str) -> None:
        self._name = name

    def validate(self, payload: Any) -> dict[str, Any]:
        if payload is None:
            return {}
        if not isinstance(payload, dict):
            raise ValidationError(
                f"payload of task {self._name!r} must be a JSON object, got "
                f"{type(payload).__name__}",
                field="payload",
            )
        return payload

    def json_schema(self) -> dict[str, Any] | None:
        return {"type": "object"}

    def to_kwargs(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"payload": payload}


def _json_shaped(ann: Any) -> bool:
    """Whether a parameter's type takes JSON values only (``str``, ``list[int]``, ``dict[str,
    Any] | None``, a ``Literal`` of strings...): then a raw value is refused unless it is JSON,
    rather than converted (a tuple to a list, bytes to text)."""
    if ann in _JSON_NATIVE:
        return True
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _json_shaped(args[0])
    if origin in (list, dict, typing.Union, types.UnionType):
        return all(_json_shaped(a) for a in args)
    if origin is typing.Literal:
        return all(type(a) in (str, int, bool, type(None)) for a in args)
    return False


def _fast_ok(payload: dict[str, Any], names: list[str]) -> bool:
    return all(k in names for k in payload)


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, pydantic.BaseModel)


def _is_context(ann: Any) -> bool:
    from .worker.context import Context

    return ann is Context


def _dump(task: str, model: pydantic.BaseModel, exclude_unset: bool) -> dict[str, Any]:
    """The model's JSON form; a value pydantic cannot serialize (an ``object()`` in a field of
    a type it does not know) is a `ValidationError`, not pydantic's own error."""
    try:
        return model.model_dump(mode="json", exclude_unset=exclude_unset)
    except pydantic.PydanticSerializationError as exc:
        raise ValidationError(
            f"task {task!r}: payload has a value that cannot be stored as JSON: {brief(str(exc))}",
            field="payload",
        ) from None


def _to_error(task: str, exc: pydantic.ValidationError) -> ValidationError:
    err = exc.errors(include_url=False, include_input=False)[0]
    field_name = field_path("payload", err.get("loc", ()))
    kind = err.get("type")
    if kind == "missing":
        msg = f"missing required field {field_name!r}"
    elif kind == "extra_forbidden":
        msg = f"unknown field {field_name!r}"
    else:
        msg = f"invalid {field_name!r}: {str(err.get('msg'))[:200]}"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return ValidationError(f"task {task!r}: {msg}{suffix}", field=field_name)


class Task:
    """A registered handler. Call ``await task.enqueue(**kwargs)`` to queue a job for it."""

    def __init__(
        self, app: Conveyor, fn: Callable[..., Any], name: str, options: TaskOptions
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.spec = PayloadSpec(fn, name)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.declared = False  # only declared here (`Conveyor.declare`): runs elsewhere
        self._rules: FlowRules | None = None
        self._schema: tuple[dict[str, Any] | None] | None = None
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)

    @property
    def rules(self) -> FlowRules:
        """The flow control of this task's jobs: its limits, its queue's, its breaker."""
        if self._rules is None:
            o = self.options
            self._rules = FlowRules(
                self.name,
                (*o.rate_limit, *o.concurrency),
                self.app.queue_limits(o.queue),
                o.breaker,
            )
        return self._rules

    @property
    def payload_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of this task's payload (None: not expressible), worked out once."""
        if self._schema is None:
            self._schema = (self.spec.json_schema(),)
        return self._schema[0]

    def _forget_rules(self) -> None:
        self._rules = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the handler directly (not as a job), e.g. in unit tests."""
        return self.fn(*args, **kwargs)

    async def enqueue(self, **kwargs: Any) -> Job:
        """Enqueue a job for this task with ``kwargs`` as its payload and default options."""
        return await self.app.enqueue(self.name, kwargs)

    async def enqueue_with(self, payload: dict[str, Any] | None = None, **options: Any) -> Job:
        """Enqueue with per-job options (priority, delay, idempotency_key, tenant, ...)."""
        return await self.app.enqueue(self.name, payload, **options)

    async def enqueue_many(self, payloads: list[dict[str, Any]], **options: Any) -> Batch:
        return await self.app.enqueue_many([(self.name, p) for p in payloads], **options)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue}>"


def make_options(
    *,
    queue: str = "default",
    priority: int | str | None = None,
    retries: int = 3,
    backoff: Backoff | None = None,
    backoff_initial: float | None = None,
    backoff_factor: float | None = None,
    backoff_max: float | None = None,
    backoff_jitter: float | None = None,
    timeout: float | None = None,
    lease: float = 30.0,
    max_stalls: int = 3,
    rate_limit: str | RateLimit | list[RateLimit] | None = None,
    concurrency: int | Concurrency | list[Concurrency] | None = None,
    breaker: bool | CircuitBreaker | None = None,
    step: str | None = None,
    steps: int | None = None,
) -> TaskOptions:
    """Build TaskOptions from @app.task keyword arguments, naming the bad one on error."""
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise ConfigurationError(f"retries must be an integer, got {retries!r}")
    try:
        prio = parse_priority(priority)
    except ValidationError as exc:
        raise ConfigurationError(str(exc)) from None
    if backoff is not None and not isinstance(backoff, Backoff):
        raise ConfigurationError(
            f"backoff must be a Backoff(initial=, factor=, max=, jitter=), got {backoff!r}; "
            "for a number use backoff_initial="
        )
    b = backoff or Backoff()
    if any(v is not None for v in (backoff_initial, backoff_factor, backoff_max, backoff_jitter)):
        b = Backoff(
            initial=b.initial if backoff_initial is None else backoff_initial,
            factor=b.factor if backoff_factor is None else backoff_factor,
            max=b.max if backoff_max is None else backoff_max,
            jitter=b.jitter if backoff_jitter is None else backoff_jitter,
        )
    return TaskOptions(
        queue, prio, retries, b, timeout, lease, max_stalls,
        as_rate_limits(rate_limit, "task"), as_concurrency(concurrency, "task"), as_breaker(breaker),
        step, steps,
    )  # fmt: skip
