"""The job commands of the ``conveyor`` command line: ``enqueue``, ``status``, ``list``,
``cancel``, ``retry``, ``resume`` and ``cleanup``."""

from __future__ import annotations

import json
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from .app import Conveyor
from .cli import (
    FINAL,
    SECONDS,
    CliError,
    _ago,
    _console,
    _conveyor,
    _print_json,
    _producer,
    _progress_text,
    _run,
    _split,
    _target,
    _when,
    is_remote,
    json_option,
    main,
)
from .errors import ConveyorError, ValidationError
from .job import Job, JobState


@main.command()
@click.argument("task")
@click.option("--payload", default="{}", show_default=True, metavar="JSON",
              help="JSON object of the task's arguments.")  # fmt: skip
@click.option("--priority", default=None, metavar="P", help="critical/high/normal/low or 0-100.")
@click.option("--delay", type=float, default=None, metavar="SECONDS", help="Run no sooner.")
@click.option("--idempotency-key", default=None, metavar="KEY",
              help="A second enqueue with the same key returns the first job.")  # fmt: skip
@click.option("--tenant", default=None)
@click.option("--max-attempts", type=int, default=None, help="Overrides the task's retries + 1.")
@click.option("--queue", default=None, metavar="Q",
              help="Without --app: the queue of TASK, if you want it checked [default: the "
                   "live workers'; with --unchecked: default].")  # fmt: skip
@click.option("--unchecked", is_flag=True,
              help="Without --app: store the job even if no live worker runs TASK (to --queue, "
                   "payload unchecked); a worker without its handler fails it for good.")  # fmt: skip
@_target
@json_option
@click.pass_context
def enqueue(ctx: click.Context, task: str, payload: str, priority: str | None,
            delay: float | None, idempotency_key: str | None, tenant: str | None,
            max_attempts: int | None, queue: str | None, unchecked: bool, url: str | None,
            app_spec: str | None, as_json: bool) -> None:  # fmt: skip
    """Enqueue a job for TASK and print its id.

    With --app the payload is validated against the task. Without it (a task defined elsewhere,
    e.g. a worker's --command) the live workers' word is taken: the job goes to the queue they
    run TASK on, its payload checked against the schema they publish; a task no live worker
    runs is refused (unless --unchecked).
    """
    remote = is_remote(url or ctx.obj["url"])
    declared = not (app_spec or ctx.obj["app_spec"]) and not remote
    if remote and (queue is not None or unchecked):
        raise CliError(f"{'--queue' if queue is not None else '--unchecked'} is not used against "
                       "a conveyor server: the server's app says which queue a task uses")  # fmt: skip
    if not declared and not remote and (queue is not None or unchecked):
        raise CliError(f"{'--queue' if queue is not None else '--unchecked'} is only for tasks "
                       "not in the app (without --app): the app's task says which queue it "
                       "uses and checks the payload")  # fmt: skip
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise CliError(f"--payload is not JSON ({exc}): pass a JSON object, "
                       """e.g. --payload '{"record_id": "r1"}'""") from None  # fmt: skip
    prio: int | str | None = priority
    if priority is not None:
        try:
            prio = int(priority)
        except ValueError:
            pass  # a name: validated by the app

    async def go(app: Any) -> None:  # a Conveyor, or a conveyor.Client (remote)
        if declared:
            from .registry import declare_live

            try:
                if unchecked:
                    app.declare(task, queue=queue or "default")
                else:
                    await declare_live(app, task, queue)
            except ValidationError as exc:
                hint = "; start a worker that runs it, or pass --unchecked"
                raise CliError(f"{exc}{hint if exc.field == 'task' else ''}") from None
            except ConveyorError as exc:
                raise CliError(str(exc)) from None
            # Without the app, the limit its producers enforce (recorded by the backend).
            q = app.tasks[task].options.queue
            limit = (await app.stats([q]))[q].max_queued
            if limit is not None:
                app.queue(q, max_queued=limit)
        job = await app.enqueue(task, data, priority=prio, delay=delay,
                                idempotency_key=idempotency_key, tenant=tenant,
                                max_attempts=max_attempts)  # fmt: skip
        _print_json(job.to_dict()) if as_json else click.echo(job.id)

    _run(_producer(ctx, url, app_spec), go)


