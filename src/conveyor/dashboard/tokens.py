"""Signed tokens of the dashboard: the session cookie, its CSRF token, and read-only batch links.

All three are signed with the server's secret (`ServerSettings.secret`) by ``itsdangerous``
(HMAC-SHA256 with a key derived per token kind, and a timestamp: expiry is checked on load). None of
them holds an API key: a session names the key's public id and a random nonce, and the key is
looked up again on every request (a revoked key ends its sessions within ``key_cache_ttl``).

- **Session** ``{"k": key id or None, "n": nonce}``, valid ``session_ttl`` seconds.
- **CSRF token** of a session: HMAC of its nonce (session-bound: a form of another session, or
  a crafted one without it, is refused). Before login, the login form is protected by a
  double-submit cookie (`LOGIN_CSRF_COOKIE`).
- **Batch link** ``{"b": batch id, "t": tenant or None, "k": key id or None}``: read access to
  that batch's page and its event stream only, confined to the tenant of whoever made it, valid
  ``batch_link_ttl`` and while the key that made it is not revoked (``k``, looked up again like a
  session's key: `conveyor.dashboard.batch.batch_viewer`)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer

from ..server.settings import ServerSettings

log = logging.getLogger("conveyor.server")

SESSION_COOKIE = "conveyor_session"
LOGIN_CSRF_COOKIE = "conveyor_login_csrf"
_SESSION_SALT = "conveyor.dashboard.session"
_BATCH_SALT = "conveyor.dashboard.batch"
MAX_TOKEN = 2048


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: the key's id (None under ``--no-auth``) and the session's nonce."""

    key_id: str | None
    nonce: str


@dataclass(frozen=True, slots=True)
class BatchGrant:
    """What a batch link allows: reading ``batch``, within ``tenant`` (None: every tenant's
    jobs of it, a link made by an admin key), while the key ``key_id`` that made it stands
    (None: made under ``--no-auth``)."""

    batch: str
    tenant: str | None
    key_id: str | None


class Signer:
    """Makes and checks the dashboard's tokens with one secret."""

    def __init__(self, settings: ServerSettings) -> None:
        secret = settings.secret
        if secret is None:
            secret = secrets.token_urlsafe(32)
            if settings.auth:
                log.warning("dashboard: no secret configured (CONVEYOR_SECRET): using a random "
                            "one, so logins and batch links end when this process restarts and "
                            "do not work across instances")  # fmt: skip
        self._secret = secret.encode()
        self._settings = settings
        sha256 = {"digest_method": hashlib.sha256}
        self._sessions = URLSafeTimedSerializer(secret, salt=_SESSION_SALT, signer_kwargs=sha256)
        self._batches = URLSafeTimedSerializer(secret, salt=_BATCH_SALT, signer_kwargs=sha256)

    # -- sessions ---------------------------------------------------------------------------------

    def new_session(self, key_id: str | None) -> tuple[Session, str]:
        """A new session of ``key_id`` and its cookie value."""
        session = Session(key_id, secrets.token_urlsafe(16))
        return session, self._sessions.dumps({"k": key_id, "n": session.nonce})

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie carries; None when absent, forged, malformed or expired."""
        data = self._load(self._sessions, cookie, self._settings.session_ttl)
        if not isinstance(data, dict):
            return None
        key_id, nonce = data.get("k"), data.get("n")
        if not isinstance(nonce, str) or not (key_id is None or isinstance(key_id, str)):
            return None
        return Session(key_id, nonce)

    def csrf(self, session: Session) -> str:
        """The CSRF token every state-changing form of ``session`` carries."""
        msg = b"csrf|" + session.nonce.encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, presented: object) -> bool:
        return isinstance(presented, str) and hmac.compare_digest(self.csrf(session), presented)

    # -- batch links ------------------------------------------------------------------------------

    def batch_token(self, batch: str, tenant: str | None, key_id: str | None) -> str:
        """A read-only link token for ``batch`` within ``tenant``, made by the key ``key_id``."""
        return self._batches.dumps({"b": batch, "t": tenant, "k": key_id})

    def batch_grant(self, token: str | None) -> BatchGrant | None:
        """What a batch link token allows; None when forged, malformed or expired, or without
        the key that made it (a link of an earlier version: it could not be revoked)."""
        data = self._load(self._batches, token, self._settings.batch_link_ttl)
        if not isinstance(data, dict) or "k" not in data:
            return None
        batch, tenant, key_id = data.get("b"), data.get("t"), data.get("k")
        if not isinstance(batch, str) or not all(v is None or isinstance(v, str)
                                                 for v in (tenant, key_id)):  # fmt: skip
            return None
        return BatchGrant(batch, tenant, key_id)

    @staticmethod
    def _load(serializer: URLSafeTimedSerializer, token: str | None, ttl: float) -> Any:
        if not token or len(token) > MAX_TOKEN:
            return None
        try:
            return serializer.loads(token, max_age=int(ttl))
        except BadData:
            return None


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two presented strings (the login form's double submit)."""
    return hmac.compare_digest(a.encode(), b.encode())


__all__ = [
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "BatchGrant",
    "Session",
    "Signer",
    "same_secret",
]
