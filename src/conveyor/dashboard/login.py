"""``/login`` and ``/logout``: an API key in, a session cookie out.

The key is verified exactly as the API verifies a bearer key (`conveyor.server.auth`); the
cookie holds a signed session naming the key's public id, never the key (`tokens.Signer`). It is
HttpOnly, SameSite=Strict, Secure when the page was served over https, and lasts
``session_ttl``. The login form itself is CSRF-protected by a double-submit cookie (no login
CSRF: another site cannot log a browser into its own key)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from ..server.auth import verify_key
from ..server.errors import ApiError
from .tokens import LOGIN_CSRF_COOKIE, SESSION_COOKIE, same_secret
from .web import (
    HtmlRoute,
    conveyor_of,
    render,
    safe_next,
    same_origin,
    session_viewer,
    settings_of,
    signer_of,
)

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

MAX_KEY_FIELD = 512


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/")
async def home(request: Request) -> Response:
    await session_viewer(request)  # not logged in: the login form
    return RedirectResponse("/jobs", status_code=303)


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    return _form(request, next, None, 200)


def _form(request: Request, next: str | None, message: str | None, status: int) -> Response:
    token = secrets.token_urlsafe(16)
    response = render(request, "login.html", None, status, csrf=token, next=safe_next(next),
                      message=message, auth=settings_of(request).auth)  # fmt: skip
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/login", httponly=True,
                        samesite="strict", secure=_secure(request))  # fmt: skip
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    presented, expected = form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)
    if (not same_origin(request) or not isinstance(presented, str) or expected is None
            or not same_secret(presented, expected)):  # fmt: skip
        raise ApiError(403, "csrf", "the login form expired or came from another site: "
                       "reload it and try again")  # fmt: skip
    next_ = form.get("next")
    target = safe_next(next_ if isinstance(next_, str) else None)
    settings = settings_of(request)
    key_id: str | None = None
    if settings.auth:
        key = form.get("key")
        key = key.strip() if isinstance(key, str) else ""
        principal = None
        if key and len(key) <= MAX_KEY_FIELD:
            principal = await verify_key(conveyor_of(request), request.app.state.key_cache, key,
                                      settings)  # fmt: skip
        if principal is None or principal.key_id is None:
            return _form(request, target, "That is not a valid API key (unknown, mistyped or "
                         "revoked).", 401)  # fmt: skip
        key_id = principal.key_id
    _, cookie = signer_of(request).new_session(key_id)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=int(settings.session_ttl), path="/",
                        httponly=True, samesite="strict", secure=_secure(request))  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    viewer = await session_viewer(request)
    form = await request.form()
    assert viewer.session is not None
    if not same_origin(request) or not signer_of(request).csrf_ok(viewer.session,
                                                                  form.get("csrf")):  # fmt: skip
        raise ApiError(403, "csrf", "the form's CSRF token is missing or not this session's")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_secure(request))  # fmt: skip
    return response
