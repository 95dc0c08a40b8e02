"""A green suite that can be trusted: a pytest plugin (loaded by ``tests/conftest.py``).

Under ``CI=true``:

- a skipped test fails the run (so does a module skipped at collection): a skip in CI hides a
  backend or a check that did not run. There is no allow-list; fix the environment instead.
- options that run less than the whole suite are refused before anything runs: ``-k``, ``-m``,
  ``--deselect``, ``--ignore``, ``--ignore-glob``, ``--last-failed`` and test paths narrower than
  the suite (``PYTEST_ARGS`` reaches pytest through ``make test``). ``tests/conftest.py``
  refuses a ``CONVEYOR_TEST_BACKENDS`` that drops a backend.

Always, for every test (the error watch):

- an ERROR (or CRITICAL) log record of a ``conveyor`` logger fails the test, and so does one of
  the ``asyncio`` logger (the default exception handler of any loop, e.g. the sync facade's);
- an exception no one handled on the test's event loop fails it: a task whose exception was never
  retrieved, a callback that raised, a task destroyed while pending. Each test loop gets a
  handler that records them; the garbage is collected at teardown so that a task dropped by the
  test is reported by that test, not by a later one;
- worker processes started through ``tests/workers.py`` report the ERROR lines of their output.

Today a crashed heartbeat shows up as a timeout, or not at all: with the watch it fails the test
that crashed it, with its traceback. A test that expects such errors says so, with the patterns
(regular expressions, searched in the logger name, message and exception) it expects:

    @pytest.mark.allow_errors(r"backend call failed")
    async def test_workers_ride_out_a_redis_restart(...): ...

Errors found after the test body passed fail the test; found during teardown, they are reported
as an error of the teardown. Failing tests keep their own failure and get the errors as a
"conveyor errors" section of their report.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import threading
import traceback
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import IN_CI

WATCHED_LOGGERS = ("conveyor", "asyncio")

# -- CI=true: nothing skipped, nothing deselected ------------------------------------------------


def _narrowing_options(config: pytest.Config) -> list[str]:
    """The command-line choices that would run less than the whole suite."""
    opt = config.option
    found = []
    if getattr(opt, "keyword", ""):
        found.append(f"-k {opt.keyword!r}")
    if getattr(opt, "markexpr", ""):
        found.append(f"-m {opt.markexpr!r}")
    for name, flag in (("deselect", "--deselect"), ("ignore", "--ignore"),
                       ("ignore_glob", "--ignore-glob")):  # fmt: skip
        for value in getattr(opt, name, None) or []:
            found.append(f"{flag} {value}")
    if getattr(opt, "lf", False):
        found.append("--last-failed")
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        whole = {config.rootpath.resolve(), (config.rootpath / "tests").resolve()}
        for arg in config.args:
            path = Path(arg.split("::")[0])
            path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
            if "::" in arg or path.resolve() not in whole:
                found.append(arg)
    return found


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_errors(*patterns): ERROR logs and loop exceptions matching one of these regular "
        "expressions do not fail the test (tests/guards.py)",
    )
    if IN_CI:
        narrowing = _narrowing_options(config)
        if narrowing:
            raise pytest.UsageError(
                f"CI=true runs the whole suite, but these arguments select less of it: "
                f"{', '.join(narrowing)}. Remove them from PYTEST_ARGS (or unset CI to run a "
                f"part of the suite locally)."
            )
    _install_log_catcher()


def pytest_unconfigure(config: pytest.Config) -> None:
    _remove_log_catcher()


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, line, reason = longrepr
        return f"{reason} ({path}:{line})"
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    report.longrepr = (
        f"CI=true: skipped tests fail the run. {_skip_reason(report)}\n"
        f"A skip in CI hides a check that did not run: install what the test needs (.ci/run) "
        f"or remove the skip."
    )
    report.outcome = "failed"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if IN_CI and report.skipped:
        _fail_skip(report)
    return report


# -- the error watch ------------------------------------------------------------------------------


class ErrorWatch:
    """What went wrong out of sight during one test, and the patterns it allows."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = [re.compile(p) for p in allowed]
        self._lock = threading.Lock()
        self._seen: list[str] = []
        self._reported = 0

    def add(self, problem: str) -> None:
        if any(p.search(problem) for p in self.allowed):
            return
        with self._lock:
            self._seen.append(problem)

    def take_new(self) -> list[str]:
        """The problems not handed out yet."""
        with self._lock:
            new = self._seen[self._reported :]
            self._reported = len(self._seen)
        return new


_current: ErrorWatch | None = None


def report_problem(problem: str) -> None:
    """Record ``problem`` against the running test (no-op between tests)."""
    watch = _current
    if watch is not None:
        watch.add(problem)


def _message(problems: list[str]) -> str:
    first = problems[0].splitlines()[0]
    shown = "\n\n".join(p if len(p) < 4000 else p[:4000] + "\n[...]" for p in problems[:10])
    more = f"\n\n(and {len(problems) - 10} more)" if len(problems) > 10 else ""
    return (
        f"{len(problems)} unexpected error(s) out of sight: {first}\n\n"
        f"ERROR logs, exceptions nobody handled on the event loop, and ERROR lines of worker "
        f"processes fail the test. Fix the cause, or, if the test provokes them on purpose, "
        f"mark it @pytest.mark.allow_errors(<regex>) (tests/guards.py).\n\n{shown}{more}"
    )


class _LogCatcher(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"log {record.name} {record.levelname}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            elif record.exc_text:
                text += "\n" + record.exc_text
        except Exception:  # a bad format string must not break the code that logs
            text = f"log {record.name} {record.levelname}: {record.msg!r} % {record.args!r}"
        report_problem(text)


_catcher = _LogCatcher(level=logging.ERROR)


def _install_log_catcher() -> None:
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(_catcher)


def _remove_log_catcher() -> None:
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).removeHandler(_catcher)


def _on_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    text = f"event loop: {context.get('message', 'unhandled exception')}"
    for key in ("task", "future", "handle"):
        if key in context:
            text += f"\n  {key}: {context[key]!r}"
    exc = context.get("exception")
    if exc is not None:
        text += "\n" + "".join(traceback.format_exception(exc)).rstrip()
    report_problem(text)


def _watched_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_on_loop_exception)
    return loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every test's event loop records what nobody handled (pytest-asyncio >= 1.4)."""
    return {"asyncio": _watched_loop}


@pytest.fixture(autouse=True)
def _error_watch(request: pytest.FixtureRequest) -> Iterator[ErrorWatch]:
    """Installed first, torn down last: it sees the other fixtures' teardown too."""
    global _current
    allowed = [p for m in request.node.iter_markers("allow_errors") for p in m.args]
    watch = _current = ErrorWatch(allowed)
    try:
        yield watch
        # A task whose exception nobody retrieved reports it when it is collected: collect now,
        # so this test reports it. Freezing the survivors keeps the next collection small.
        gc.collect()
        gc.freeze()
    finally:
        _current = None
    problems = watch.take_new()
    if problems:
        pytest.fail(_message(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)
    watch = _current
    if report.when == "call" and watch is not None:
        problems = watch.take_new()
        if problems and report.passed:
            report.outcome = "failed"
            report.longrepr = _message(problems)
        elif problems:  # the test's own failure comes first; the errors may explain it
            report.sections.append(("conveyor errors", _message(problems)))
    return report
