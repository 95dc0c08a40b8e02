"""The suite's own guards (tests/guards.py), run on small test files in a pytest subprocess:
under CI=true a skip fails and a narrowed run is refused; always, an ERROR log or an exception
the event loop did not handle fails the test unless the test allows it; worker processes'
ERROR records are found in their output."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import BACKENDS

ROOT = Path(__file__).resolve().parents[2]

INNER = """
import asyncio
import logging

import pytest

log = logging.getLogger("conveyor.worker")


def test_skipped():
    pytest.skip("no server here")


def test_logs_an_error():
    log.error("heartbeat crashed")


@pytest.mark.allow_errors(r"heartbeat crashed")
def test_allows_the_error():
    log.error("heartbeat crashed")


def test_warnings_are_fine():
    log.warning("slow disk")
    logging.getLogger("someone.else").error("not ours")


async def test_drops_a_failed_task():
    async def crash():
        raise RuntimeError("the heartbeat died")

    task = asyncio.get_running_loop().create_task(crash())
    await asyncio.sleep(0.01)
    del task


async def test_leaves_a_failed_task_in_a_cycle():
    async def crash():
        raise RuntimeError("found by the collector")

    cycle = {"task": asyncio.get_running_loop().create_task(crash())}
    cycle["self"] = cycle
    await asyncio.sleep(0.01)


async def test_a_callback_raises():
    asyncio.get_running_loop().call_soon(lambda: 1 / 0)
    await asyncio.sleep(0.01)


def test_fails_and_logs():
    log.error("the cause")
    assert False, "a timeout, say"
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # The inner run loads the plugin from this repository, with the caller's PYTHONPATH after it
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.delenv("CONVEYOR_TEST_BACKENDS", raising=False)
    # Only the plugins the inner suite uses: the installed ones that load themselves (hypothesis,
    # schemathesis) took ~3 s of each inner run's start (and of each xdist worker's)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "addopts = -p pytest_asyncio.plugin -p xdist.plugin\n"
    )
    pytester.makepyfile(test_inner=INNER)
    return pytester


#: A verbose outcome line, serial ("test_inner.py::name PASSED") or from an xdist worker
#: ("[gw1] [ 12%] PASSED test_inner.py::name").
_OUTCOME_LINE = re.compile(
    r"^test_inner\.py::(?P<a>\w+) (?P<wa>PASSED|FAILED|SKIPPED|ERROR)\b"
    r"|^\[gw\d+\] \[ *\d+%\] (?P<wb>PASSED|FAILED|SKIPPED|ERROR) test_inner\.py::(?P<b>\w+)"
)


def _outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Each inner test's outcomes, in the order reported (P, F, S, E)."""
    out: dict[str, str] = {}
    for line in result.outlines:
        m = _OUTCOME_LINE.match(line)
        if m:
            name, word = m["a"] or m["b"], m["wa"] or m["wb"]
            out[name] = out.get(name, "") + word[0]
    return out


#: The inner run serial, and spread over two pytest-xdist workers as `make test` runs the suite:
#: the guards must hold in each worker process.
XDIST = pytest.mark.parametrize("spread", [[], ["-n", "2"]], ids=["serial", "xdist"])


@XDIST
def test_errors_out_of_sight_fail_the_test_and_skips_fail_in_ci(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, spread: list[str]
) -> None:
    # Given CI=true
    monkeypatch.setenv("CI", "true")
    # When the inner tests run (on two xdist workers, for the xdist case)
    result = inner.runpytest_subprocess(
        "-p", "tests.guards", "-v", "-p", "no:cacheprovider", *spread
    )
    if spread:
        assert "[gw0]" in result.stdout.str() and "[gw1]" in result.stdout.str()
    # Then the skip failed, and so did each error nobody allowed (a task freed only by the
    # garbage collector is reported at teardown)
    assert _outcomes(result) == {
        "test_skipped": "F",
        "test_logs_an_error": "F",
        "test_allows_the_error": "P",
        "test_warnings_are_fine": "P",
        "test_drops_a_failed_task": "F",
        "test_leaves_a_failed_task_in_a_cycle": "PE",
        "test_a_callback_raises": "F",
        "test_fails_and_logs": "F",
    }, result.stdout.str()
    text = result.stdout.str()
    assert "CI=true: skipped tests fail the run. Skipped: no server here" in text
    assert "log conveyor.worker ERROR: heartbeat crashed" in text
    assert "Task exception was never retrieved" in text and "the heartbeat died" in text
    assert "found by the collector" in text
    assert "ZeroDivisionError" in text
    # And a failing test keeps its own failure, with the errors beside it
    assert "a timeout, say" in text and "conveyor errors" in text