# -- reading ------------------------------------------------------------------------------------


def _brief_json(value: Any, width: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _job_table(jobs: list[Job]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("id", "task", "queue", "status", "prio", "attempt", "created", "progress"):
        t.add_column(col, no_wrap=True)
    t.add_column("error", overflow="fold")
    # Awaiting jobs (human in the loop) show what they ask: the column only when one is listed.
    prompts = any(j.status is JobState.AWAITING for j in jobs)
    if prompts:
        t.add_column("prompt", overflow="fold")
    for j in jobs:
        error = (j.error or {}).get("message") or ""
        row = [j.id, j.task, j.queue, j.status.value, str(j.priority),
               f"{j.attempt}/{j.max_attempts}", _ago(j.created_at),
               escape(_progress_text(j)), escape(error[:80])]  # fmt: skip
        if prompts:
            row.append(escape(_brief_json(j.prompt)) if j.status is JobState.AWAITING else "")
        t.add_row(*row)
    return t


def _job_detail(job: Job) -> Table:
    t = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    d = job.to_dict()
    rows: list[tuple[str, Any]] = [
        ("id", job.id), ("task", job.task), ("queue", job.queue), ("status", job.status.value),
        ("priority", job.priority), ("attempt", f"{job.attempt}/{job.max_attempts}"),
        ("progress", _progress_text(job)), ("eta", "" if job.eta is None else f"{job.eta:.1f}s"),
        ("payload", json.dumps(job.payload)), ("result", "" if d["result"] is None
                                                else json.dumps(d["result"], default=str)),
        ("error", "" if not job.error else f"{job.error.get('type')}: {job.error.get('message')}"),
        ("tenant", job.tenant), ("batch", job.batch), ("idempotency key", job.idempotency_key),
        ("workflow", _workflow_of(job)), ("next", ", ".join(job.next_jobs)),
        ("created", _when(job.created_at)), ("scheduled for", _when(job.scheduled_for)),
        ("started", _when(job.started_at)), ("finished", _when(job.finished_at)),
        ("worker", job.worker),
        ("prompt", None if job.prompt is None else json.dumps(job.prompt, default=str)),
        ("deadline", _when(job.await_deadline) if job.status is JobState.AWAITING else None),
        ("on timeout", job.on_timeout if job.status is JobState.AWAITING else None),
        ("input", json.dumps(job.input, default=str) if job.resumes else None),
        ("resumes", job.resumes or None),
    ]  # fmt: skip
    for key, value in rows:
        if value not in (None, ""):
            t.add_row(key, escape(str(value)))
    return t


def _workflow_of(job: Job) -> str | None:
    """``<workflow id>, step <label>`` for a job in a workflow (a step, or a first step that
    handed over); None for a plain job."""
    wf = job.workflow or (job.id if job.next_jobs else None)
    return None if wf is None else f"{wf}, step {job.step or job.task}"


@main.command()
@click.argument("job_id")
@_target
@json_option
@click.pass_context
def status(ctx: click.Context, job_id: str, url: str | None, app_spec: str | None,
           as_json: bool) -> None:  # fmt: skip
    """Show one job."""

    async def go(app: Conveyor) -> None:
        job = await app.get(job_id)
        _print_json(job.to_dict()) if as_json else _console().print(_job_detail(job))

    _run(_producer(ctx, url, app_spec), go)


@main.command("list")
@click.option("--status", "state", default=None, help=f"One of {', '.join(JobState)}.")
@click.option("--queue", default=None)
@click.option("--task", default=None)
@click.option("--batch", default=None)
@click.option("--tenant", default=None)
@click.option("--limit", type=int, default=50, show_default=True, help="1-1000.")
@click.option("--cursor", default=None, help="next_cursor of the previous page.")
@_target
@json_option
@click.pass_context
def list_(ctx: click.Context, state: str | None, queue: str | None, task: str | None,
          batch: str | None, tenant: str | None, limit: int, cursor: str | None,
          url: str | None, app_spec: str | None, as_json: bool) -> None:  # fmt: skip
    """List jobs, newest first."""

    async def go(app: Conveyor) -> None:
        page = await app.list(status=state, queue=queue, task=task, batch=batch, tenant=tenant,
                              limit=limit, cursor=cursor)  # fmt: skip
        if as_json:
            _print_json({"jobs": [j.to_dict() for j in page.jobs], "next_cursor": page.next_cursor})
            return
        _console().print(_job_table(page.jobs))
        if page.next_cursor:
            click.echo(f"more: --cursor {page.next_cursor}")

    _run(_producer(ctx, url, app_spec), go)


# -- steering -----------------------------------------------------------------------------------


def _steer(ctx: click.Context, job_id: str, url: str | None, app_spec: str | None,
           as_json: bool, action: str) -> None:  # fmt: skip
    async def go(app: Conveyor) -> None:
        job = await (app.cancel(job_id) if action == "cancel" else app.retry(job_id))
        _print_json(job.to_dict()) if as_json else click.echo(f"{job.id} {job.status.value}")

    _run(_producer(ctx, url, app_spec), go)


@main.command()
@click.argument("job_id")
@_target
@json_option
@click.pass_context
def cancel(ctx: click.Context, job_id: str, url: str | None, app_spec: str | None,
           as_json: bool) -> None:  # fmt: skip
    """Cancel a pending or active job (idempotent); prints the job id and its new status."""
    _steer(ctx, job_id, url, app_spec, as_json, "cancel")


@main.command()
@click.argument("job_id")
@_target
@json_option
@click.pass_context
def retry(ctx: click.Context, job_id: str, url: str | None, app_spec: str | None,
          as_json: bool) -> None:  # fmt: skip
    """Requeue a failed or cancelled job with fresh attempts."""
    _steer(ctx, job_id, url, app_spec, as_json, "retry")


@main.command()
@click.argument("job_id")
@click.option("--data", default=None, metavar="JSON", help="The decision, as JSON [default: none].")
@_target
@json_option
@click.pass_context
def resume(ctx: click.Context, job_id: str, data: str | None, url: str | None,
           app_spec: str | None, as_json: bool) -> None:  # fmt: skip
    """Continue an awaiting job with a decision, exactly once (a job that is not awaiting is
    an error naming its state); prints the job id and its new status."""
    try:
        value = None if data is None else json.loads(data)
    except json.JSONDecodeError as exc:
        raise CliError(f"--data is not JSON ({exc}): pass a JSON value, "
                       """e.g. --data '{"approved": true}'""") from None  # fmt: skip

    async def go(app: Conveyor) -> None:
        job = await app.resume(job_id, value)
        _print_json(job.to_dict()) if as_json else click.echo(f"{job.id} {job.status.value}")

    _run(_producer(ctx, url, app_spec), go)


@main.command()
@click.option("--older-than", type=SECONDS, default=0.0, show_default=True, metavar="SECONDS",
              help="Only jobs that finished at least this long ago.")  # fmt: skip
@click.option("--states", default=",".join(FINAL), show_default=True)
@_target
@json_option
@click.pass_context
def cleanup(ctx: click.Context, older_than: float, states: str, url: str | None,
            app_spec: str | None, as_json: bool) -> None:  # fmt: skip
    """Delete finished jobs."""
    names = _split(states)
    unknown = [s for s in names if s not in FINAL]
    if unknown or not names:
        raise CliError(f"--states: {unknown[0] if unknown else 'nothing'!r} is not a finished "
                       f"state; use a comma-separated subset of {','.join(FINAL)}")  # fmt: skip

    async def go(app: Conveyor) -> None:
        n = await app.cleanup(older_than=older_than, states=names)
        _print_json({"removed": n}) if as_json else click.echo(f"removed {n} jobs")

    _run(_conveyor(ctx, url, app_spec), go)
