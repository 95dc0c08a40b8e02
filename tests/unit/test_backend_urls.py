"""``open_backend``: a bad URL is a `ConfigurationError` naming the problem, before any I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import ConfigurationError, Conveyor
from conveyor.backends import open_backend
from conveyor.backends.sqlite.backend import parse_sqlite_url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "non-empty"),
        ("conveyor.db", "unknown scheme ''"),
        ("ftp://host/x.db", "unknown scheme 'ftp'"),
        ("mysql://localhost/db", "unknown scheme 'mysql'"),
        ("http://[::1", "malformed"),
        ("sqlite://host/x.db", "malformed sqlite URL"),
        ("sqlite://", "malformed sqlite URL"),
        ("sqlite:///", "no file path"),
        ("sqlite:/x.db", "malformed sqlite URL 'sqlite:/x.db'"),
        ("sqlite:x.db", "malformed sqlite URL"),
        ("redis://localhost:6379/0?prefx=a", "unknown redis URL option 'prefx'"),
        ("redis+cluster://localhost:7000?prefx=a", "unknown redis URL option 'prefx'"),
        ("redis://localhost:6379/0?socket_timeout=soon", "socket_timeout='soon'"),
        ("sqlite:///x.db?bogus=1", "unknown sqlite URL option 'bogus'"),
        ("sqlite:///x.db?synchronous=sometimes", "synchronous='sometimes'"),
        ("sqlite:///x.db?busy_timeout=soon", "busy_timeout='soon'"),
        ("sqlite:///x.db?busy_timeout=-1", "busy_timeout"),
        ("postgresql://localhost/db?schema=Bad-Name", "schema="),
        ("postgres://localhost/db?pool_max=lots", "pool_max="),
    ],
)
def test_bad_urls_are_configuration_errors_naming_the_problem(url: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        open_backend(url)
    assert words in str(err.value)
    assert isinstance(err.value, ValueError)
    # And the same error comes from the Conveyor constructor ("" there means the default URL)
    if url:
        with pytest.raises(ConfigurationError):
            Conveyor(url)


def test_non_string_url() -> None:
    with pytest.raises(ConfigurationError):
        open_backend(None)  # type: ignore[arg-type]


def test_constructing_does_no_io(tmp_path: Path) -> None:
    # Given a URL naming a file in a directory that does not exist
    url = f"sqlite:///{tmp_path}/missing/dir/conveyor.db"
    # Then constructing the app succeeds (errors come when it opens) and creates nothing
    Conveyor(url)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    ("url", "path", "sync", "busy"),
    [
        ("sqlite:///conveyor.db", "conveyor.db", "NORMAL", 10.0),
        ("sqlite:///data/q.db", "data/q.db", "NORMAL", 10.0),
        ("sqlite:////var/lib/q.db", "/var/lib/q.db", "NORMAL", 10.0),
        ("sqlite:///q.db?synchronous=full", "q.db", "FULL", 10.0),
        ("sqlite:///q.db?synchronous=NORMAL&busy_timeout=0.5", "q.db", "NORMAL", 0.5),
    ],
)
def test_sqlite_url_forms(url: str, path: str, sync: str, busy: float) -> None:
    got_path, opts = parse_sqlite_url(url)
    assert got_path == path
    assert opts == {"synchronous": sync, "busy_timeout": busy}


def test_default_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_URL", "sqlite:///from-env.db")
    assert Conveyor().url == "sqlite:///from-env.db"
    monkeypatch.delenv("CONVEYOR_URL")
    assert Conveyor().url == "sqlite:///conveyor.db"


def test_a_misspelled_redis_option_names_the_likely_one() -> None:
    # When a Redis URL option is misspelled
    with pytest.raises(ConfigurationError) as err:
        Conveyor("redis://localhost:6379/0?prefx=a")
    # Then the one-line error suggests the option meant
    assert "did you mean 'prefix'" in str(err.value)
    assert "\n" not in str(err.value)
