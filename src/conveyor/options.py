"""Per-job options and the strings storage keeps as columns or Redis fields: checked once.

Tenants and idempotency keys, priorities, delays and attempt counts given to ``enqueue`` /
``enqueue_many``, names at registration, and ids and filters given to reads: each bad value
raises `ValidationError` (`ConfigurationError` at registration) naming it, with a message of
bounded length (`conveyor.inputs.brief`). The payload's own checks are in `conveyor.inputs`.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ValidationError
from .inputs import bad_text, brief, kind_of, surrogate_in
from .job import parse_delay, parse_priority

#: Tenants and idempotency keys: at most this many characters.
MAX_KEY_LEN = 512
#: Options of an attempt count and the like: exact in every backend (Lua numbers are doubles).
MAX_OPTION_INT = 2**31 - 1
#: Queue names end up in Redis keys ({queue} hash tags) and URLs: no braces, spaces or slashes.
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
QUEUE_NAME_RULE = "1-100 characters from letters, digits, '_', '-', '.', ':'"


def check_key(value: Any, field: str) -> None:
    """A tenant or idempotency key: a non-empty string of at most `MAX_KEY_LEN` characters
    that storage keeps exactly (no lone surrogate, no NUL)."""
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LEN:
        got = f"a string of {len(value):,} characters" if isinstance(value, str) else kind_of(value)
        raise ValidationError(
            f"{field} must be a non-empty string of at most {MAX_KEY_LEN} characters, got {got}",
            field=field,
        )
    why = bad_text(value)
    if why is not None:
        raise ValidationError(f"{field} {brief(value)} contains {why}", field=field)


def check_queue_name(value: Any, field: str = "queue") -> str:
    """A queue name given to a producer call (pause, resume): `QUEUE_NAME`, as at registration;
    returns it, or raises `ValidationError` naming the problem."""
    if not isinstance(value, str) or not QUEUE_NAME.fullmatch(value):
        got = brief(value) if isinstance(value, str) else kind_of(value)
        raise ValidationError(f"queue name {got} is invalid: use {QUEUE_NAME_RULE}", field=field)
    return value


def check_lookups(**values: Any) -> None:
    """Job ids, batch ids, tenants or names given to a read or a steering call (None: not
    given): strings storage can be asked about (a lone surrogate would fail in the driver)."""
    for field, value in values.items():
        if value is None or (type(value) is str and value.isascii()):
            continue
        if not isinstance(value, str):
            raise ValidationError(f"{field} must be a string, got {kind_of(value)}", field=field)
        why = surrogate_in(value)
        if why is not None:
            raise ValidationError(f"{field} {brief(value)} contains {why}", field=field)


def check_options(
    priority: Any, delay: Any, idempotency_key: Any, tenant: Any, max_attempts: Any, now: float
) -> tuple[int | None, float]:
    """Validate per-job options; returns (priority or None for the task's, delay seconds)."""
    prio = None if priority is None else parse_priority(priority)
    due = parse_delay(delay, now)
    if max_attempts is not None:
        check_max_attempts(max_attempts)
    if idempotency_key is not None:
        check_key(idempotency_key, "idempotency_key")
    if tenant is not None:
        check_key(tenant, "tenant")
    return prio, 0.0 if due is None else due - now


def check_max_attempts(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OPTION_INT:
        raise ValidationError(
            f"max_attempts must be an integer from 1 to {MAX_OPTION_INT:,}, got {brief(value)}",
            field="max_attempts",
        )


def text_problem(value: Any) -> str | None:
    """Why ``value`` is not a string storage keeps exactly, or None (task names at registration)."""
    if not isinstance(value, str) or not value:
        return "it must be a non-empty string"
    why = bad_text(value)
    return None if why is None else f"it contains {why}"


__all__ = [
    "MAX_KEY_LEN",
    "MAX_OPTION_INT",
    "QUEUE_NAME",
    "QUEUE_NAME_RULE",
    "check_key",
    "check_lookups",
    "check_max_attempts",
    "check_options",
    "check_queue_name",
    "text_problem",
]
