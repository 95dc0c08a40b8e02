"""API keys of the HTTP API: made, checked, listed and revoked, stored through the `Backend`.

A key is ``cvk_<id>_<secret>``: ``id`` is public (``k_`` and 12 hex digits: what listings,
logs and the CLI name), ``secret`` is 32 URL-safe characters from `secrets` (192 random bits).
The full string is returned once by `ApiKeys.create` and never stored: the backend keeps the
hex sha256 of the secret (`ApiKeyRecord.secret_hash`).

Why sha256 and not a slow KDF (bcrypt, scrypt, argon2): those protect *low-entropy* secrets
(passwords) against guessing after a leak of the hashes. A secret of 192 random bits cannot be
guessed whatever the hash's speed, so a fast hash loses nothing, and verifying stays a few
microseconds per request instead of tens of milliseconds (a KDF on every HTTP request would be
the server's main CPU cost and a denial-of-service lever).

`ApiKeys.verify` never raises on what a client presents (any string, or anything else): it
returns None for what is not a live key, compares hashes in constant time
(`hmac.compare_digest`) and never logs the presented string.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from .backends.base import ApiKeyRecord, Backend
from .errors import ValidationError
from .inputs import kind_of
from .options import check_key, check_lookups

PREFIX = "cvk_"
#: A presented key longer than this is refused before any parsing (headers can be large).
MAX_PRESENTED = 256
# cvk_ + id (k_ and 12 lowercase hex digits) + _ + secret; the secret's alphabet is
# token_urlsafe's, which has '_' too: the id's fixed length is what separates them.
_KEY = re.compile(r"cvk_(k_[0-9a-f]{12})_([A-Za-z0-9_-]{16,200})")
_ID = re.compile(r"k_[0-9a-f]{12}")
SECRET_BYTES = 24  # 192 bits: 32 characters of token_urlsafe
_ID_ATTEMPTS = 5  # new ids drawn when one exists already (48 random bits: practically never)


def secret_hash(secret: str) -> str:
    """The stored form of a secret: its sha256 in hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(presented: object) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key string, else None (never raises)."""
    if not isinstance(presented, str) or len(presented) > MAX_PRESENTED:
        return None
    m = _KEY.fullmatch(presented)
    return None if m is None else (m[1], m[2])


def is_key_id(value: object) -> bool:
    """True for a string shaped like a key id (``k_`` and 12 hex digits)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


class ApiKeys:
    """Create, verify, list and revoke API keys on ``backend``.

    Args:
        backend: where the records live (`Backend.store_api_key` and friends).
        opener: awaited before the first backend call of each method (``app.open``: the app
            opens its backend once and knows when it closed); default: ``backend.open`` once.
    """

    def __init__(
        self, backend: Backend, *, opener: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.backend = backend
        self._opener = opener
        self._opened = False

    async def _open(self) -> None:
        if self._opener is not None:
            await self._opener()
        elif not self._opened:
            await self.backend.open()
            self._opened = True

    async def create(
        self,
        *,
        tenant: str | None,
        admin: bool = False,
        read_only: bool = False,
        name: str | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Make and store a key; returns its record and the full key string, shown once:
        ``"cvk_<id>_<secret>"`` (192 random bits of secret). Only sha256(secret) is stored.

        A non-admin key belongs to one ``tenant`` (validated like job tenants) and sees only
        that tenant's jobs. An admin key sees every tenant, so it takes no tenant: passing one
        is refused rather than leaving it unclear whether the key is scoped. ``read_only`` keys
        may read but not change anything. Raises `ValidationError` naming the problem."""
        for flag, value in (("admin", admin), ("read_only", read_only)):
            if not isinstance(value, bool):
                raise ValidationError(f"{flag} must be True or False, got {kind_of(value)}",
                                      field=flag)  # fmt: skip
        if admin and tenant is not None:
            raise ValidationError(
                "an admin key sees every tenant: create it without a tenant", field="tenant"
            )
        if not admin and tenant is None:
            raise ValidationError(
                "a key that is not an admin key needs a tenant (the only jobs it may see)",
                field="tenant",
            )
        if tenant is not None:
            check_key(tenant, "tenant")
        if name is not None:
            check_key(name, "name")
        await self._open()
        for _ in range(_ID_ATTEMPTS):
            secret = secrets.token_urlsafe(SECRET_BYTES)
            record = ApiKeyRecord(
                id="k_" + secrets.token_hex(6),
                secret_hash=secret_hash(secret),
                tenant=tenant,
                admin=admin,
                read_only=read_only,
                name=name,
                created_at=self.backend.now(),
            )
            try:
                await self.backend.store_api_key(record)
            except ValidationError:
                continue  # the id exists: draw another
            return record, f"{PREFIX}{record.id}_{secret}"
        raise ValidationError("could not draw an unused API key id; try again", field="id")

    async def verify(self, presented: Any) -> ApiKeyRecord | None:
        """The live (not revoked) key ``presented`` is, else None. Parses the id, loads the
        record and compares hashes in constant time. Never raises on malformed input (backend
        errors, e.g. `BackendUnavailable`, do propagate) and never logs ``presented``."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        await self._open()
        record = await self.backend.get_api_key(key_id)
        # Hash either way: an unknown id costs what a wrong secret does.
        digest = secret_hash(secret)
        if record is None or record.revoked_at is not None:
            return None
        if not hmac.compare_digest(record.secret_hash, digest):
            return None
        return record

    async def list(self, tenant: str | None = None) -> builtins.list[ApiKeyRecord]:
        """The stored keys, oldest first, revoked ones too (``revoked_at`` set); only
        ``tenant``'s when given (admin keys have none), every key when None."""
        check_lookups(tenant=tenant)
        await self._open()
        return await self.backend.list_api_keys(tenant)

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The record of ``key_id`` (revoked ones too), or None."""
        if not is_key_id(key_id):
            return None
        await self._open()
        return await self.backend.get_api_key(key_id)

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key for good (`verify` refuses it from now on, in every process). True if
        it was live; False when it was revoked already or is unknown. Idempotent."""
        if not is_key_id(key_id):
            return False
        await self._open()
        return await self.backend.revoke_api_key(key_id)


__all__ = ["MAX_PRESENTED", "PREFIX", "ApiKeys", "is_key_id", "parse_key", "secret_hash"]
