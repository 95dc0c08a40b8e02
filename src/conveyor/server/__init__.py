"""The HTTP API (``conveyor serve``; needs ``conveyor[server]``): FastAPI routes over the same
producer API and `Backend` the library uses. `create_app` builds it for one conveyor app."""

from __future__ import annotations

from .app import create_app
from .auth import Principal
from .settings import ServerSettings

__all__ = ["Principal", "ServerSettings", "create_app"]
