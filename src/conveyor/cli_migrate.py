"""``conveyor migrate``: create or bring the backend's schema to this version's (PostgreSQL's
versioned migrations; SQLite files migrate when opened, Redis has no schema)."""

from __future__ import annotations

import asyncio

import click

from .backends import open_backend
from .cli import main
from .errors import ConveyorError


@main.command("migrate")
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or migrate the schema of the backend at --url (safe to run from several places
    at once: PostgreSQL serializes migrations with an advisory lock)."""

    async def go() -> list[int] | None:
        backend = open_backend(ctx.obj["url"])
        try:
            run = getattr(backend, "migrate", None)
            if run is None:
                await backend.open()  # SQLite migrates its file when it opens it
                return None
            steps: list[int] = await run()
            return steps
        finally:
            await backend.close()

    try:
        steps = asyncio.run(go())
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from None
    if steps is None:
        click.echo("schema up to date (migrated when opened)")
    elif steps:
        click.echo(f"applied migration steps {', '.join(map(str, steps))}")
    else:
        click.echo("schema up to date")
