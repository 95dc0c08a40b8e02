"""Queue pause flags and API keys on Redis.

The pause flag is the key ``<prefix>:{<queue>}:paused``, in the queue's slot, so ``claim.lua``
and ``peek.lua`` read it inside the claim's own script (Redis Cluster too); ``pause.lua`` sets
or clears it with its event. API keys live under their own hash tag, ``<prefix>:{keys}:`` (one
slot for all): a hash per key (``k:<id>``) and the ids in insertion order (``index``, and
``t:<tenant>`` per tenant), written by ``keystore.lua`` / ``keyrevoke.lua``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import ValidationError
from ..records import ApiKeyRecord

if TYPE_CHECKING:
    from .backend import RedisBackend


async def set_queue_paused(b: RedisBackend, queue: str, paused: bool) -> bool:
    # Registered first (like append_event): stats() and paused_queues() list known queues.
    await b._client().sadd(f"{b.prefix}:queues", queue)
    return int(await b._eval("pause", queue, "1" if paused else "0")) == 1


async def paused_queues(b: RedisBackend) -> set[str]:
    names = await b._queues()
    if not names:
        return set()
    pipe = b._client().pipeline(transaction=False)
    for q in names:
        pipe.exists(b.key(q, "paused"))
    found = await pipe.execute()
    return {q for q, n in zip(names, found, strict=True) if n}


def _keys(b: RedisBackend) -> str:
    return f"{b.prefix}:{{keys}}:"


def _fields(key: ApiKeyRecord) -> list[Any]:
    out: list[Any] = ["id", key.id, "h", key.secret_hash, "ad", int(key.admin),
                      "ro", int(key.read_only), "c", repr(float(key.created_at))]  # fmt: skip
    if key.tenant is not None:
        out += ["tn", key.tenant]
    if key.name is not None:
        out += ["n", key.name]
    if key.revoked_at is not None:
        out += ["rv", repr(float(key.revoked_at))]
    return out


def _record(h: dict[str, str]) -> ApiKeyRecord:
    rv = h.get("rv")
    return ApiKeyRecord(
        h["id"], h["h"], h.get("tn"), h.get("ad") == "1", h.get("ro") == "1", h.get("n"),
        float(h.get("c", 0.0)), None if rv is None else float(rv),
    )  # fmt: skip


async def store_api_key(b: RedisBackend, key: ApiKeyRecord) -> None:
    stored = await b._eval("keystore", "", key.id, key.tenant or "", *_fields(key),
                           prefix=_keys(b))  # fmt: skip
    if int(stored) != 1:
        raise ValidationError(f"API key {key.id!r} already exists", field="id")


async def get_api_key(b: RedisBackend, key_id: str) -> ApiKeyRecord | None:
    h = await b._client().hgetall(_keys(b) + "k:" + key_id)
    return _record(h) if h else None


async def list_api_keys(b: RedisBackend, tenant: str | None) -> list[ApiKeyRecord]:
    client = b._client()
    index = _keys(b) + ("index" if tenant is None else f"t:{tenant}")
    ids = await client.zrange(index, 0, -1)
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for key_id in ids:
        pipe.hgetall(_keys(b) + "k:" + key_id)
    return [_record(h) for h in await pipe.execute() if h]


async def revoke_api_key(b: RedisBackend, key_id: str) -> bool:
    return int(await b._eval("keyrevoke", "", key_id, prefix=_keys(b))) == 1
