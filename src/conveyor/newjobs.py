"""`JobBuilder`: producer input turned into `NewJob` records, for ``enqueue`` and each item of
``enqueue_many``: the task looked up in the `Catalog`, per-job options checked
(`conveyor.options`), the payload validated (`conveyor.inputs`) and the flow gates worked out.
No I/O: a `ValidationError` (naming the field) or `UnknownTask` is raised before anything is
stored."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .backends.base import NewJob
from .errors import ValidationError
from .inputs import PayloadLimits, brief, validated_payload
from .job import Job, JobState, Progress, new_id
from .limits import flow_of
from .meta import decoded_meta, encoded_meta
from .options import check_options

if TYPE_CHECKING:
    from .catalog import Catalog
    from .task import Task

_ITEM_KEYS = frozenset(
    {"task", "payload", "priority", "delay", "idempotency_key", "tenant", "max_attempts", "meta"}
)
EnqueueItem = tuple[str, dict[str, Any] | None] | dict[str, Any]


class JobBuilder:
    """Builds the jobs of one app's producers from its catalog and payload limits."""

    def __init__(self, catalog: Catalog, limits: PayloadLimits) -> None:
        self.catalog = catalog
        self.limits = limits

    def new_job(
        self,
        t: Task,
        payload: dict[str, Any] | None,
        prio: int | None,
        delay: float,
        idempotency_key: str | None,
        tenant: str | None,
        max_attempts: int | None,
        batch: str | None,
    ) -> NewJob:
        """A job of task ``t`` (options already checked); validates the payload."""
        o = t.options
        clean, text = validated_payload(t.spec, payload, self.limits, t.name)
        nj = NewJob(
            new_id(), o.queue, t.name, text,
            o.priority if prio is None else prio,
            o.max_attempts if max_attempts is None else max_attempts,
            o.max_stalls, o.timeout, o.lease, delay, tenant, batch, None, None, idempotency_key,
        )  # fmt: skip
        nj.step, nj.steps = o.step, o.steps
        rules = t.rules
        if rules:
            nj.gates = rules.gates(clean, tenant)
            nj.flow = flow_of(nj.gates)
        return nj

    def many(
        self,
        items: Iterable[EnqueueItem],
        prio: int | None,
        secs: float,
        tenant: str | None,
        batch_id: str,
        now: float,
    ) -> list[NewJob]:
        """The jobs of an ``enqueue_many`` call; an error names the item (``items[i]...``)."""
        jobs: list[NewJob] = []
        tasks: dict[Any, Task] = {}
        new_job = self.new_job
        lookup = self.catalog.lookup
        try:
            numbered = enumerate(items)
        except TypeError:
            raise ValidationError(
                f"items must be an iterable of (task, payload) or dicts, got {type(items).__name__}",
                field="items",
            ) from None
        for i, item in numbered:
            try:
                if type(item) is tuple:
                    name, payload = item
                    t = tasks.get(name) if type(name) is str else None  # a list: unhashable
                    if t is None:
                        t = lookup(name)
                        if type(name) is str:
                            tasks[name] = t
                    jobs.append(new_job(t, payload, prio, secs, None, tenant, None, batch_id))
                elif isinstance(item, dict):
                    jobs.append(self.item_job(item, prio, secs, tenant, batch_id, now))
                else:
                    raise ValidationError(
                        f"expected (task, payload) or a dict, got {type(item).__name__}"
                    )
            except ValidationError as exc:
                field = f"items[{i}].{exc.field}" if exc.field else f"items[{i}]"
                raise ValidationError(f"items[{i}]: {exc}", field=field) from None
            except (TypeError, ValueError) as exc:
                raise ValidationError(
                    f"items[{i}]: expected (task, payload) or a dict: {str(exc)[:200]}",
                    field=f"items[{i}]",
                ) from None
        return jobs

    def item_job(
        self, item: dict[str, Any], prio: int | None, secs: float, tenant: str | None,
        batch: str, now: float,
    ) -> NewJob:  # fmt: skip
        """The job of one dict item of ``enqueue_many``; its own options override the call's."""
        unknown = [k for k in item if k not in _ITEM_KEYS]
        if unknown:
            key = unknown[0]
            raise ValidationError(
                f"item has unknown key {brief(key)}",
                field=key if isinstance(key, str) and len(key) <= 64 else None,
            )
        if "task" not in item:
            raise ValidationError("item has no 'task'", field="task")
        t = self.catalog.lookup(item["task"])
        key = item.get("idempotency_key")
        ten = item.get("tenant", tenant)
        attempts = item.get("max_attempts")
        if any(
            k in item for k in ("priority", "delay", "idempotency_key", "tenant", "max_attempts")
        ):
            p, d = check_options(item.get("priority"), item.get("delay"), key, ten, attempts, now)
            prio = prio if "priority" not in item else p
            secs = secs if "delay" not in item else d
        nj = self.new_job(t, item.get("payload"), prio, secs, key, ten, attempts, batch)
        if "meta" in item:
            nj.meta = encoded_meta(item["meta"])
        return nj


def job_from_new(nj: NewJob, now: float) -> Job:
    """The `Job` a producer returns for a job it just stored (``now``: the backend's time)."""
    from .serializers import loads

    scheduled = now + nj.delay if nj.delay > 0 else None
    return Job(
        nj.id, nj.queue, nj.task, loads(nj.payload), nj.priority,
        JobState.SCHEDULED if scheduled else JobState.QUEUED, 0, nj.max_attempts, 0, nj.max_stalls,
        nj.timeout, nj.lease, Progress(), None, None, nj.tenant, nj.batch, nj.workflow, nj.parent,
        nj.idempotency_key, now, scheduled, meta=decoded_meta(nj.meta), step=nj.step,
        steps=nj.steps,
    )  # fmt: skip
