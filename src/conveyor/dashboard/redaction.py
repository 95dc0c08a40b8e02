"""Which payload fields the dashboard never shows: a field whose name looks secret has its value
replaced by `REDACTED`, at any depth (payloads, results, prompts, decisions).

A name is split into its words (``snake_case``, ``kebab-case``, ``camelCase``, ``APIKey``,
dots, digits), and is secret when one word is:

- a secret word (`SECRET_WORDS`): ``password``, ``secret``, ``token(s)``, ``jwt``, ``key(s)``,
  ``auth``, ``authorization``, ``cookie``, ``credential``, ``pin`` …, or two words that make one
  (``card_number``);
- or a run-together word holding a secret stem (`SECRET_STEMS`: ``apitoken``, ``myPassword1``),
  except the harmless words that contain one (`HARMLESS_WORDS`: ``tokenizer``, ``secretary``).

Words of a secret name's *kind* keep a name readable: a secret word followed by one of `ABOUT`
names something about the secret, not the secret (``key_id``, ``token_type``, ``secret_name``,
``token_count``); ``tokens`` after one of `COUNTED` is a count of an LLM's tokens
(``max_tokens``, ``completion_tokens``); ``key`` after one of `PUBLIC_KEYS` is an identifier
(``idempotency_key``, ``cache_key``, ``public_key``). Names that merely contain the letters of a
secret word (``keyword``, ``monkey``, ``author``, ``passenger``, ``spinner``) are not words of it.
When in doubt the rule redacts: ``key`` alone is redacted, so is ``sort_key_secret``.

Redaction is for display only: the API returns the stored values to whoever may read the job."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "••• redacted"

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

SECRET_WORDS = frozenset({
    "pass", "password", "passwords", "passwd", "passphrase", "pwd", "secret", "secrets",
    "token", "tokens", "jwt", "jwts", "key", "keys", "auth", "oauth", "authorization", "bearer",
    "credential", "credentials", "creds", "cookie", "cookies", "signature", "cvv", "cvc", "ssn",
    "iban", "otp", "pin", "dsn", "cardnumber",
})  # fmt: skip
SECRET_STEMS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "privatekey",
                "accesskey", "credential", "cookie", "jwt", "authorization")  # fmt: skip
HARMLESS_WORDS = frozenset({
    "tokenizer", "tokenizers", "tokenize", "tokenized", "tokenization", "tokenizing",
    "secretary", "secretaries",
})  # fmt: skip
ABOUT = frozenset({
    "id", "ids", "name", "names", "prefix", "count", "counts", "type", "types", "length",
    "limit", "limits", "usage", "ttl", "expiry", "expires", "url", "uri", "endpoint",
})  # fmt: skip
COUNTED = frozenset({
    "max", "min", "input", "output", "total", "prompt", "completion", "num", "n", "used",
    "remaining", "cached", "reasoning",
})  # fmt: skip
PUBLIC_KEYS = frozenset({
    "idempotency", "cache", "sort", "partition", "primary", "foreign", "dedup", "dedupe",
    "public", "routing", "lookup", "group", "row", "object", "hash", "shard", "unique",
})  # fmt: skip


def words(name: str) -> list[str]:
    """The lower-case words of a field name: ``"xApiKey_2"`` -> ``["x", "api", "key", "2"]``."""
    return [w.lower() for w in _WORD.findall(name)]


def secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (see the module's rule)."""
    ws = words(name)
    for i, w in enumerate(ws):
        before = ws[i - 1] if i else ""
        after = ws[i + 1] if i + 1 < len(ws) else ""
        if after in ABOUT:
            continue
        if w in ("key", "keys") and before in PUBLIC_KEYS:
            continue
        if w in ("token", "tokens") and before in COUNTED:
            continue
        if w in SECRET_WORDS or before + w in SECRET_WORDS:
            return True
        if w not in HARMLESS_WORDS and any(stem in w for stem in SECRET_STEMS):
            return True
    return False


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with the values of secret-looking keys replaced, at any depth."""
    if depth > 50:
        return REDACTED
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and secret_name(k) else redact(v, depth + 1))
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [redact(v, depth + 1) for v in value]
    return value


__all__ = ["REDACTED", "redact", "secret_name", "words"]
