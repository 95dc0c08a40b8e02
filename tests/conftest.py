"""Shared fixtures: the backend-parametrized `app`, the test servers, `worker_processes` (real
worker processes, ``tests/workers.py``), and `eventually` for polling.

Every test in ``tests/conformance`` takes `app` (or `backend_url`), so it runs once per backend in
`BACKENDS`: SQLite, a single Redis server, a 3-master Redis Cluster and PostgreSQL (each server
started once per session; a fresh key prefix, or PostgreSQL schema, per test isolates it). A backend is added by writing one URL
factory below (it may start a server) and putting its name in `BACKENDS`; no conformance test
changes.

Missing servers: a factory that needs a server binary (``tests/servers.py``, `require_binary`)
skips the test locally with the reason, but fails it when the environment says ``CI=true``: a
silently skipped backend suite would hide a broken backend. ``CONVEYOR_TEST_BACKENDS=sqlite,redis``
runs the suite on a chosen list of backends; under ``CI=true`` it may add backends not yet in
`BACKENDS` but never drop one. ``tests/guards.py`` makes the rest of the suite as strict: under
``CI=true`` nothing is skipped or deselected, and every test fails on an unexpected ERROR log or
an exception its event loop did not handle.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from conveyor import Conveyor, Event, Job

if TYPE_CHECKING:
    from tests.workers import WorkerProcesses

# tests.guards: CI strictness and the error watch (see its docstring); pytester tests the guards.
pytest_plugins = ["pytester", "tests.guards"]

#: Backends every conformance test runs on.
BACKENDS = ["sqlite", "redis", "redis-cluster", "postgres"]


def _sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # A fresh file per test: isolation without any cleanup.
    return f"sqlite:///{tmp_path}/conveyor.db"


def _redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # One server per session (started on first use); a fresh key prefix per test isolates it.
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=t{uuid.uuid4().hex[:12]}"


def _redis_cluster_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # One 3-master cluster per session; a fresh key prefix per test isolates it.
    cluster = request.getfixturevalue("redis_cluster")
    return f"{cluster.url}?prefix=t{uuid.uuid4().hex[:12]}"


def _postgres_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # One cluster per session; a fresh PostgreSQL schema per test isolates it.
    server = request.getfixturevalue("postgres_server")
    return f"{server.url}?schema=t{uuid.uuid4().hex[:12]}"


#: name -> factory(request, tmp_path) returning a fresh, empty backend URL for one test.
URL_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "sqlite": _sqlite_url,
    "redis": _redis_url,
    "redis-cluster": _redis_cluster_url,
    "postgres": _postgres_url,
}


def _selected_backends() -> list[str]:
    wanted = os.environ.get("CONVEYOR_TEST_BACKENDS")
    return [n.strip() for n in wanted.split(",") if n.strip()] if wanted else BACKENDS


def pytest_configure(config: pytest.Config) -> None:
    from tests.servers import IN_CI  # (tests.servers imports this module)

    names = _selected_backends()
    unknown = [n for n in names if n not in URL_FACTORIES]
    if unknown:
        raise pytest.UsageError(
            f"CONVEYOR_TEST_BACKENDS: unknown backends {unknown} (known: {list(URL_FACTORIES)})"
        )
    dropped = [n for n in BACKENDS if n not in names]
    if IN_CI and dropped:
        raise pytest.UsageError(
            f"CI=true runs every backend, but CONVEYOR_TEST_BACKENDS drops {dropped}: unset it "
            f"(it may add backends, never remove one), or unset CI to run fewer locally."
        )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.servers import RedisServer  # skips (or fails in CI) when redis-server is missing

    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A PostgreSQL cluster for the session (initdb in a temp dir); tests isolate themselves
    by PostgreSQL schema."""
    from tests.servers import PostgresServer  # skips (or fails in CI) without initdb

    srv = PostgresServer(tmp_path_factory.mktemp("postgres"))
    yield srv
    srv.remove()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 3-master Redis Cluster for the session; tests isolate themselves by key prefix."""
    from tests.servers import RedisCluster

    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def worker_processes(tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Worker processes for this test (``tests/workers.py``): killed at teardown, their output's
    ERROR lines reported to the error watch."""
    from tests.workers import WorkerProcesses

    pool = WorkerProcesses(tmp_path)
    try:
        yield pool
    finally:
        pool.cleanup()


@pytest.fixture(params=_selected_backends())
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_url(request: pytest.FixtureRequest, backend_name: str, tmp_path: Path) -> str:
    """A fresh, empty store of the parametrized backend, as a URL."""
    return URL_FACTORIES[backend_name](request, tmp_path)


@pytest.fixture
async def make_app(backend_url: str) -> AsyncIterator[Callable[..., Conveyor]]:
    """Factory for extra `Conveyor` objects on the same store (another "process", or options
    such as ``retention=``); each is closed at teardown."""
    made: list[Conveyor] = []

    def factory(**kwargs: Any) -> Conveyor:
        a = Conveyor(backend_url, **kwargs)
        made.append(a)
        return a

    yield factory
    for a in reversed(made):
        await a.close()


@pytest.fixture
async def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    """A `Conveyor` on a fresh store of the parametrized backend (closed at teardown)."""
    return make_app()


#: Workers in tests of due times (delays, retry backoffs) poll only this often by themselves, and
#: a due job may start at most `LATE` seconds after its due time: far above a loaded CI machine's
#: scheduling noise, far below the poll, so a worker that slept until its next poll instead of
#: waking at the due time fails the test. "Never early" alone would not catch that.
SLOW_POLL = 5.0
LATE = 1.0

#: How long `eventually` waits by default. Generous on purpose: a passing test never waits it out,
#: and a loaded CI machine may take seconds for what a laptop does in milliseconds.
EVENTUALLY_TIMEOUT = 15.0


def _timed_out(
    predicate: Callable[[], Any], timeout: float, what: str | None, last: Any
) -> NoReturn:
    name = what or getattr(predicate, "__name__", repr(predicate))
    pytest.fail(f"timed out after {timeout}s waiting for {name} (last value: {last!r})")


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = EVENTUALLY_TIMEOUT,
    interval: float = 0.005,
    *,
    what: str | None = None,
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that.

    Fails the test after ``timeout`` seconds, naming ``what`` (or the predicate) and its last
    value. Use this instead of sleeping "long enough" for something to happen. The one polling
    helper of the suite; `eventually_sync` is the same for code that has no event loop.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if loop.time() >= deadline:
            _timed_out(predicate, timeout, what, last)
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], Any],
    timeout: float = EVENTUALLY_TIMEOUT,
    interval: float = 0.01,
    *,
    what: str | None = None,
) -> Any:
    """`eventually` for sync code (tests driving subprocesses, server start-up): it blocks."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            _timed_out(predicate, timeout, what, last)
        time.sleep(interval)


async def events_of(app: Conveyor, job_id: str) -> list[Event]:
    """Every logged event of one job, oldest first."""
    return [e async for e in app.events(since="0", follow=False, job_id=job_id)]


async def finished(app: Conveyor, job_id: str) -> Job | None:
    """The job if it is in a final state, else None (a predicate for `eventually`)."""
    job = await app.get(job_id)
    return job if job.status.is_final else None
