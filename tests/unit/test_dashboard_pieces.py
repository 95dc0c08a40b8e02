"""The dashboard's pure pieces: redaction, words and charts, tokens, the list's filters."""

from __future__ import annotations

import hashlib
import re

import pytest
from itsdangerous import URLSafeTimedSerializer

from conveyor.dashboard.filters import JobFilter
from conveyor.dashboard.formatting import REDACTED, chart_points, eta_words, pretty, redact
from conveyor.dashboard.history import History
from conveyor.dashboard.redaction import secret_name
from conveyor.dashboard.tokens import Signer
from conveyor.job import JobState
from conveyor.server import ServerSettings
from conveyor.server.errors import ApiError


def test_secret_looking_fields_are_redacted_at_any_depth() -> None:
    payload = {"user": "ana", "password": "hunter2", "nested": [{"api_key": "k", "n": 1}],
               "Authorization": "Bearer x", "max_tokens": 5, "author": "bo",
               "deep": {"client_secret": {"x": 1}, "session_id": "s-1"}}  # fmt: skip
    assert redact(payload) == {
        "user": "ana", "password": REDACTED, "nested": [{"api_key": REDACTED, "n": 1}],
        "Authorization": REDACTED, "max_tokens": 5, "author": "bo",
        "deep": {"client_secret": REDACTED, "session_id": "s-1"},
    }  # fmt: skip
    # The stored value never reaches the text a page shows
    assert "hunter2" not in pretty(payload)


