"""Fan-out / fan-in: a handler spawns children (``ctx.spawn_many``) and returns
`AwaitChildren`; its job waits as ``awaiting`` (no slot, no lease) until its children are final,
then runs again with ``ctx.children`` (their results in spawn order) and ``ctx.resumed``.

The park and the children's creation are one atomic step (the park outcome carries the
children in `Outcome.then`, ids fixed by the worker): a crash before the outcome creates no
child, and a retried attempt cannot create a second set. Each child's final transition
(completed, failed for good, cancelled, a stall or await-timeout failure) settles its *edge*
in the parent exactly once: the child's result or error is stored by spawn index and the
parent's policy decides (docs/architecture.md "Fan-out and fan-in").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .errors import ValidationError
from .inputs import brief
from .job import JobState

#: What a failed (or cancelled) child does to its parent.
#: ``fail_parent``: the parent fails for good at once (error type ``ChildFailed``), and its
#: children still pending are cancelled unless ``cancel_siblings=False``; ``ignore``: the
#: parent resumes when every child is final, with the errors in place of the results;
#: ``continue``: the parent resumes as soon as a child fails (settles after that are recorded
#: in ``ctx.children`` of a later read, and never resume the parent a second time).
POLICIES = ("fail_parent", "ignore", "continue")
Policy = Literal["fail_parent", "ignore", "continue"]
#: The most children one attempt may spawn (a larger fan-out belongs in batches of parents).
MAX_CHILDREN = 10_000
#: The error type of a parent failed by a child under ``fail_parent``.
CHILD_FAILED = "ChildFailed"


@dataclass(frozen=True, slots=True)
class AwaitChildren:
    """Returned by a handler after ``ctx.spawn_many`` / ``ctx.spawn``: the job parks until its
    children are final, and runs again with ``ctx.children``. Returning it without having
    spawned fails the attempt for good (``NoChildren``); spawning and returning anything else
    does too (``ChildrenNotAwaited``): a child is never created without its parent waiting."""


@dataclass(frozen=True, slots=True)
class ChildResult:
    """One child as its parent sees it after resuming (``ctx.children``, spawn order).

    ``status`` is the child's final state, or None while it is still pending (only after an
    early resume under ``policy="continue"``); ``result`` its return value when completed,
    ``error`` its error ``{"type", "message", ...}`` when failed or cancelled."""

    id: str
    index: int
    status: JobState | None
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when the child completed."""
        return self.status is JobState.COMPLETED


@dataclass(frozen=True, slots=True)
class FanOut:
    """What a parking outcome carries to the backend besides the children (`Outcome.then`, in
    spawn order): the failure policy and whether a failure cancels the pending siblings."""

    policy: Policy = "fail_parent"
    cancel_siblings: bool = True


def check_policy(policy: object, cancel_siblings: object) -> None:
    """Raise `ValidationError` naming a bad policy or ``cancel_siblings``."""
    if policy not in POLICIES:
        raise ValidationError(
            f"policy must be one of {', '.join(POLICIES)}, got {brief(policy)}", field="policy"
        )
    if type(cancel_siblings) is not bool:
        raise ValidationError(
            f"cancel_siblings must be True or False, got {brief(cancel_siblings)}",
            field="cancel_siblings",
        )


def settled_json(status: str, result: str | None, error: str | None) -> str:
    """A settled edge as stored on Redis (``{"s", "r", "e"}``; result and error as JSON)."""
    return orjson.dumps(
        {"s": status, "r": None if result is None else orjson.Fragment(result),
         "e": None if error is None else orjson.Fragment(error)}
    ).decode()  # fmt: skip


def child_failed(
    child: str, index: int, status: str, error: dict[str, Any] | None
) -> dict[str, Any]:
    """The error of a parent failed by its child (policy ``fail_parent``)."""
    what = "was cancelled" if status == "cancelled" else "failed"
    detail = ""
    if error:
        detail = f": {error.get('type')}: {str(error.get('message'))[:300]}"
    return {"type": CHILD_FAILED, "message": f"child {child} (spawn index {index}) {what}{detail}",
            "child": child, "index": index}  # fmt: skip


def progress_of(settled: int, total: int) -> dict[str, Any]:
    """The parent's progress after a settle: settled children / total."""
    return {"percent": round(100.0 * settled / total, 2) if total else 100.0,
            "message": f"{settled} of {total} children done", "stage": "children",
            "meta": {"settled": settled, "total": total}}  # fmt: skip


__all__ = [
    "CHILD_FAILED",
    "MAX_CHILDREN",
    "POLICIES",
    "AwaitChildren",
    "ChildResult",
    "FanOut",
    "Policy",
    "check_policy",
    "child_failed",
    "progress_of",
    "settled_json",
]
