"""API key storage (`Backend.store_api_key` and friends) and `ApiKeys` on every backend: keys
are stored as a hash only, listed oldest first, by tenant, revoked once; a key verifies until
it is revoked, in every process."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import astuple

import pytest

from conveyor import Conveyor, ValidationError
from conveyor.backends.base import ApiKeyRecord


def _record(key_id: str, tenant: str | None, **fields: object) -> ApiKeyRecord:
    return ApiKeyRecord(key_id, hashlib.sha256(key_id.encode()).hexdigest(), tenant, **fields)  # type: ignore[arg-type]


async def test_a_stored_key_reads_back_field_for_field(app: Conveyor) -> None:
    # Given a key record with every field set, and one with the defaults
    await app.open()
    full = _record("k_00000000000a", "acme", admin=False, read_only=True, name="ci deploy ✓",
                   created_at=1700000000.25, revoked_at=None)  # fmt: skip
    admin = _record("k_00000000000b", None, admin=True)
    # When they are stored
    await app.backend.store_api_key(full)
    await app.backend.store_api_key(admin)
    # Then they read back as they were, and an unknown id reads as None
    assert await app.backend.get_api_key(full.id) == full
    assert await app.backend.get_api_key(admin.id) == admin
    assert await app.backend.get_api_key("k_ffffffffffff") is None


async def test_a_key_id_is_stored_once(app: Conveyor) -> None:
    # Given a stored key
    await app.open()
    first = _record("k_0000000000aa", "acme", name="first")
    await app.backend.store_api_key(first)
    # When another record with the same id is stored (another tenant, admin)
    again = _record("k_0000000000aa", None, admin=True, name="second")
    with pytest.raises(ValidationError) as err:
        await app.backend.store_api_key(again)
    # Then it is refused naming the id, and the first record is untouched
    assert "k_0000000000aa" in str(err.value) and "exists" in str(err.value)
    assert await app.backend.get_api_key(first.id) == first
    assert await app.backend.list_api_keys() == [first]
    assert await app.backend.list_api_keys(None) == [first]


async def test_keys_are_listed_oldest_first_and_by_tenant(app: Conveyor) -> None:
    # Given keys of two tenants and an admin key, stored in this order (ids not in that order)
    await app.open()
    order = [_record("k_00000000000c", "acme"), _record("k_000000000001", "globex"),
             _record("k_00000000000f", None, admin=True), _record("k_000000000002", "acme")]  # fmt: skip
    for rec in order:
        await app.backend.store_api_key(rec)
    # Then all of them are listed in the order they were stored
    assert [k.id for k in await app.backend.list_api_keys()] == [k.id for k in order]
    # And a tenant's listing holds only its keys, in that order (admin keys have no tenant)
    assert [k.id for k in await app.backend.list_api_keys("acme")] == [
        "k_00000000000c", "k_000000000002"
    ]  # fmt: skip
    assert [k.id for k in await app.backend.list_api_keys("globex")] == ["k_000000000001"]
    assert await app.backend.list_api_keys("nobody") == []


async def test_a_key_is_revoked_once_at_the_backends_time(app: Conveyor) -> None:
    # Given a live key
    await app.open()
    rec = _record("k_0000000000dd", "acme")
    await app.backend.store_api_key(rec)
    # When it is revoked twice, and an unknown key once
    before = app.backend.now()
    first = await app.backend.revoke_api_key(rec.id)
    after = app.backend.now()
    second = await app.backend.revoke_api_key(rec.id)
    unknown = await app.backend.revoke_api_key("k_eeeeeeeeeeee")
    # Then only the first changed it, at the backend's time, and it stays listed as revoked
    assert (first, second, unknown) == (True, False, False)
    got = await app.backend.get_api_key(rec.id)
    assert got is not None and got.revoked_at is not None
    assert before - 1 <= got.revoked_at <= after + 1
    assert [(k.id, k.revoked_at) for k in await app.backend.list_api_keys("acme")] == [
        (rec.id, got.revoked_at)
    ]
    # And nothing else of the record changed
    assert astuple(got)[:7] == astuple(rec)[:7]


async def test_a_created_key_is_stored_without_its_secret(app: Conveyor) -> None:
    # When a key is created
    record, full = await app.api_keys.create(tenant="acme", name="billing")
    # Then the full key is cvk_<id>_<secret> with a secret of at least 128 bits
    assert full.startswith(f"cvk_{record.id}_")
    secret = full[len(f"cvk_{record.id}_") :]
    assert len(secret) >= 22  # base64: 6 bits a character
    # And what the backend holds has the secret's sha256, never the secret
    for stored in (await app.backend.get_api_key(record.id), *await app.backend.list_api_keys()):
        assert stored == record
        assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert all(secret not in str(v) for v in astuple(stored))
    assert secret not in repr(record) and secret not in str(record.to_dict())
    assert "secret_hash" not in record.to_dict()


async def test_a_key_verifies_until_it_is_revoked_in_every_process(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    # Given a tenant key and a read-only admin key, created by one app object
    tenant_key, tenant_full = await app.api_keys.create(tenant="acme")
    admin_key, admin_full = await app.api_keys.create(tenant=None, admin=True, read_only=True)
    other = make_app()  # another process would see the same
    # Then each verifies as its own record, there and here
    assert await other.api_keys.verify(tenant_full) == tenant_key
    assert await app.api_keys.verify(admin_full) == admin_key
    assert (tenant_key.tenant, tenant_key.admin, tenant_key.read_only) == ("acme", False, False)
    assert (admin_key.tenant, admin_key.admin, admin_key.read_only) == (None, True, True)
    # And a wrong secret for a real id does not
    wrong = tenant_full[:-4] + ("AAAA" if not tenant_full.endswith("AAAA") else "BBBB")
    assert await other.api_keys.verify(wrong) is None
    # When the tenant key is revoked through the other app object
    assert await other.api_keys.revoke(tenant_key.id) is True
    assert await other.api_keys.revoke(tenant_key.id) is False
    # Then it no longer verifies anywhere; the admin key still does
    assert await app.api_keys.verify(tenant_full) is None
    assert await other.api_keys.verify(tenant_full) is None
    assert await app.api_keys.verify(admin_full) == admin_key
    # And listings show it revoked
    listed = {k.id: k for k in await app.api_keys.list()}
    assert listed[tenant_key.id].revoked_at is not None and listed[admin_key.id].revoked_at is None
    assert [k.id for k in await app.api_keys.list("acme")] == [tenant_key.id]
