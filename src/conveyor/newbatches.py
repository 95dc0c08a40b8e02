"""The batch part of ``enqueue_many``: which batch the call's jobs join and the batch record it
creates or adds to (`NewBatch`), checked before anything is stored.

A call names callbacks (``on_complete``/``on_success``: a new batch with a record), a ``batch``
to add members to (an open batch with a record), or neither (a plain batch: a shared id, no
record). No I/O: a `ValidationError` naming the field is raised before anything is stored; the
backend refuses an unknown or closed batch as it stores the members (`Backend.enqueue_batch`).
See docs/architecture.md "Batches and callbacks"."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .backends.base import NewBatch, NewJob
from .backends.batches import BATCH_TTL, callback_id, callback_payload
from .errors import ValidationError
from .inputs import brief, positive_seconds
from .job import new_id
from .meta import encoded_meta
from .newjobs import JobBuilder
from .options import check_lookups, check_options


def batch_of_call(
    builder: JobBuilder,
    tenant: str | None,
    batch: str | None,
    on_complete: Any,
    on_success: Any,
    batch_ttl: float | timedelta | None,
    now: float,
) -> tuple[str, NewBatch | None]:
    """The batch id of an ``enqueue_many`` call and its record to create or add to (None: a
    plain batch without callbacks)."""
    check_lookups(batch=batch)
    if batch is not None:
        if on_complete is not None or on_success is not None or batch_ttl is not None:
            raise ValidationError(
                "on_complete, on_success and batch_ttl are set when a batch is created, "
                "not when members are added to it",
                field="batch",
            )
        return batch, NewBatch(batch, tenant)
    batch_id = new_id()
    if on_complete is None and on_success is None:
        return batch_id, None
    return batch_id, _new_record(builder, batch_id, tenant, on_complete, on_success, batch_ttl, now)


def check_members(record: NewBatch, jobs: Sequence[NewJob], tenant: str | None) -> None:
    """The members of a batch with a record: all of its tenant, at least one for a new one."""
    others = [i for i, nj in enumerate(jobs) if nj.tenant != tenant]
    if others:
        raise ValidationError(
            f"items[{others[0]}]: a batch with callbacks holds one tenant's jobs only",
            field=f"items[{others[0]}].tenant",
        )
    if not jobs and record.create:
        raise ValidationError("a batch with callbacks needs at least one job", field="items")


def _new_record(
    builder: JobBuilder, batch_id: str, tenant: str | None, on_complete: Any, on_success: Any,
    ttl: float | timedelta | None, now: float,
) -> NewBatch:  # fmt: skip
    # below 1e10 s (~300 years), as before the shared check
    most = math.nextafter(1e10, 0)
    secs = BATCH_TTL if ttl is None else positive_seconds(ttl, "batch_ttl", "batch_ttl", most,
                                                         "about 300 years")  # fmt: skip
    callbacks = [
        _callback(builder, name, spec, batch_id, tenant, now)
        for name, spec in (("on_complete", on_complete), ("on_success", on_success))
        if spec is not None
    ]
    return NewBatch(batch_id, tenant, callbacks, float(secs))


def _callback(
    builder: JobBuilder, name: str, spec: Any, batch: str, tenant: str | None, now: float
) -> tuple[str, NewJob]:
    """The template of a batch callback (``on_complete``/``on_success``): a task name, a
    `Task`, or a dict with ``task`` and optionally ``priority``, ``max_attempts``, ``meta``.
    The task must accept the callback payload (``batch``, ``counts``, ``total``); it runs in
    its own queue with its own options."""
    item = spec if isinstance(spec, dict) else {"task": spec}
    unknown = [k for k in item if k not in ("task", "priority", "max_attempts", "meta")]
    if unknown or "task" not in item:
        why = f"unknown key {brief(unknown[0])}" if unknown else "no 'task'"
        raise ValidationError(f"{name}: {why}", field=name)
    t = builder.catalog.lookup(item["task"])
    if t.rules:
        raise ValidationError(
            f"{name}: task {t.name!r} has flow limits, which batch callbacks do not take",
            field=name,
        )
    prio, _ = check_options(item.get("priority"), None, None, tenant,
                            item.get("max_attempts"), now)  # fmt: skip
    try:  # the payload shape the callback will get, checked against the task now
        builder.new_job(t, callback_payload(batch, {}, 0), None, 0.0, None, tenant, None, None)
    except ValidationError as exc:
        raise ValidationError(
            f"{name}: task {t.name!r} must accept the callback payload (batch: str, "
            f"counts: dict, total: int): {exc}",
            field=name,
        ) from None
    o = t.options
    nj = NewJob(
        callback_id(batch, name), o.queue, t.name, "", o.priority if prio is None else prio,
        item.get("max_attempts") or o.max_attempts, o.max_stalls, o.timeout, o.lease, 0.0,
        tenant,
    )  # fmt: skip
    if "meta" in item:
        nj.meta = encoded_meta(item["meta"])
    return name, nj


__all__ = ["batch_of_call", "check_members"]
