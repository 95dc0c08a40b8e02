"""Who is calling: `Principal` from the ``Authorization: Bearer <key>`` header, and the
per-key request rate limit.

A key belongs to one tenant, or is an admin key (all tenants). Verification asks the backend
(`conveyor.apikeys.ApiKeys.verify`: sha256 of the secret compared in constant time) and keeps the
answer for ``key_cache_ttl`` seconds, keyed by a hash of the presented string (never the string
itself), so that a request costs no backend round trip for its key; a revoked key stops working
within that time on every instance. The rate limit is a token bucket per key in this process:
with N instances behind a balancer a key gets up to N times the rate, the usual trade of a
stateless API for not touching the backend on every request."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from .deadline import backend_deadline
from .errors import ApiError

if TYPE_CHECKING:
    from ..app import Conveyor
    from ..backends.base import ApiKeyRecord
    from .settings import ServerSettings


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. ``tenant`` is None only for admin keys (and ``--no-auth``)."""

    key_id: str | None
    tenant: str | None
    admin: bool = False
    read_only: bool = False

    def tenant_scope(self, requested: str | None = None) -> str | None:
        """The tenant a read or action is confined to: a tenant key's own tenant (naming another
        is refused with 403, never silently answered for its own); for an admin, the tenant it
        asked for (None: every tenant)."""
        if self.admin:
            return requested
        if requested is not None and requested != self.tenant:
            raise ApiError(403, "forbidden", "a tenant API key can only name its own tenant")
        return self.tenant

    def owns(self, tenant: str | None) -> bool:
        """Whether this caller may see an object of ``tenant``."""
        return self.admin or (self.tenant is not None and tenant == self.tenant)


NO_AUTH = Principal(key_id=None, tenant=None, admin=True)


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """Token buckets per key: ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> float:
        """0.0 if the request may go on, else the seconds until a token is free."""
        now = time.monotonic()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) > 100_000:  # keys come and go: forget idle buckets
                self._buckets.clear()
            b = self._buckets[key] = _Bucket(float(self.burst), now)
        b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate


class KeyCache:
    """Verified keys by the sha256 of the presented string, for ``ttl`` seconds. Refused strings
    are kept apart, so a flood of invalid keys can only flush the refusals, never the valid
    keys' entries."""

    MAX = 100_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._valid: dict[bytes, tuple[float, Principal]] = {}
        self._refused: dict[bytes, float] = {}

    def get(self, digest: bytes) -> tuple[bool, Principal | None]:
        now = time.monotonic()
        hit = self._valid.get(digest)
        if hit is not None and hit[0] > now:
            return True, hit[1]
        until = self._refused.get(digest)
        if until is not None and until > now:
            return True, None
        return False, None

    def put(self, digest: bytes, principal: Principal | None) -> None:
        until = time.monotonic() + self.ttl
        if principal is None:
            if len(self._refused) > self.MAX:
                self._refused.clear()
            self._refused[digest] = until
            return
        if len(self._valid) > self.MAX:
            self._valid.clear()
        self._valid[digest] = (until, principal)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <api key>'")
    return token.strip()


async def authenticate(request: Request) -> Principal:
    """The caller of this request (401 without a valid key), charged one request of its key's
    rate (429 with ``Retry-After`` when over it)."""
    state = request.app.state
    settings: ServerSettings = state.settings
    if not settings.auth:
        return NO_AUTH
    token = bearer_token(request)
    if token is None:
        raise _unauthorized("an API key is required: send 'Authorization: Bearer <api key>'")
    principal = await verify_key(state.conveyor, state.key_cache, token, settings)
    if principal is None:
        raise _unauthorized("the API key is not valid (unknown, malformed or revoked)")
    charge(request, principal)
    return principal


def charge(request: Request, principal: Principal) -> None:
    """Take one request of ``principal``'s key rate (429 with ``Retry-After`` when over it):
    API calls and dashboard requests of a key alike."""
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None and principal.key_id is not None:
        wait = limiter.take(principal.key_id)
        if wait > 0:
            raise ApiError(429, "rate_limited",
                           f"too many requests for this API key; retry in {wait:.2f}s",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})  # fmt: skip


async def verify_key(
    app: Conveyor, cache: KeyCache, token: str, settings: ServerSettings
) -> Principal | None:
    # "key:" keeps presented strings apart from the sessions' "id:" entries (`principal_by_id`)
    # in the one cache: without it, "Bearer id:<a public key id>" hit a session's entry.
    digest = hashlib.sha256(b"key:" + token.encode("utf-8", "surrogatepass")).digest()
    known, principal = cache.get(digest)
    if known:
        return principal
    async with backend_deadline(settings):
        record = await app.api_keys.verify(token)
    principal = principal_of(record)
    cache.put(digest, principal)
    return principal


def principal_of(record: ApiKeyRecord | None) -> Principal | None:
    """The caller a live key record stands for (None for no record or a revoked key)."""
    if record is None or record.revoked_at is not None:
        return None
    return Principal(record.id, record.tenant, admin=record.admin, read_only=record.read_only)


async def principal_by_id(request: Request, key_id: str) -> Principal | None:
    """The caller behind a dashboard session: the key ``key_id`` as stored now (None once it is
    revoked or deleted), cached like presented keys (``key_cache_ttl``)."""
    state = request.app.state
    digest = hashlib.sha256(b"id:" + key_id.encode("utf-8", "surrogatepass")).digest()
    cache: KeyCache = state.key_cache
    known, principal = cache.get(digest)
    if known:
        return principal
    async with backend_deadline(state.settings):
        record = await state.conveyor.api_keys.get(key_id)
    principal = principal_of(record)
    cache.put(digest, principal)
    return principal


async def still_live(request: Request, key_id: str | None) -> bool:
    """Whether the key ``key_id`` still stands (not revoked or deleted), read again through the
    key cache (`principal_by_id`): what a long-lived stream asks before each turn, so that a
    revoked key stops receiving within ``key_cache_ttl``. None (``--no-auth``) always stands."""
    return key_id is None or await principal_by_id(request, key_id) is not None


def require_writer(principal: Principal) -> Principal:
    """``principal`` if it may change things; 403 for a read-only key (the API's and the
    dashboard's one check)."""
    if principal.read_only:
        raise ApiError(403, "forbidden", "this API key is read-only")
    return principal


def require_admin(principal: Principal) -> Principal:
    """``principal`` if it is an admin key; 403 for a tenant key."""
    if not principal.admin:
        raise ApiError(403, "forbidden", "this route needs an admin API key")
    return principal


async def writer(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A caller that may change things (403 for a read-only key)."""
    return require_writer(principal)


async def admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """An admin caller (403 for a tenant key)."""
    return require_admin(principal)


async def admin_writer(principal: Annotated[Principal, Depends(admin)]) -> Principal:
    return require_writer(principal)


#: Route parameter types: ``principal: Reader`` and so on.
Reader = Annotated[Principal, Depends(authenticate)]
Writer = Annotated[Principal, Depends(writer)]
Admin = Annotated[Principal, Depends(admin)]
AdminWriter = Annotated[Principal, Depends(admin_writer)]
