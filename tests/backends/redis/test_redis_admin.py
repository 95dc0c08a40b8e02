"""Redis-only: where the pause flag and the API keys live (hash tags: one Cluster slot each),
and that no stored value holds a key's secret."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from redis import asyncio as aioredis

from conveyor import Conveyor
from tests.servers import RedisServer


@pytest.fixture
async def app(server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[Conveyor]:
    prefix = re.sub(r"\W", "", request.node.name)[-40:]
    a = Conveyor(f"{server.url}?prefix=t{prefix}")
    yield a
    await a.close()


async def _dump(server: RedisServer, prefix: str) -> dict[str, object]:
    """Every key of the app's namespace with its value, whatever its type."""
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    out: dict[str, object] = {}
    try:
        async for key in r.scan_iter(match=f"{prefix}:*"):
            kind = await r.type(key)
            if kind == "hash":
                out[key] = await r.hgetall(key)
            elif kind == "zset":
                out[key] = await r.zrange(key, 0, -1, withscores=True)
            elif kind == "set":
                out[key] = await r.smembers(key)
            elif kind == "string":
                out[key] = await r.get(key)
            elif kind == "stream":
                out[key] = await r.xrange(key)
            else:
                out[key] = kind
    finally:
        await r.aclose()
    return out


async def test_the_pause_flag_is_a_key_in_the_queues_slot(
    app: Conveyor, server: RedisServer
) -> None:
    # When a queue is paused
    await app.pause_queue("emails")
    prefix = app.backend.prefix  # type: ignore[attr-defined]
    # Then its flag is a key under the queue's hash tag (claim.lua reads it in the same slot)
    stored = await _dump(server, prefix)
    assert f"{prefix}:{{emails}}:paused" in stored
    # And a resume removes it
    await app.resume_queue("emails")
    assert f"{prefix}:{{emails}}:paused" not in await _dump(server, prefix)


async def test_api_keys_share_one_hash_tag_and_never_store_the_secret(
    app: Conveyor, server: RedisServer
) -> None:
    # Given keys of two tenants and an admin key, one revoked
    made = [await app.api_keys.create(tenant="acme", name="a"),
            await app.api_keys.create(tenant="globex"),
            await app.api_keys.create(tenant=None, admin=True)]  # fmt: skip
    await app.api_keys.revoke(made[1][0].id)
    prefix = app.backend.prefix  # type: ignore[attr-defined]
    stored = await _dump(server, prefix)
    # Then every key record and index is under the {keys} hash tag (one Cluster slot)
    key_names = [k for k in stored if ":{keys}:" in k]
    assert {f"{prefix}:{{keys}}:k:{r.id}" for r, _ in made} <= set(key_names)
    assert {f"{prefix}:{{keys}}:index", f"{prefix}:{{keys}}:t:acme"} <= set(key_names)
    # And no value anywhere holds a secret, or a full key
    everything = repr(stored)
    for record, full in made:
        secret = full[len(f"cvk_{record.id}_") :]
        assert secret not in everything and full not in everything
        assert record.secret_hash in everything
