"""The SQLite backend's URL: the file path and the connection options (see `backend`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from ...errors import ConfigurationError

_SYNC = {"normal": "NORMAL", "full": "FULL", "off": "OFF", "extra": "EXTRA"}


def parse_sqlite_url(url: str) -> tuple[str, dict[str, Any]]:
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    # "sqlite:/x.db" and "sqlite:x.db" parse, but are a slash or two short of what was meant.
    if parts.netloc or not url[len("sqlite:") :].startswith("//"):
        raise ConfigurationError(
            f"malformed sqlite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigurationError(f"malformed sqlite URL {url!r}: no file path")
    opts: dict[str, Any] = {"synchronous": "NORMAL", "busy_timeout": 10.0}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        value = values[-1]
        if key == "synchronous":
            if value.lower() not in _SYNC:
                raise ConfigurationError(
                    f"sqlite URL option synchronous={value!r}: use one of {', '.join(_SYNC)}"
                )
            opts["synchronous"] = _SYNC[value.lower()]
        elif key == "busy_timeout":
            try:
                opts["busy_timeout"] = float(value)
            except ValueError:
                raise ConfigurationError(
                    f"sqlite URL option busy_timeout={value!r} is not a number of seconds"
                ) from None
            if opts["busy_timeout"] < 0:
                raise ConfigurationError("sqlite URL option busy_timeout must be >= 0")
        else:
            raise ConfigurationError(f"unknown sqlite URL option {key!r} in {url!r}")
    return path, opts


__all__ = ["parse_sqlite_url"]
