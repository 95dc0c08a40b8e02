"""A Redis password never reaches an error message (and so never a log line)."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from conveyor.backends.redis.backend import RedisBackend
from conveyor.errors import BackendUnavailable

SECRET = "s3cret-pw-1234"


async def test_a_lost_connection_while_finishing_does_not_name_the_password() -> None:
    # Given a backend whose URL carries a password
    backend = RedisBackend(f"redis://:{SECRET}@127.0.0.1:1/0")
    # When a batch of finish scripts comes back with a lost connection
    with pytest.raises(BackendUnavailable) as caught:
        await backend._attempts._finish_results("w1", [], [RedisConnectionError("gone")], [])
    # Then the error says where Redis is, not how to log in
    assert SECRET not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
