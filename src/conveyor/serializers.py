"""JSON encoding of payloads, results and event data (orjson). Never pickle."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import ValidationError

loads = orjson.loads


def dumps(value: Any, *, field: str = "payload") -> str:
    """Encode to a JSON string; a value JSON cannot hold raises ValidationError naming ``field``."""
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise ValidationError(f"{field} is not JSON serializable: {exc}", field=field) from None


def dumps_or_none(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def loads_or_none(text: str | bytes | None) -> Any:
    return None if text is None else orjson.loads(text)
