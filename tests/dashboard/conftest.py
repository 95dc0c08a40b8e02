"""Fixtures of the dashboard tests: a real uvicorn serving the API and the dashboard on
loopback (`tests.server.harness.ApiServer`), one headless Chromium for the package (Debian's
``/usr/bin/chromium`` driven by Playwright; never downloaded), and a page per test whose console
errors (CSP violations included) fail the test.

The browser tests are sync functions: Playwright's sync API runs its own loop, and the store
is set up through `Store`, which opens a fresh `Conveyor` in a short ``asyncio.run`` on a thread
of its own."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from conveyor import Conveyor
from conveyor.server import ServerSettings
from tests.conftest import URL_FACTORIES
from tests.dashboard.apps import build_dash_app
from tests.server.harness import ApiServer
from tests.servers import require_binary

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
SECRET = "dashboard-tests-secret"


class Store:
    """Setup and checks on the served store, from sync tests."""

    def __init__(self, url: str) -> None:
        self.url = url

    def run(self, fn: Callable[[Conveyor], Awaitable[T]]) -> T:
        async def go() -> T:
            app = build_dash_app(self.url)
            try:
                await app.open()
                return await fn(app)
            finally:
                await app.close()

        # In a thread of its own: Playwright's sync API keeps an event loop in this one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result()

    def key(self, tenant: str | None = None, *, admin: bool = False,
            read_only: bool = False) -> tuple[str, str]:  # fmt: skip
        """A new API key: (its id, the full key string)."""

        async def make(app: Conveyor) -> tuple[str, str]:
            record, secret = await app.api_keys.create(tenant=tenant, admin=admin,
                                                       read_only=read_only)  # fmt: skip
            return record.id, secret

        return self.run(make)


@pytest.fixture
def dash_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh store: SQLite, or the backend a test names with
    ``@pytest.mark.parametrize("dash_url", ["sqlite", "redis"], indirect=True)``."""
    return URL_FACTORIES[getattr(request, "param", "sqlite")](request, tmp_path)


@pytest.fixture
def store(dash_url: str) -> Store:
    return Store(dash_url)


@pytest.fixture
def dash(dash_url: str, tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """``dash(worker=None, **settings)`` -> a started server (API + dashboard)."""
    started: list[ApiServer] = []

    def start(worker: dict[str, Any] | None = None, **settings: Any) -> ApiServer:
        settings.setdefault("secret", SECRET)
        cfg = ServerSettings(upload_dir=tmp_path / "uploads", **settings)
        srv = ApiServer(lambda: build_dash_app(dash_url), cfg, worker=worker)
        started.append(srv.start())
        return srv

    yield start
    for srv in reversed(started):
        srv.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    require_binary(CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"]
        )
        yield chromium
        chromium.close()


class Console(list[str]):
    """The page's console errors and uncaught exceptions, as text."""

    def expect_none(self) -> None:
        assert list(self) == [], f"console errors: {list(self)}"


@pytest.fixture
def page(browser: Any, dash: Any) -> Iterator[Any]:
    """A browser page whose console errors fail the test. It depends on ``dash`` so that it is
    closed before the servers stop: a live page outliving its server reconnects its stream and
    logs ERR_CONNECTION_REFUSED (a test asking for ``page`` before ``dash`` failed so)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    pg = context.new_page()
    console = Console()
    pg.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda exc: console.append(f"uncaught: {exc}"))
    pg.console = console
    yield pg
    context.close()
    console.expect_none()


def login(page: Any, srv: ApiServer, key: str) -> None:
    """Log ``page`` in with ``key`` through the form."""
    page.goto(f"{srv.url}/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/jobs$"))


@contextmanager
def http_login(srv: ApiServer, key: str) -> Iterator[httpx.Client]:
    """An httpx client holding a session cookie of ``key`` (for crafted requests)."""
    with httpx.Client(base_url=srv.url, timeout=10.0) as c:
        form = c.get("/login")
        r = c.post("/login", data={"key": key, "csrf": csrf_of(form.text), "next": "/jobs"})
        assert r.status_code == 303, r.text
        yield c


def stream_ticks(
    response: httpx.Response,
    on_ready: Callable[[], object],
    until: Callable[[dict[str, Any]], bool] = lambda tick: False,
) -> tuple[list[dict[str, Any]], bool]:
    """Read an open dashboard stream (``/events``): ``on_ready()`` runs once it says ready; the
    ticks are collected until ``until`` accepts one (returns ``(ticks, False)``) or the stream
    ends (``(ticks, True)``)."""
    ticks: list[dict[str, Any]] = []
    event = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
            if event == "ready":
                on_ready()
        elif line.startswith("data:") and event == "tick":
            ticks.append(json.loads(line.split(":", 1)[1]))
            if until(ticks[-1]):
                return ticks, False
    return ticks, True


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m is not None, "no CSRF field on the page"
    return m[1]
