"""The dashboard's web plumbing: templates (Jinja2, autoescaped), who is looking (`Viewer`,
from the session cookie), CSRF checks of forms, security headers, and HTML error pages.

Every page route uses `HtmlRoute`: a conveyor error becomes an HTML page with the API's status
(404 for another tenant's job, exactly like the API), a missing session a redirect to the login
form, and every answer gets the security headers (a strict CSP without inline scripts or
styles, ``X-Frame-Options: DENY`` unless the page set its own ``frame-ancestors``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jinja2
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.datastructures import FormData

from ..errors import ConveyorError
from ..server.auth import NO_AUTH, Principal, principal_by_id, require_writer
from ..server.errors import ApiError, api_error_of
from ..server.settings import ServerSettings
from . import formatting
from .tokens import SESSION_COOKIE, BatchGrant, Session, Signer

if TYPE_CHECKING:
    from ..app import Conveyor

log = logging.getLogger("conveyor.server")

HERE = Path(__file__).parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
       "frame-ancestors {ancestors}")  # fmt: skip

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every page: payloads, errors and task names are attacker-controlled
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(formatting.FILTERS)
# The macros as a global (not an {% import %} in each page): a page's live block is also
# rendered alone (`render(block=...)`), where a page-level import would not have run.
env.globals["m"] = env.get_template("_macros.html").module


class LoginRequired(Exception):
    """No valid session: the route answers a redirect to the login form."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a page: a logged-in key (``session`` set), or a batch link's holder
    (``grant`` set, read-only, one batch)."""

    principal: Principal
    session: Session | None = None
    csrf: str | None = None
    grant: BatchGrant | None = None

    @property
    def can_write(self) -> bool:
        """Whether to show action buttons (the actions check it again, server-side)."""
        return self.session is not None and not self.principal.read_only

    @property
    def admin(self) -> bool:
        return self.session is not None and self.principal.admin

    @property
    def scope(self) -> str | None:
        """The tenant every read of this viewer is confined to (None: an admin, every one)."""
        if self.grant is not None:
            return self.grant.tenant
        return self.principal.tenant_scope()


def conveyor_of(request: Request) -> Conveyor:
    return request.app.state.conveyor  # type: ignore[no-any-return]


def settings_of(request: Request) -> ServerSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def signer_of(request: Request) -> Signer:
    return request.app.state.dashboard_signer  # type: ignore[no-any-return]


async def session_viewer(request: Request) -> Viewer:
    """The viewer of a logged-in session (`LoginRequired` without one, or once its key was
    revoked: the key is looked up again, cached for ``key_cache_ttl``)."""
    signer = signer_of(request)
    session = signer.session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired
    if session.key_id is None:
        if settings_of(request).auth:  # a --no-auth session on a server that now has auth
            raise LoginRequired
        principal: Principal | None = NO_AUTH
    else:
        principal = await principal_by_id(request, session.key_id)
    if principal is None:
        raise LoginRequired
    viewer = Viewer(principal, session, signer.csrf(session))
    request.state.viewer = viewer
    return viewer


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin (``Origin`` or
    ``Sec-Fetch-Site``): a second line behind the CSRF token and the SameSite cookie."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def writer_form(request: Request) -> tuple[Viewer, FormData]:
    """The viewer and form of a state-changing POST: a valid session whose key may write, and
    the session's CSRF token in the form (403 otherwise, before anything is done)."""
    viewer = await session_viewer(request)
    form = await request.form()
    assert viewer.session is not None
    if not same_origin(request) or not signer_of(request).csrf_ok(viewer.session,
                                                                  form.get("csrf")):  # fmt: skip
        raise ApiError(403, "csrf", "the form's CSRF token is missing or not this session's: "
                       "reload the page and try again")  # fmt: skip
    require_writer(viewer.principal)
    return viewer, form


def render(
    request: Request,
    name: str,
    viewer: Viewer | None,
    status_code: int = 200,
    *,
    block: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """Template ``name`` with ``context`` (``block``: that block alone, the live part a page
    fetches again on updates)."""
    template = env.get_template(name)
    ctx = {"viewer": viewer, "request_path": request.url.path, "query": request.url.query,
           **context}  # fmt: skip
    if block is not None:
        html = "".join(template.blocks[block](template.new_context(ctx)))
    else:
        html = template.render(ctx)
    return HTMLResponse(html, status_code=status_code)


def fragment(request: Request) -> str | None:
    """``live`` when the page asks for its live part only (``?fragment=1``)."""
    return "live" if request.query_params.get("fragment") == "1" else None


def _secure(request: Request, response: Response) -> Response:
    h = response.headers
    if "content-security-policy" not in h:
        h["Content-Security-Policy"] = CSP.format(ancestors="'none'")
        h["X-Frame-Options"] = "DENY"
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")  # batch links carry a token: not elsewhere
    h.setdefault("Cache-Control", "no-store")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    return response


def error_page(request: Request, status: int, message: str) -> Response:
    viewer = getattr(request.state, "viewer", None)
    return render(request, "error.html", viewer, status, status=status, message=message)


class HtmlRoute(APIRoute):
    """A dashboard route: HTML errors, login redirects, security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await inner(request)
            except LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = RedirectResponse(f"/login?{_next(target)}", status_code=303)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()))
                response = error_page(request, 422, f"{where}: {first.get('msg', 'invalid')}")
            except (ApiError, ConveyorError, TimeoutError, ConnectionError) as exc:
                err = api_error_of(exc)
                if err is None:
                    log.error("dashboard: unhandled error on %s", request.url.path, exc_info=exc)
                    response = error_page(request, 500, "internal server error")
                else:
                    if err.status == 503:
                        log.warning("dashboard: backend unavailable on %s: %r",
                                    request.url.path, exc)  # fmt: skip
                    response = error_page(request, err.status, err.message)
                    if err.headers:
                        response.headers.update(err.headers)
            # The server's own time for the page (bench/dashboard.py reads it; so can devtools).
            spent = (time.perf_counter() - started) * 1000
            response.headers.setdefault("Server-Timing", f"app;dur={spent:.1f}")
            return _secure(request, response)

        return handler


def _next(target: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"next": target})


def safe_next(target: str | None) -> str:
    """A post-login redirect target on this site only (never ``//evil`` or a full URL)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/jobs"
    return target


__all__ = [
    "HtmlRoute",
    "LoginRequired",
    "Viewer",
    "conveyor_of",
    "env",
    "error_page",
    "fragment",
    "render",
    "safe_next",
    "same_origin",
    "session_viewer",
    "settings_of",
    "signer_of",
    "writer_form",
]
