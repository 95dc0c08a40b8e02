"""Chains: a handler returns `Next(...)` to continue its work in another task under one workflow
id. The worker turns it into the next job (`worker/handover.py`), created in the same atomic step
as the current job's completion (`Outcome.then`); `conveyor.workflows` reads a workflow back."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from datetime import timedelta
from typing import Any

from .errors import ConveyorError

MAX_STEP_LABEL = 64
MAX_STEPS = 10_000


@dataclass(frozen=True, slots=True)
class Next:
    """Returned by a handler: the current job completes (with ``result``, default None) and
    ``task`` runs next with ``payload``, under the same workflow id, tenant and meta.

    ``step`` labels the next step (default: the task's ``step=`` option, else its name);
    ``steps`` declares how many steps the workflow has in all (for its progress); ``queue``,
    ``delay`` and ``priority`` override the task's defaults as ``enqueue``'s do. A `Next` the
    worker cannot store (unknown task, bad payload or options) fails the current attempt for
    good, naming why: the step is never lost silently."""

    task: str
    payload: dict[str, Any] | None = None
    _: KW_ONLY
    step: str | None = None
    steps: int | None = None
    queue: str | None = None
    delay: float | timedelta | None = None
    priority: int | str | None = None
    result: Any = None


def check_step(step: object, steps: object, error: type[ConveyorError]) -> None:
    """Raise ``error`` naming the problem with a step label or a declared number of steps."""
    if step is not None and (
        not isinstance(step, str) or not 0 < len(step) <= MAX_STEP_LABEL or not step.isprintable()
    ):
        raise error(f"step must be a printable label of 1 to {MAX_STEP_LABEL} characters, "
                    f"got {str(step)[:80]!r}")  # fmt: skip
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int) or not 0 < steps <= MAX_STEPS
    ):
        raise error(f"steps must be an integer from 1 to {MAX_STEPS}, got {str(steps)[:80]!r}")


__all__ = ["Next", "check_step"]
