"""`conveyor.apikeys.ApiKeys` on a real SQLite file: the key format, what ``create`` refuses,
and ``verify``, which says None (never raises) for anything that is not a live key."""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from conveyor import Conveyor, ValidationError
from conveyor.apikeys import MAX_PRESENTED, ApiKeys, parse_key

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "conveyor-hypothesis")


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Conveyor]:
    a = Conveyor(f"sqlite:///{tmp_path}/keys.db")
    yield a
    await a.close()


async def test_a_created_key_has_the_documented_shape_and_verifies(app: Conveyor) -> None:
    # When a tenant key is created
    record, full = await app.api_keys.create(tenant="acme", read_only=True, name="reports")
    # Then it is cvk_<id>_<secret>: a k_ id of 12 hex digits, 32 URL-safe characters of secret
    m = re.fullmatch(r"cvk_(k_[0-9a-f]{12})_([A-Za-z0-9_-]{32})", full)
    assert m is not None and m[1] == record.id
    assert record.secret_hash == hashlib.sha256(m[2].encode()).hexdigest()
    assert (record.tenant, record.admin, record.read_only, record.name) == (
        "acme", False, True, "reports"
    )  # fmt: skip
    assert record.created_at > 0 and record.revoked_at is None
    # And it verifies as that record
    assert await app.api_keys.verify(full) == record


async def test_two_keys_never_share_an_id_or_a_secret(app: Conveyor) -> None:
    made = [await app.api_keys.create(tenant="acme") for _ in range(20)]
    assert len({r.id for r, _ in made}) == 20 and len({full for _, full in made}) == 20


async def test_a_wrong_secret_and_a_revoked_key_are_refused(app: Conveyor) -> None:
    # Given a live key
    record, full = await app.api_keys.create(tenant="acme")
    secret = full[len(f"cvk_{record.id}_") :]
    # Then another secret of the same shape for its id does not verify, nor one a character off
    other = "A" * 32 if secret != "A" * 32 else "B" * 32
    flipped = secret[:-1] + ("x" if secret[-1] != "x" else "y")
    for wrong in (other, flipped, secret[:-1], secret + "A"):
        assert await app.api_keys.verify(f"cvk_{record.id}_{wrong}") is None
    # And another id with its secret does not either
    assert await app.api_keys.verify(f"cvk_k_000000000000_{secret}") is None
    # When it is revoked, its own string no longer verifies
    assert await app.api_keys.revoke(record.id) is True
    assert await app.api_keys.verify(full) is None


def _malformed(real: str) -> list[Any]:
    key_id, secret = real[4:18], real[19:]
    return [
        "", " ", "cvk_", "cvk__", "Bearer " + real, real + " ", " " + real, real + "\n",
        real[4:], key_id, secret, f"{key_id}_{secret}",  # no prefix
        "CVK_" + real[4:], real.upper(), real.replace("cvk_", "cvk-", 1),
        f"cvk_{key_id}{secret}", f"cvk_{key_id}__{secret}", f"cvk__{key_id}_{secret}",
        f"cvk_{key_id}_{secret}_", f"cvk_{key_id}_{secret}_extra", f"cvk_{key_id}_a_b_c",
        f"cvk_k_{key_id[2:].upper()}_{secret}", f"cvk_k_{key_id[2:-1]}_{secret}",
        f"cvk_k_{key_id[2:]}0_{secret}", f"cvk_{key_id}_", f"cvk_{key_id}_é" + secret[1:],
        f"cvk_{key_id}_{secret[:-1]}\u0665", "cvk_k_" + "\u0660" * 12 + "_" + secret,  # non-ASCII digits
        f"cvk_{key_id}_{secret}\x00", "cvk_" + "k_" * 200, real * 10, "x" * 1_000_000,
        "cvk_k_000000000000_" + "A" * (MAX_PRESENTED * 4), "\ud800", f"cvk_{key_id}_\udfff",
        None, 12, 1.5, b"cvk_", real.encode(), [real], {"key": real}, object(),
    ]  # fmt: skip


async def test_malformed_keys_of_every_shape_are_refused_without_raising(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a live key, and strings around it of every wrong shape
    _, real = await app.api_keys.create(tenant="acme")
    caplog.set_level(logging.DEBUG)
    # When each is presented, then it is refused (None), never an exception
    for presented in _malformed(real):
        assert await app.api_keys.verify(presented) is None, repr(presented)[:80]
    # And nothing presented reaches a log line
    assert real[19:] not in caplog.text and "cvk_" not in caplog.text


@settings(max_examples=300, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.text(max_size=300) | st.binary(max_size=40).map(lambda b: "cvk_k_" + b.hex()))
def test_parsing_any_text_never_raises(presented: str) -> None:
    # Then any text parses to None or an (id, secret) pair of the documented shape
    parsed = parse_key(presented)
    if parsed is not None:
        assert re.fullmatch(r"k_[0-9a-f]{12}", parsed[0]) and presented.startswith("cvk_")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"tenant": None}, "needs a tenant"),
        ({"tenant": "acme", "admin": True}, "admin key sees every tenant"),
        ({"tenant": ""}, "tenant must be a non-empty string"),
        ({"tenant": "x" * 513}, "tenant must be a non-empty string"),
        ({"tenant": "a\x00b"}, "tenant"),
        ({"tenant": 7}, "tenant must be a non-empty string"),
        ({"tenant": "acme", "name": ""}, "name must be a non-empty string"),
        ({"tenant": "acme", "name": "\ud800"}, "name"),
        ({"tenant": "acme", "admin": "yes"}, "admin must be True or False"),
        ({"tenant": "acme", "read_only": 1}, "read_only must be True or False"),
    ],
)
async def test_create_refuses_bad_input_naming_it_and_stores_nothing(
    app: Conveyor, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError) as err:
        await app.api_keys.create(**kwargs)
    assert problem in str(err.value)
    assert await app.api_keys.list() == []


async def test_malformed_ids_are_unknown_to_revoke_and_get(app: Conveyor) -> None:
    # Given a live key
    record, full = await app.api_keys.create(tenant="acme")
    # Then ids of another shape are neither found nor revoked, and the key stays live
    for bad in ("", "k_", "K_" + record.id[2:], record.id + "0", full, "\ud800", None, 3):
        assert await app.api_keys.get(bad) is None  # type: ignore[arg-type]
        assert await app.api_keys.revoke(bad) is False  # type: ignore[arg-type]
    assert await app.api_keys.get(record.id) == record
    assert await app.api_keys.verify(full) == record


async def test_api_keys_work_on_a_backend_of_their_own(tmp_path: Path) -> None:
    # Given ApiKeys on a backend no app opened (as the HTTP server may hold one)
    from conveyor.backends import open_backend

    backend = open_backend(f"sqlite:///{tmp_path}/own.db")
    keys = ApiKeys(backend)
    try:
        # Then it opens the backend itself, and keys verify
        record, full = await keys.create(tenant=None, admin=True)
        assert await keys.verify(full) == record
        assert await keys.list() == [record]
    finally:
        await backend.close()