SECRET_NAMES = [
    "access_tokens", "accessToken", "refresh_token", "jwt", "id_jwt", "key", "KEY", "api_key",
    "apiKey", "APIKey", "x-api-key", "X_API_KEY_2", "apikeys", "api.key", "authorization",
    "Authorization", "auth", "x-auth-token", "cookie", "Set-Cookie", "private_key",
    "privateKey", "client_secret", "clientSecret", "secrets", "password", "myPassword1",
    "pass_word", "passwd", "pwd", "card_number", "cvv", "pin", "otp_code", "ssn", "iban",
    "signing_key", "encryption_keys", "credentials", "oauth", "dsn", "bearer",
]  # fmt: skip
HARMLESS_NAMES = [
    "keyword", "keywords", "monkey", "keyboard", "tokenizer", "tokenizer_name", "max_tokens",
    "completion_tokens", "total_tokens", "token_count", "token_type", "key_id", "apiKeyId",
    "api_key_prefix", "idempotency_key", "cache_key", "public_key", "sort_key", "author",
    "authors", "passenger", "bypass", "spinner", "secretary", "session_id", "user", "name",
    "secret_name", "pinned", "compass",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_field_names_are_redacted(name: str) -> None:
    assert secret_name(name), name
    assert redact({"x": [{name: "s3cr3t", "n": 1}]}) == {"x": [{name: REDACTED, "n": 1}]}


@pytest.mark.parametrize("name", HARMLESS_NAMES)
def test_harmless_field_names_are_shown(name: str) -> None:
    assert not secret_name(name), name
    assert redact({name: "shown"}) == {name: "shown"}


def test_a_huge_value_is_cut_for_the_page() -> None:
    text = pretty({"blob": "x" * 50_000})
    assert len(text) < 21_000 and text.endswith("more characters)")


@pytest.mark.parametrize(("seconds", "words"), [
    (None, "estimating time remaining…"), (20, "less than a minute remaining"),
    (110, "~2 minutes remaining"), (60, "~1 minute remaining"), (3 * 3600, "~3 hours remaining"),
])  # fmt: skip
def test_eta_in_words(seconds: float | None, words: str) -> None:
    assert eta_words(seconds) == words


def test_chart_points_scale_to_the_box() -> None:
    assert chart_points([]) == ""
    pts = [tuple(map(float, p.split(","))) for p in chart_points([0, 5, 10]).split()]
    assert [x for x, _ in pts] == [0.0, 80.0, 160.0]
    assert pts[0][1] == 35.0 and pts[2][1] == 1.0  # 0 at the bottom, the top value at the top


def test_history_rates_failures_between_samples() -> None:
    h = History()
    h.record("q", 1.0, 10, now=0.0)
    h.record("q", 2.0, 10, now=1.0)  # within MIN_GAP: not a new sample
    h.record("q", 3.0, 16, now=3.0)
    assert h.throughput("q") == [1.0, 3.0]
    assert h.failures("q") == [2.0]


def test_tokens_are_signed_scoped_and_expire() -> None:
    signer = Signer(ServerSettings(secret="one"))
    other = Signer(ServerSettings(secret="two"))
    token = signer.batch_token("b-1", "acme", "k_0123456789ab")
    grant = signer.batch_grant(token)
    assert grant is not None
    assert (grant.batch, grant.tenant, grant.key_id) == ("b-1", "acme", "k_0123456789ab")
    assert other.batch_grant(token) is None  # another secret
    # A changed signature (its first character: the last one of base64 holds 2 ignored bits,
    # so changing it alone may decode to the same signature) and a changed payload are refused
    payload, sig = token.rsplit(".", 1)
    assert signer.batch_grant(f"{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}") is None
    assert (
        signer.batch_grant(signer.batch_token("b-2", "acme", None).rsplit(".", 1)[0] + "." + sig)
        is None
    )
    assert signer.batch_grant("x" * 5000) is None
    # A session token is not a batch token (salted apart), and neither holds a key
    session, cookie = signer.new_session("k_0123456789ab")
    assert signer.batch_grant(cookie) is None and signer.session(token) is None
    assert signer.session(cookie) == session
    assert signer.csrf_ok(session, signer.csrf(session))
    assert not signer.csrf_ok(session, signer.csrf(signer.new_session("k_0123456789ab")[0]))
    assert not signer.csrf_ok(session, None)
    # A link of an earlier version (no key id: it could not be revoked) is refused
    earlier = URLSafeTimedSerializer("one", salt="conveyor.dashboard.batch",
                                     signer_kwargs={"digest_method": hashlib.sha256})  # fmt: skip
    assert signer.batch_grant(earlier.dumps({"b": "b-1", "t": "acme"})) is None
    assert signer.batch_grant(earlier.dumps({"b": "b-1", "t": "acme", "k": None})) is not None
    expired = Signer(ServerSettings(secret="one", batch_link_ttl=-1, session_ttl=-1))
    assert expired.batch_grant(token) is None and expired.session(cookie) is None


def test_job_filters_parse_and_refuse_bad_input() -> None:
    f = JobFilter.parse({"status": "failed", "queue": " q ", "id": "01AB", "task": ""})
    assert (f.status, f.queue, f.id, f.task) == (JobState.FAILED, "q", "01ab", None)
    assert f.query(cursor="9") == "status=failed&queue=q&id=01ab&cursor=9"
    for bad in ({"status": "nope"}, {"id": "<script>"}, {"queue": "x" * 600}):
        with pytest.raises(ApiError) as err:
            JobFilter.parse(bad)
        assert err.value.status == 422
    with pytest.raises(ApiError):
        JobFilter.parse({"id": "01ab"}).bulk()  # no bulk action by id prefix


def test_templates_have_no_inline_script_style_or_event_handlers() -> None:
    # The CSP forbids them (script-src/style-src 'self'): one would break silently in browsers
    from conveyor.dashboard.web import HERE

    pages = sorted((HERE / "templates").glob("*.html"))
    assert len(pages) >= 10
    for page in pages:
        text = page.read_text()
        assert not re.search(r"\son[a-z]+\s*=", text, re.IGNORECASE), page.name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), page.name
        assert not re.search(r"\sstyle\s*=|<style", text), page.name
        assert "|safe" not in text and "autoescape false" not in text, page.name
