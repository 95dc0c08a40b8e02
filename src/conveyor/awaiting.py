"""`AwaitInput`: what a handler returns to park its job until a human decides (``app.resume``).

The job becomes ``awaiting``: it holds no worker slot, no lease and no concurrency-gate slot
while it waits (a decision may take days). ``app.resume(job_id, data)`` moves it back to
``queued`` exactly once; the worker then runs the same task again with ``ctx.resumed`` True and
``ctx.input`` the decision. A deadline (``timeout``) lives in the backend, so a sweep that every
worker runs applies ``on_timeout`` even when no worker was up at the deadline. See
docs/architecture.md "Human in the loop".
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from datetime import timedelta
from typing import Any, Literal

import orjson

from .errors import ValidationError
from .inputs import brief, json_problem, positive_seconds

#: The largest prompt, and the largest decision (``resume`` data, or the ``data`` applied on a
#: timeout), as JSON text. A prompt is shown to people and stored on the job: a reference to a
#: large document (an upload, a URL) belongs in it, not the document.
MAX_INPUT_BYTES = 64 * 1024
#: The longest wait: the same bound as a delay (a larger number is a unit mistake).
MAX_AWAIT_SECONDS = 100 * 365.25 * 86400
ON_TIMEOUT = ("fail", "cancel", "resume")
OnTimeout = Literal["fail", "cancel", "resume"]


def input_json(value: Any, field: str) -> str:
    """``value`` as JSON text, refused with a `ValidationError` naming ``field`` when JSON cannot
    hold it as it is, or it is larger than `MAX_INPUT_BYTES`."""
    problem = json_problem(value, field)
    if problem is not None:
        raise problem
    text = orjson.dumps(value).decode()
    if len(text) > MAX_INPUT_BYTES:
        raise ValidationError(
            f"{field} is {len(text):,} bytes as JSON, more than {MAX_INPUT_BYTES:,}: store large "
            "documents elsewhere and pass a reference",
            field=field,
        )
    return text


def _seconds(timeout: object) -> float | None:
    if timeout is None:
        return None
    return positive_seconds(timeout, "timeout", "AwaitInput timeout", MAX_AWAIT_SECONDS,
                            "100 years")  # fmt: skip


@dataclass(frozen=True, slots=True)
class AwaitInput:
    """Returned by a handler: park the job until ``app.resume`` (or the timeout).

    Args:
        prompt: what the person deciding is shown (any JSON value, up to 64 KiB as JSON);
            stored on the job (`Job.prompt`), listed by ``conveyor jobs list`` and the HTTP API.
        timeout: seconds (or a timedelta) to wait for the decision; None waits for ever.
        on_timeout: what happens at the deadline: ``"fail"`` (the job fails with error type
            ``AwaitTimeout``), ``"cancel"``, or ``"resume"`` (the job resumes with ``data`` as
            the decision). Recorded in the event log with ``reason: "timeout"``.
        data: the decision ``on_timeout="resume"`` applies (JSON, up to 64 KiB).

    Raises `ValidationError` (a `ValueError`) naming the bad argument.
    """

    prompt: Any
    _: KW_ONLY
    timeout: float | timedelta | None = None
    on_timeout: OnTimeout = "fail"
    data: Any = None

    def __post_init__(self) -> None:
        input_json(self.prompt, "prompt")
        object.__setattr__(self, "timeout", _seconds(self.timeout))
        if self.on_timeout not in ON_TIMEOUT:
            raise ValidationError(
                f"AwaitInput on_timeout must be one of {', '.join(ON_TIMEOUT)}, got "
                f"{brief(self.on_timeout)}",
                field="on_timeout",
            )
        if self.data is not None and self.on_timeout != "resume":
            raise ValidationError(
                "AwaitInput data is the decision on_timeout='resume' applies: pass it only "
                "with on_timeout='resume'",
                field="data",
            )
        input_json(self.data, "data")

    @property
    def seconds(self) -> float | None:
        """The timeout in seconds (None: no deadline)."""
        t = self.timeout
        return t.total_seconds() if isinstance(t, timedelta) else t


__all__ = ["MAX_INPUT_BYTES", "ON_TIMEOUT", "AwaitInput", "OnTimeout", "input_json"]
