"""The web dashboard of ``conveyor serve``, at ``/`` beside the API (``/v1``): server-rendered
pages (Jinja2, autoescaped) with a little of our own JavaScript for live updates over a
cookie-authenticated event stream. See docs/dashboard.md.

`install` adds it to the API's FastAPI app; `create_app` calls it unless
``ServerSettings.dashboard`` is False."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ..server.settings import ServerSettings
from .history import History
from .tokens import Signer
from .web import HERE


def install(api: FastAPI, settings: ServerSettings) -> None:
    """Serve the dashboard's pages, event stream and static files on ``api``. Raises
    ValueError for a ``frame_ancestors`` source that could end the CSP directive."""
    for source in settings.frame_ancestors:
        if not source or any(c in source for c in ";,\r\n\t ") or not source.isprintable():
            raise ValueError(f"frame_ancestors: {source!r} is not one CSP source (e.g. 'self' "
                             "or https://app.example.com)")  # fmt: skip
    from . import batch, login, ops, pages, stream

    api.state.dashboard_signer = Signer(settings)
    api.state.dashboard_history = History()
    api.include_router(batch.api_router)
    for module in (login, batch, stream, ops, pages):
        api.include_router(module.router)
    api.mount("/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")


__all__ = ["install"]
