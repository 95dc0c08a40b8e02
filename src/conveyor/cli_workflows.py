"""`conveyor workflow ID`: a chain's step line (``translating → verifying → done``, the current
step marked) and its history, one row per step (job, attempts, outcome); local or ``--url``."""

from __future__ import annotations

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from .app import Conveyor
from .cli import _console, _print_json, _producer, _run, _target, _when, json_option, main
from .workflows import WorkflowInfo, WorkflowState


def step_line(info: WorkflowInfo) -> str:
    """``translating → [verifying] → reviewing``: the steps so far, the current one in brackets
    while it runs, and how the workflow ended (``done``, ``failed``...) once it has."""
    labels = [s.step for s in info.steps]
    if info.status in (WorkflowState.RUNNING, WorkflowState.AWAITING):
        labels[-1] = f"[{labels[-1]}]"
        if info.total_steps and info.total_steps > len(labels):
            labels.append("…")
        return " → ".join(labels)
    return " → ".join([*labels, info.status.value])


def history_table(info: WorkflowInfo) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("#", "step", "task", "job", "status", "attempts", "started", "finished", "error"):
        t.add_column(col, no_wrap=col != "error")
    for n, s in enumerate(info.steps, 1):
        err = "" if not s.error else f"{s.error.get('type')}: {s.error.get('message')}"
        t.add_row(str(n), escape(s.step), escape(s.task), s.job_id, s.status.value,
                  f"{s.attempt}/{s.max_attempts}", _when(s.started_at) or "",
                  _when(s.finished_at) or "", escape(err))  # fmt: skip
    return t


def summary(info: WorkflowInfo) -> str:
    total = "?" if info.total_steps is None else str(info.total_steps)
    pct = "" if info.percent is None else f", {info.percent:g}%"
    return (f"workflow {info.id}: {info.status.value}, step {len(info.steps)} of {total}"
            f"{pct}")  # fmt: skip


@main.command()
@click.argument("workflow_id")
@_target
@json_option
@click.pass_context
def workflow(ctx: click.Context, workflow_id: str, url: str | None, app_spec: str | None,
             as_json: bool) -> None:  # fmt: skip
    """Show a workflow (a chain of steps) by its first job's id: the step line with the
    current step in brackets, progress, and each step's job, attempts and outcome."""

    async def go(app: Conveyor) -> None:
        info = await app.workflow(workflow_id)
        if as_json:
            _print_json(info.to_dict())
            return
        console = _console()
        console.print(escape(step_line(info)))
        console.print(escape(summary(info)))
        console.print(history_table(info))

    _run(_producer(ctx, url, app_spec), go)
