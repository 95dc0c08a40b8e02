"""`conveyor keys`: create, list and revoke the HTTP API's keys (`conveyor.apikeys`).

``create`` prints the full key once: only its hash is stored, so it cannot be shown again.
``list`` never prints hashes. ``revoke`` of an unknown id exits 2 naming it."""

from __future__ import annotations

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from .app import Conveyor
from .backends.base import ApiKeyRecord
from .cli import CliError, _console, _conveyor, _print_json, _run, _target, _when, json_option, main

SHOWN_ONCE = (
    "This key is shown once and will not be shown again: store it now (only its hash is kept)."
)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@main.group()
def keys() -> None:
    """Create, list and revoke API keys of the HTTP API."""


@keys.command("create")
@click.option(
    "--tenant", default=None, help="The tenant whose jobs the key sees (not with --admin)."
)
@click.option("--admin", is_flag=True, help="A key that sees every tenant (takes no --tenant).")
@click.option("--read-only", is_flag=True, help="The key may read but not change anything.")
@click.option("--name", default=None, help="A label: who or what uses the key.")
@_target
@json_option
@click.pass_context
def create(
    ctx: click.Context, tenant: str | None, admin: bool, read_only: bool, name: str | None,
    url: str | None, app_spec: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Create a key and print it once, with its id, tenant and flags."""

    if admin and tenant is not None:
        raise CliError("--admin makes a key that sees every tenant: give it no --tenant")
    if not admin and tenant is None:
        raise CliError("give --tenant TENANT (the only jobs the key sees), or --admin")

    async def go(app: Conveyor) -> None:
        record, full = await app.api_keys.create(
            tenant=tenant, admin=admin, read_only=read_only, name=name
        )
        if as_json:
            _print_json({"key": full, **record.to_dict()})
            click.echo(SHOWN_ONCE, err=True)
            return
        click.echo(f"key:       {full}")
        click.echo(f"id:        {record.id}")
        click.echo(f"tenant:    {record.tenant if record.tenant is not None else '(every tenant)'}")
        click.echo(f"admin:     {_yes(record.admin)}")
        click.echo(f"read-only: {_yes(record.read_only)}")
        if record.name is not None:
            click.echo(f"name:      {record.name}")
        click.echo(SHOWN_ONCE)

    _run(_conveyor(ctx, url, app_spec), go)


def keys_table(found: list[ApiKeyRecord]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("id", "tenant", "admin", "read-only", "name", "created", "revoked"):
        t.add_column(col, no_wrap=col != "name")
    for k in found:
        t.add_row(k.id, escape(k.tenant or ""), _yes(k.admin), _yes(k.read_only),
                  escape(k.name or ""), _when(k.created_at), _when(k.revoked_at))  # fmt: skip
    return t


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@_target
@json_option
@click.pass_context
def list_keys(
    ctx: click.Context, tenant: str | None, url: str | None, app_spec: str | None, as_json: bool
) -> None:
    """List keys, oldest first: id, tenant, admin, read-only, name, created, revoked (never
    their secrets or hashes)."""

    async def go(app: Conveyor) -> None:
        found = await app.api_keys.list(tenant)
        if as_json:
            _print_json([k.to_dict() for k in found])
        elif not found:
            click.echo("no API keys")
        else:
            _console().print(keys_table(found))

    _run(_conveyor(ctx, url, app_spec), go)


@keys.command("revoke")
@click.argument("key_id", metavar="ID")
@_target
@click.pass_context
def revoke(ctx: click.Context, key_id: str, url: str | None, app_spec: str | None) -> None:
    """Revoke key ID for good: the HTTP API refuses it from now on."""

    async def go(app: Conveyor) -> None:
        record = await app.api_keys.get(key_id)
        if record is None:
            raise CliError(f"no API key {key_id!r} (see `conveyor keys list`)")
        if await app.api_keys.revoke(key_id):
            click.echo(f"API key {key_id} revoked")
        else:
            click.echo(f"API key {key_id} was already revoked ({_when(record.revoked_at)})")

    _run(_conveyor(ctx, url, app_spec), go)
