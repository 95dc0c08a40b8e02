"""Job ``meta``: a small JSON object carried with a job for cross-cutting context (a W3C
``traceparent``, a request id), set by producers (``enqueue(..., meta={...})``) and by hooks in
`Hooks.before_enqueue`. Never the payload: handlers do not receive it as arguments; it is stored
and returned on `Job.meta`. Validated like a payload: exact JSON, string keys, bounded size."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import ValidationError
from .inputs import brief, json_problem

MAX_META_BYTES = 16 * 1024
"""A job's meta, as JSON: trace context and ids, not data (the payload is for data)."""
MAX_META_DEPTH = 8


def encoded_meta(meta: Any, field: str = "meta") -> str | None:
    """``meta`` checked and encoded as stored (None for no meta or ``{}``). Raises
    `ValidationError` naming the field for anything but a small JSON object."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise ValidationError(
            f"{field} must be a JSON object (a dict), got {type(meta).__name__}", field=field
        )
    if not meta:
        return None
    for key in meta:
        if type(key) is not str:
            raise ValidationError(f"{field} keys must be strings, got {brief(key)}", field=field)
    problem = json_problem(meta, field, MAX_META_DEPTH)
    if problem is not None:
        raise problem
    text = orjson.dumps(meta).decode()
    if len(text) > MAX_META_BYTES:
        raise ValidationError(
            f"{field} is {len(text):,} bytes as JSON; the limit is {MAX_META_BYTES:,}",
            field=field,
        )
    return text


def decoded_meta(text: str | bytes | None) -> dict[str, Any]:
    """The stored form back as a dict (``{}`` when none)."""
    if not text:
        return {}
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {}