def test_without_ci_a_skip_is_a_skip(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CI", raising=False)
    result = inner.runpytest_subprocess(
        "-p", "tests.guards", "-v", "-p", "no:cacheprovider", "-k", "skipped or allows"
    )
    assert _outcomes(result) == {"test_skipped": "S", "test_allows_the_error": "P"}


@pytest.mark.parametrize(
    "args",
    [
        ["-k", "logs"],
        ["-m", "not slow"],
        ["--deselect", "test_inner.py::test_skipped"],
        ["--ignore", "test_inner.py"],
        ["test_inner.py::test_skipped"],
        ["-n", "2", "-k", "logs"],
    ],
)
def test_ci_refuses_to_run_less_than_the_suite(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest_subprocess("-p", "tests.guards", "-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "CI=true runs the whole suite" in result.stderr.str()


def test_a_module_skipped_at_collection_fails_in_ci(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given CI=true and a module that skips itself as it is imported
    monkeypatch.setenv("CI", "true")
    inner.makepyfile(
        test_inner="import pytest\n\npytest.skip('no driver here', allow_module_level=True)\n"
    )
    # When the suite runs on two xdist workers, as `make test` runs it (the serial run takes the
    # same hook)
    result = inner.runpytest_subprocess("-p", "tests.guards", "-p", "no:cacheprovider", "-n", "2")
    # Then the run fails on that skip, reported by the worker that collected it
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # (without CI=true: no tests collected)
    assert "CI=true: skipped tests fail the run. Skipped: no driver here" in result.stdout.str()


def test_ci_refuses_backends_that_drop_one(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given CI=true and CONVEYOR_TEST_BACKENDS without redis-cluster (and postgres), with the
    # suite's conftest
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("CONVEYOR_TEST_BACKENDS", "sqlite,redis")
    # When the suite runs on two xdist workers, as `make test` runs it
    result = inner.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider", "-n", "2")
    # Then nothing runs: the run is refused, naming the dropped backend
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    dropped = [b for b in BACKENDS if b not in ("sqlite", "redis")]
    assert f"CONVEYOR_TEST_BACKENDS drops {dropped}" in result.stderr.str()


def test_worker_process_output_is_scanned_for_error_records(tmp_path: Path) -> None:
    # Given the output of a worker process, in both log formats the tests' workers use
    from tests.workers import WorkerProcess

    log = tmp_path / "worker.log"
    log.write_text(
        "2026-01-02 10:00:00,001 INFO conveyor.cli: started\n"
        "2026-01-02 10:00:00,002 ERROR conveyor.worker: heartbeat failed\n"
        "Traceback (most recent call last):\n"
        "RuntimeError: boom\n"
        "2026-01-02 10:00:00,003 WARNING conveyor.worker: job x failed: nope\n"
        "2026-01-02 10:00:00,004 4242 asyncio ERROR Task exception was never retrieved\n"
        "progress line from a handler mentioning ERROR\n"
    )
    proc = WorkerProcess(None, log)  # type: ignore[arg-type]
    # Then each ERROR record is found with its traceback, and nothing else
    assert proc.error_lines() == [
        "2026-01-02 10:00:00,002 ERROR conveyor.worker: heartbeat failed\n"
        "Traceback (most recent call last):\nRuntimeError: boom",
        "2026-01-02 10:00:00,004 4242 asyncio ERROR Task exception was never retrieved\n"
        "progress line from a handler mentioning ERROR",
    ]


def test_free_ports_are_never_handed_out_twice() -> None:
    # Given many ports asked for in a row, none of them bound yet (a test picks the ports of
    # several servers before any of them starts)
    from tests.servers import free_port

    ports = [free_port() for _ in range(2000)]
    # Then no two are the same (Linux hands a just-released port out again: a worker's metrics
    # port was also given to the exporter started after it, which bound it first)
    assert len(set(ports)) == len(ports)
