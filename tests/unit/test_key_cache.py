"""The server's cache of verified API keys: a flood of invalid keys cannot evict valid ones."""

from __future__ import annotations

import pytest

from conveyor.server.auth import KeyCache, Principal


def test_a_flood_of_refused_keys_never_evicts_a_valid_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a cache holding one valid key
    monkeypatch.setattr(KeyCache, "MAX", 10)
    cache = KeyCache(ttl=60.0)
    acme = Principal("k_1", "acme")
    cache.put(b"valid", acme)
    # When far more invalid keys than the cache holds are refused
    for i in range(100):
        cache.put(f"bad{i}".encode(), None)
    # Then the valid key is still known, and a recent refusal too
    assert cache.get(b"valid") == (True, acme)
    assert cache.get(b"bad99") == (True, None)
    assert cache.get(b"never-seen") == (False, None)


def test_entries_expire_after_the_ttl() -> None:
    cache = KeyCache(ttl=-1.0)  # already expired when stored
    cache.put(b"valid", Principal("k_1", "acme"))
    cache.put(b"bad", None)
    assert cache.get(b"valid") == (False, None) and cache.get(b"bad") == (False, None)
