"""Turning an `Outcome` into what a backend stores: total, so one bad outcome cannot fail others.

Both backends store a result and an error as JSON text and put a brief of the error in the
``failed``/``retrying`` event. Handlers can put anything in an exception (bytes, sets, objects
whose ``__str__`` raises) and the worker guards against most of it, but a backend must never
let one outcome's encoding error abort the acknowledgement of a whole batch: here such an
outcome becomes a failed attempt whose error says what could not be stored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import BackendUnavailable
from .base import Outcome, OutcomeKind

log = logging.getLogger("conveyor.backend")

MAX_MESSAGE = 1000
_OPTS = orjson.OPT_NON_STR_KEYS


@dataclass(slots=True)
class Encoded:
    """An outcome ready to store. ``kind`` may differ from the outcome's: a result that JSON
    cannot hold turns a completion into a failure."""

    job_id: str
    token: int
    kind: OutcomeKind
    result: str | None  # JSON, completed only
    error: str | None  # JSON, failed / retry
    brief: dict[str, Any]  # the event's {"error": {type, message}} (+ retry_in), no attempt
    retry_in: float
    # AWAIT: the prompt and the timeout data as JSON, the policy, the timeout (None: none).
    prompt: str | None = None
    on_timeout: str | None = None
    await_data: str | None = None
    timeout: float | None = None


def _safe_repr(value: object) -> str:
    try:
        return repr(value)[:MAX_MESSAGE]
    except Exception:  # a __repr__ that raises
        return f"<unrepresentable {type(value).__name__}>"


def json_safe(value: Any) -> str:
    """JSON text for ``value``; what JSON cannot hold is stored as its ``repr``. Never raises."""
    try:
        return orjson.dumps(value, default=_safe_repr, option=_OPTS).decode()
    except Exception:  # cycles, huge ints, keys orjson refuses
        return orjson.dumps(_safe_repr(value)).decode()


def _error_json(error: dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    if not error:
        return None, {"type": None, "message": None}
    text = json_safe(error)
    stored = orjson.loads(text)
    if not isinstance(stored, dict):
        stored = {"type": "Error", "message": str(stored)[:MAX_MESSAGE]}
        text = orjson.dumps(stored).decode()
    brief = {"type": stored.get("type"), "message": stored.get("message")}
    return text, brief


def encode(o: Outcome) -> Encoded:
    """Encode one outcome for storage. Never raises."""
    kind = o.kind
    if kind is OutcomeKind.AWAIT:
        return _encode_await(o)
    if kind is OutcomeKind.COMPLETED:
        if o.result is None:
            return Encoded(o.job_id, o.token, kind, None, None, {}, 0.0)
        try:
            return Encoded(o.job_id, o.token, kind, orjson.dumps(o.result).decode(), None, {}, 0.0)
        except Exception as exc:
            error = {"type": "ResultNotSerializable",
                     "message": f"the handler returned a value JSON cannot hold: {exc}"[:MAX_MESSAGE]}  # fmt: skip
            text = orjson.dumps(error).decode()
            return Encoded(o.job_id, o.token, OutcomeKind.FAILED, None, text, {"error": error}, 0.0)
    text, err = _error_json(o.error)
    brief: dict[str, Any] = {"error": err}
    retry_in = 0.0
    if kind is OutcomeKind.RETRY:
        try:
            retry_in = max(0.0, float(o.retry_in))
        except (TypeError, ValueError):
            retry_in = 0.0
        brief["retry_in"] = retry_in
    return Encoded(o.job_id, o.token, kind, None, text, brief, retry_in)


def _encode_await(o: Outcome) -> Encoded:
    w = o.wait
    try:
        if w is None:
            raise ValueError("an await outcome without its AwaitInput")
        prompt = orjson.dumps(w.prompt).decode()
        data = None if w.data is None else orjson.dumps(w.data).decode()
        return Encoded(o.job_id, o.token, OutcomeKind.AWAIT, None, None, {}, 0.0, prompt,
                       w.on_timeout, data, w.seconds)  # fmt: skip
    except Exception as exc:  # AwaitInput validated it: only a hand-made outcome gets here
        error = {"type": "AwaitNotStored",
                 "message": f"the handler's AwaitInput could not be stored: {exc}"[:MAX_MESSAGE]}  # fmt: skip
        text = orjson.dumps(error).decode()
        return Encoded(o.job_id, o.token, OutcomeKind.FAILED, None, text, {"error": error}, 0.0)


async def finish_each(
    finish: Callable[[Sequence[Outcome]], Awaitable[list[str]]], outcomes: Sequence[Outcome]
) -> list[str]:
    """Apply outcomes one at a time, after applying them together failed: one that fails alone
    is replaced by a plain failure that says why, so it cannot hold the others back. One that
    cannot even be failed is reported lost: its lease expires and recovery runs it again.

    Safe to repeat: outcomes that were applied already no longer match their claim token and
    are ignored. `BackendUnavailable` propagates (the caller sends the outcomes again later).
    """
    lost: list[str] = []
    for o in outcomes:
        try:
            lost += await finish([o])
            continue
        except BackendUnavailable:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
        log.error("outcome of job %s could not be stored (%s); failing the attempt", o.job_id,
                  reason[:200])  # fmt: skip
        error = {"type": "OutcomeNotStored",
                 "message": f"the attempt's outcome could not be stored: {reason}"[:MAX_MESSAGE]}  # fmt: skip
        try:
            lost += await finish([Outcome(o.job_id, o.token, OutcomeKind.FAILED, error=error)])
        except BackendUnavailable:
            raise
        except Exception:
            log.exception("job %s: even a plain failure could not be stored; its lease will "
                          "expire and recovery will run it again", o.job_id)  # fmt: skip
            lost.append(o.job_id)
    return lost


__all__ = ["Encoded", "encode", "finish_each", "json_safe"]
